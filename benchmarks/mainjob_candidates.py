"""Candidates for the quick sweep's embedded default: does BYOL learn anything worth reporting?

    OMP_NUM_THREADS=1 python benchmarks/mainjob_candidates.py --candidate shapes32 --seeds 0 1

For each candidate (dataset, image size, backbone, epochs, policy, batch, lr) prints one JSON
line: the kNN accuracy of raw pixels, of the untrained encoder and of the untrained encoder with
its BatchNorm running statistics calibrated on the training images (trainer.baselines: same bank,
same queries, same weighted kNN as the Trainer), then of BYOL trained at --tau (default 0.99) and
at tau_base 1.0 (a fixed random target), per seed, with the seconds per epoch (training + kNN
evaluation) and the half-width of a 95% binomial (Wilson) interval on the number of kNN queries.
With `--set linear_probe=true`, the linear probe too: `<baseline>_probe` and each run's `probe`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import TrainConfig, Trainer, generated  # noqa: E402
from trainer import data as datasets  # noqa: E402
from trainer.baselines import baseline_accuracies  # noqa: E402

# the quick sweep's fixed settings (search_spaces/quick.yaml's base), evaluated on everything
QUICK = dict(backbone="small_cnn", projector_hidden=512, projector_out=128, optimizer="lars",
             warmup_epochs=1, knn_bank_size=0, knn_queries=0, knn_k=20, linear_probe=False, device="cpu")

# name -> (TrainConfig settings, data variant); epochs 8 and policy no_blur (the 32-px stand-in) throughout
LARS_128 = dict(epochs=8, batch_size=128, base_lr=1.0, policy="no_blur")
LARS_64 = dict(epochs=8, batch_size=64, base_lr=0.5, policy="no_blur")
CANDIDATES = {
    "digits32": (dict(dataset="digits", image_size=32, **LARS_128), {}),
    "shapes32": (dict(dataset="shapes", image_size=32, **LARS_128), {"colours": "rgb"}),
    "shapes16_gray": (dict(dataset="shapes", image_size=16, **LARS_64), {"colours": "gray"}),
    "shapes16_fixed": (dict(dataset="shapes", image_size=16, **LARS_64), {"colours": "fixed"}),
    "canvas16_x3": (dict(dataset="digits_canvas", image_size=16, **LARS_64),
                    {"copies": 3, "scale": (0.45, 0.8), "rotation": 15.0}),
    "canvas32_wide": (dict(dataset="digits_canvas", image_size=32, **LARS_128),
                      {"copies": 1, "scale": (0.45, 0.8), "rotation": 15.0}),
    "canvas32": (dict(dataset="digits_canvas", image_size=32, **LARS_128), {}),
    "cifar16": (dict(dataset="cifar10", image_size=16, **LARS_64), {}),
    # the shipped subset (trainer/cifar10_mini16.npz): val = 100 other training images a class
    "cifar_mini16": (dict(dataset="cifar10_mini", image_size=16, **LARS_64), {}),
}
CIFAR_TREE = Path("/tmp/cifar10-jpeg")


def cifar_subset(image_size: int, per_class: int, queries_per_class: int) -> datasets.ImageData:
    """A stratified CIFAR-10 subset (first files by name) from the JPEG tree, at image_size pixels."""
    def part(split: str, n: int):
        classes = sorted(d.name for d in (CIFAR_TREE / split).iterdir())
        files, labels = [], []
        for i, c in enumerate(classes):
            chosen = sorted((CIFAR_TREE / split / c).iterdir())[:n]
            files += chosen
            labels += [i] * len(chosen)
        x = datasets.decode_files(files, 32).float()
        if image_size != 32:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        return x.round().clamp(0, 255).to(torch.uint8), torch.tensor(labels), classes
    xt, yt, classes = part("train", per_class)
    xe, ye, _ = part("test", queries_per_class)
    return datasets.ImageData(xt, yt, xe, ye, classes)


def wilson_half_width(acc: float, n: int, z: float = 1.96) -> float:
    denom = 1 + z * z / n
    return z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / denom


def run(name: str, overrides: dict, seeds: list[int], taus: list[float], eval_split: str,
        per_class: int = 400) -> dict:
    settings = {**QUICK, **CANDIDATES[name][0], **overrides, "eval_split": eval_split}
    variant = CANDIDATES[name][1]
    cfg0 = TrainConfig.from_dict(settings)
    if cfg0.dataset == "cifar10":
        data = cifar_subset(cfg0.image_size, per_class, 100)
    elif cfg0.dataset == "shapes":
        data = generated.load_shapes(cfg0.image_size, eval_split, **variant)
    elif cfg0.dataset == "digits_canvas":
        data = generated.load_digits_canvas(cfg0.image_size, eval_split, **variant)
    else:
        data = datasets.load(cfg0.dataset, image_size=cfg0.image_size, eval_split=eval_split)
    base = baseline_accuracies(cfg0, data)
    n_queries = int(base.pop("queries"))
    base = {("untrained_bn_calibrated" if k == "untrained_bn" else k): round(v, 4) for k, v in base.items()}
    out = {"candidate": name, "settings": {k: v for k, v in settings.items() if k not in QUICK or k in overrides},
           "variant": variant, "train_images": len(data.train_images), "queries": n_queries, **base, "trained": {}}
    out["noise_95"] = round(wilson_half_width(max(out["raw_pixels"], out["untrained"]), n_queries), 4)
    for tau in taus:
        runs = []
        for seed in seeds:
            trainer = Trainer(TrainConfig.from_dict({**settings, "tau_base": tau, "seed": seed}), data=data)
            start = time.perf_counter()
            curve = []
            for r in trainer.fit():
                curve.append(round(r.knn_acc, 4))
                print(f"# {name} tau {tau} seed {seed} epoch {r.epoch}: knn {r.knn_acc:.3f} loss {r.loss:.3f} "
                      f"z_std {r.z_std:.3f} {r.epoch_s:.1f}s", file=sys.stderr, flush=True)
            runs.append({"seed": seed, "knn": curve[-1], "curve": curve,
                         "epoch_s": round((time.perf_counter() - start) / len(curve), 2),
                         **({"probe": round(r.linear_probe_acc, 4)} if r.linear_probe_acc is not None else {})})
        out["trained"][str(tau)] = {"mean": round(sum(r["knn"] for r in runs) / len(runs), 4), "runs": runs}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--tau", type=float, default=0.99, help="the tau_base compared with 1.0")
    ap.add_argument("--eval-split", default="val", choices=("val", "test"))
    ap.add_argument("--per-class", type=int, default=400, help="CIFAR-10 candidates: training images per class")
    ap.add_argument("--taus", nargs="+", type=float, help="instead of --tau and 1.0")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="override a TrainConfig field for every candidate (value parsed as JSON, else string)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    for name in args.candidate:
        print(json.dumps(run(name, overrides, args.seeds, args.taus or [args.tau, 1.0], args.eval_split, args.per_class)), flush=True)


if __name__ == "__main__":
    main()
