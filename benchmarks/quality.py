"""What the BYOL core learns, beside lightly's BYOL recipe, on the same backbone, images and epochs.

    OMP_NUM_THREADS=1 python benchmarks/quality.py --per-class 200 --epochs 5

Images: a stratified subset of the CIFAR-10 JPEG tree (the first --per-class training images of
each class, by file name, and the first --test-per-class test images of each class as kNN
queries), decoded at 32 px. The tree is --data (default /tmp/cifar10-jpeg, where CI unpacks it),
else ../shared/data/cifar10-jpeg.tar.gz unpacked to a temporary folder. Prints one JSON object
with the weighted-kNN top-1 (k 200, T 0.1, the Trainer's kNN; bank = every training image of the
subset, queries = the test subset) of:

- random_init: the Trainer's encoder before any step (and raw_pixels: normalised pixels);
- core_defaults: this core with the TrainConfig defaults a user gets for 32-px images (LARS, base
  lr 0.2, tau_base 0.996, 4096->256 heads) and --core-policy (default no_blur; `byol_small`, the
  32-px policy, once trainer/augment.py has it);
- core_lightly_recipe: this core with lightly's CIFAR-10 BYOL recipe (lightly's
  benchmarks/imagenet/cifar10 setup: SGD lr 0.06 * batch / 128 = 0.12 at 256, momentum 0.9, weight
  decay 5e-4, no warmup, tau 0.99 -> 1 on a cosine, no blur, 1024->256 heads);
- lightly: lightly itself with that recipe (BYOLTransform without blur in a DataLoader,
  BYOLProjectionHead / BYOLPredictionHead, update_momentum, NegativeCosineSimilarity, torch SGD,
  per-epoch CosineAnnealingLR), normalised with the same mean and std, its backbone evaluated by
  the same kNN.

All on small_cnn, --batch-size images a step, --epochs epochs, seed --seed. One seed: read the
differences against `noise_95`, the half-width of a 95% binomial interval on the queries.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import TrainConfig, Trainer  # noqa: E402
from trainer import data as datasets  # noqa: E402
from trainer.augment import POLICIES  # noqa: E402
from trainer.evaluation import extract_features, knn_accuracy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mainjob_candidates import wilson_half_width  # noqa: E402
from throughput import LightlyBYOL, PILImages, lightly_version  # noqa: E402

DEFAULT_TREE = Path("/tmp/cifar10-jpeg")
TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"


def cifar_tree(path: str | None) -> Path:
    if path:
        return Path(path)
    if (DEFAULT_TREE / "train").is_dir():
        return DEFAULT_TREE
    if not TARBALL.exists():
        sys.exit(f"no CIFAR-10 tree at {DEFAULT_TREE} and no {TARBALL.resolve()}; pass --data")
    folder = Path(tempfile.mkdtemp(prefix="cifar10-jpeg-"))
    with tarfile.open(TARBALL) as tar:
        tar.extractall(folder, filter="data")
    return folder


def subset(root: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first per_class images of each class folder (sorted by name), decoded at 32 px."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for i, c in enumerate(classes):
        chosen = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in datasets.IMAGE_SUFFIXES)[:per_class]
        files += chosen
        labels += [i] * len(chosen)
    return datasets.decode_files(files, 32), torch.tensor(labels, dtype=torch.int64), classes


def knn_of(encoder, trainer: Trainer) -> float:
    d, cfg = trainer.data, trainer.config
    bank = extract_features(encoder, d.train_images[trainer.bank_idx], trainer.eval_view)
    queries = extract_features(encoder, d.eval_images[trainer.query_idx], trainer.eval_view)
    return float(knn_accuracy(bank, d.train_labels[trainer.bank_idx], queries, d.eval_labels[trainer.query_idx],
                              cfg.knn_k, cfg.knn_temperature, len(d.classes)))


def raw_pixels(trainer: Trainer) -> float:
    flat = lambda x: torch.nn.functional.normalize(trainer.eval_view(x).float().flatten(1), dim=1)  # noqa: E731
    d, cfg = trainer.data, trainer.config
    return float(knn_accuracy(flat(d.train_images[trainer.bank_idx]), d.train_labels[trainer.bank_idx],
                              flat(d.eval_images[trainer.query_idx]), d.eval_labels[trainer.query_idx],
                              cfg.knn_k, cfg.knn_temperature, len(d.classes)))


def train_core(config: TrainConfig, data: datasets.ImageData) -> dict:
    trainer = Trainer(config, data=data)
    start = time.perf_counter()
    curve = [round(r.knn_acc, 4) for r in trainer.fit()]
    return {"knn_acc": curve[-1], "curve": curve, "seconds": round(time.perf_counter() - start, 1)}


def train_lightly(config: TrainConfig, data: datasets.ImageData, workers: int) -> dict:
    """lightly's CIFAR-10 BYOL recipe (tau, lr and weight decay from config), kNN after each epoch."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.utils import update_momentum
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
    from lightly.utils.scheduler import cosine_schedule

    evaluator = Trainer(config, data=data)  # its bank, queries, eval view and normalisation
    normalize = {"mean": evaluator.mean.flatten().tolist(), "std": evaluator.std.flatten().tolist()}
    transform = BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0, normalize=normalize),
        view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0, normalize=normalize),
    )
    torch.manual_seed(config.seed)
    model = LightlyBYOL(config.backbone, config.projector_hidden, config.projector_out, 32)
    model.train()
    loader = torch.utils.data.DataLoader(PILImages(data.train_images, transform), batch_size=config.batch_size,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.base_lr * config.batch_size / 256,
                                momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    criterion = NegativeCosineSimilarity()
    total, step, curve = config.epochs * len(loader), 0, []
    start = time.perf_counter()
    for _ in range(config.epochs):
        for (x0, x1), _ in loader:
            m = cosine_schedule(step, total, config.tau_base, 1.0)
            update_momentum(model.backbone, model.backbone_momentum, m=m)
            update_momentum(model.projection_head, model.projection_head_momentum, m=m)
            p0, z0 = model(x0), model.forward_momentum(x0)
            p1, z1 = model(x1), model.forward_momentum(x1)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
        scheduler.step()
        curve.append(round(knn_of(model.backbone, evaluator), 4))
    return {"knn_acc": curve[-1], "curve": curve, "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help=f"CIFAR-10 ImageFolder tree with train/ and test/ (default {DEFAULT_TREE})")
    ap.add_argument("--per-class", type=int, default=500, help="training images per class")
    ap.add_argument("--test-per-class", type=int, default=100, help="kNN queries per class (test split)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--core-policy", default="byol_small" if "byol_small" in POLICIES else "no_blur",
                    choices=list(POLICIES), help="the policy of core_defaults")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers on the lightly side")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=("core_defaults", "core_lightly_recipe", "lightly"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = cifar_tree(args.data)
    xt, yt, classes = subset(root / "train", args.per_class)
    xe, ye, _ = subset(root / "test", args.test_per_class)
    data = datasets.ImageData(xt, yt, xe, ye, classes)

    common = dict(dataset="cifar10", backbone="small_cnn", image_size=32, batch_size=args.batch_size,
                  epochs=args.epochs, knn_bank_size=0, knn_queries=0, linear_probe=False, device="cpu",
                  seed=args.seed)
    defaults = TrainConfig(**common, policy=args.core_policy)
    recipe = TrainConfig(**common, policy="no_blur", optimizer="sgd", base_lr=0.12, weight_decay=5e-4,
                         momentum=0.9, warmup_epochs=0.0, tau_base=0.99, projector_hidden=1024, projector_out=256)
    baseline = Trainer(defaults, data=data)
    queries = len(baseline.query_idx)
    result = {
        "data": f"CIFAR-10 subset: {len(xt)} training images ({args.per_class} a class), {queries} test queries",
        "backbone": "small_cnn", "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
        "threads": torch.get_num_threads(), "lightly_version": lightly_version(),
        "raw_pixels": round(raw_pixels(baseline), 4),
        "random_init": round(baseline.evaluate()[0], 4),
    }
    result["noise_95"] = round(wilson_half_width(result["random_init"], queries), 4)
    if "core_defaults" not in args.skip:
        result["core_defaults"] = {"policy": args.core_policy, **train_core(defaults, data)}
    if "core_lightly_recipe" not in args.skip:
        result["core_lightly_recipe"] = train_core(recipe, data)
    if "lightly" not in args.skip and lightly_version() is not None:
        result["lightly"] = train_lightly(recipe, data, args.workers)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
