"""Host memory of 1, 2 and 4 concurrent trials on one node sharing a decoded ImageFolder tree.

    python benchmarks/data_memory.py                # 20,000 generated 96-px images, 10 classes

Each trial process builds a real Trainer on `imagefolder:<tree>` (the node's uint8 cache file is
mapped read-only, not copied), reads every image once (as an epoch does) and reports; the script
prints one JSON line per concurrency with the processes' summed PSS (proportional set size: a
page shared by k processes counts 1/k to each), split into anonymous memory (a private copy of
the data would be there) and file-backed memory (the mapped cache, shared), and how much of the
data each trial holds privately beyond a trial of 20 images.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRIAL = """
import sys, torch
torch.set_num_threads(1)
from trainer import TrainConfig, Trainer
config = TrainConfig(dataset="imagefolder:" + sys.argv[1], cache_dir=sys.argv[2], image_size=96, backbone="small_cnn",
                     projector_hidden=512, projector_out=128, knn_bank_size=1000, knn_queries=500, device="cpu")
trainer = Trainer(config)
total = 0
for part in (trainer.data.train_images, trainer.data.eval_images):
    for i in range(0, len(part), 1024):
        total += int(part[i : i + 1024].sum())  # every page read once, as an epoch reads them
print("ready", flush=True)
sys.stdin.read()
"""


def generate(root: Path, images: int, side: int = 96, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        c = i % classes
        phase = rng.uniform(0, 6.28, 3)
        img = 127.5 + 127.5 * np.sin(6.28 * (c + 1) * xx[..., None] * 0.5 + 6.28 * yy[..., None] * rng.uniform(0, 3) + phase)
        Image.fromarray(img.astype(np.uint8)).save(root / f"class{c}" / f"{i:05d}.jpg", quality=85)


def memory(pid: int) -> dict[str, float]:
    """A process's PSS, its anonymous part (private heap: where a copy of the data would live) and
    its file-backed part (the mapped cache, shared by the node's trials; libraries), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return {"pss": fields["Pss"] / 1024, "anon": fields["Pss_Anon"] / 1024, "file": fields["Pss_File"] / 1024}


def run(tree: Path | str, cache: Path, n: int) -> dict:
    procs = [subprocess.Popen([sys.executable, "-c", TRIAL, str(tree), str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
             for _ in range(n)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        each = [memory(p.pid) for p in procs]
        return {"trials": n, **{f"{k}_mb": round(sum(m[k] for m in each), 1) for k in ("pss", "anon", "file")}}
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--tree", help="an existing ImageFolder tree (default: generate one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-memory-"))
    tree = Path(args.tree) if args.tree else work / "tree"
    if not args.tree:
        start = time.perf_counter()
        generate(tree, args.images)
        print(json.dumps({"generated_images": args.images, "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    cache = work / "cache"
    run(tree, cache, 1)  # decode once: the node's cache file
    dataset_mb = sum(p.stat().st_size for p in cache.glob("*.pt")) / 2**20
    tiny = work / "tiny"
    generate(tiny, 20)
    base = run(tiny, cache, 1)["anon_mb"]  # the private memory of a trial whose data is 20 images
    print(json.dumps({"dataset_mb": round(dataset_mb, 1), "trial_without_data_anon_mb": base}), flush=True)
    for n in (1, 2, 4):
        r = run(tree, cache, n)
        private = r["anon_mb"] / n - base  # what each trial holds of the data privately (a copy would be all of it)
        print(json.dumps({**r, "private_data_per_trial_mb": round(private, 1),
                          "as_share_of_dataset": round(private / dataset_mb, 3)}), flush=True)


if __name__ == "__main__":
    main()
