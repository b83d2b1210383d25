"""What augmentation costs: each op's share of a training step, and the batched pipeline against
torchvision's transforms.v2 applied per image in a DataLoader with the same ops.

    python benchmarks/augment_ops.py [--policy byol_small] [--dataset cifar10_mini] [--rounds 5]

prints one JSON object.

- shares: a step of the real Trainer (augment both views, forward, backward, optimiser, EMA) at the
  main job's settings, and each op of the policy's two views timed alone on the same batch (the
  crop with its flip); share = op time / step time. Rounds alternate step and ops; medians.
- pipeline: images/s producing both views of every image: our augment() on whole batches, against
  a torch DataLoader (--workers processes) whose dataset applies v2.Compose per image with the same
  ops and parameters (RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale,
  GaussianBlur, RandomSolarize, RandomEqualize, RandomErasing, each as RandomApply with its p).
  Rounds alternate the two sides; the ratio is of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trainer import TrainConfig, Trainer  # noqa: E402
from trainer.augment import OPS as BATCHED  # noqa: E402
from trainer.augment import augment, crop_and_flip  # noqa: E402
from trainer.policies import ViewParams  # noqa: E402

MAIN_JOB = dict(dataset="cifar10_mini", backbone="small_cnn_half", image_size=16, batch_size=64, projector_hidden=256,
                projector_out=64, optimizer="lars", base_lr=6.0, knn_bank_size=1000, knn_queries=200, knn_k=20)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def op_timers(trainer: Trainer, batch: torch.Tensor) -> dict[str, callable]:
    """Each op of both views alone, on the float batch it would see (ops after the crop: on a crop)."""
    size, gen = trainer.config.image_size, trainer.gen
    x = batch.float().div(255.0)
    timers = {}
    for view_name, view in zip(("T", "T'"), trainer.views):
        if view.ops and view.ops[0] == "crop":
            timers[f"{view_name} crop+flip"] = lambda v=view: crop_and_flip(x, v, size, gen)
        cropped = crop_and_flip(x, view, size, gen).clamp(0, 1)
        for name in view.ops:
            if name in BATCHED and BATCHED[name][1](view) and not (name == "flip" and view.ops[0] == "crop"):
                timers[f"{view_name} {name}"] = lambda v=view, op=BATCHED[name][0]: op(cropped, v, gen)
    return timers


def shares(config: TrainConfig, rounds: int, repeats: int) -> dict:
    trainer = Trainer(config)
    n = trainer.batch_size
    batch = trainer.data.train_images[:n]
    warmup = trainer.steps_per_epoch * trainer.config.warmup_epochs

    def step():
        trainer.train_step(batch, int(warmup))

    timers = op_timers(trainer, batch)
    for fn in (step, *timers.values()):  # warm up
        fn()
    step_times, op_times = [], {k: [] for k in timers}
    for _ in range(rounds):
        step_times.append(median_seconds(step, repeats))
        for k, fn in timers.items():
            op_times[k].append(median_seconds(fn, repeats))
    step_s = statistics.median(step_times)
    both_views = (lambda: [augment(batch, v, config.image_size, trainer.gen, trainer.mean, trainer.std)
                           for v in trainer.views])
    aug_s = median_seconds(both_views, repeats * rounds)
    return {"step_ms": round(step_s * 1e3, 3), "augment_both_views_ms": round(aug_s * 1e3, 3),
            "augment_share": round(aug_s / step_s, 4),
            "ops": {k: {"ms": round(statistics.median(v) * 1e3, 3), "share": round(statistics.median(v) / step_s, 4)}
                    for k, v in op_times.items()}}


def v2_view(p: ViewParams, size: int) -> v2.Compose:
    """The same view as torchvision transforms, in the view's order, on a float CHW tensor in [0, 1]."""
    parts = []
    for name in p.ops:
        if name == "crop":
            parts.append(v2.RandomResizedCrop(size, scale=(p.crop_min_area, p.crop_max_area), ratio=p.crop_ratio,
                                              antialias=True))
        elif name == "flip":
            parts.append(v2.RandomHorizontalFlip(p.flip_p))
        elif name == "color_jitter" and p.jitter_p > 0:
            b, c, s, h = p.jitter
            parts.append(v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=p.jitter_p))
        elif name == "grayscale" and p.grayscale_p > 0:
            parts.append(v2.RandomGrayscale(p.grayscale_p))
        elif name == "blur" and p.blur_p > 0:
            sigma = (p.blur_sigma[0] * size / 224, p.blur_sigma[1] * size / 224)
            parts.append(v2.RandomApply([v2.GaussianBlur(2 * max(1, round(3 * sigma[1])) + 1, sigma)], p=p.blur_p))
        elif name == "solarize" and p.solarize_p > 0:
            parts.append(v2.RandomSolarize(p.solarize_threshold, p=p.solarize_p))
        elif name == "equalize" and p.equalize_p > 0:
            parts.append(v2.RandomEqualize(p=p.equalize_p))
        elif name == "erase" and p.erase_p > 0:
            parts.append(v2.RandomErasing(p.erase_p, scale=p.erase_scale, ratio=p.erase_ratio, value=p.erase_value))
    return v2.Compose(parts)


class TwoViews(Dataset):
    def __init__(self, images: torch.Tensor, views: tuple[v2.Compose, v2.Compose]):
        self.images, self.views = images, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i].float().div(255.0)
        return self.views[0](x), self.views[1](x)


def pipeline(images: torch.Tensor, views: tuple[ViewParams, ViewParams], size: int, batch: int, workers: int,
             rounds: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)

    def ours():
        for i in range(0, len(images), batch):
            for v in views:
                augment(images[i:i + batch], v, size, gen, zero, one)

    loader = DataLoader(TwoViews(images, (v2_view(views[0], size), v2_view(views[1], size))), batch_size=batch,
                        num_workers=workers, persistent_workers=workers > 0)

    def theirs():
        for _ in loader:
            pass

    ours(), theirs()  # warm up (and start the workers)
    a, b = [], []
    for _ in range(rounds):
        a.append(median_seconds(ours, 1))
        b.append(median_seconds(theirs, 1))
    ours_ips, theirs_ips = len(images) / statistics.median(a), len(images) / statistics.median(b)
    return {"images": len(images), "batch": batch, "workers": workers,
            "byol_sweep_images_per_s": round(ours_ips, 1), "torchvision_v2_images_per_s": round(theirs_ips, 1),
            "ratio": round(ours_ips / theirs_ips, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="byol_small")
    parser.add_argument("--extra-ops", action="store_true", default=True,
                        help="add equalize (p 0.2) and erase (p 0.5) to T' so every op is measured (default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    policies = ""
    policy = args.policy
    if args.extra_ops:
        policy = f"{args.policy}_all_ops"
        policies = json.dumps({policy: {"from": args.policy, "T": {"blur": {"p": 0.5}},
                                        "T_prime": {"equalize": {"p": 0.2}, "erase": {"p": 0.5}}}})
    config = TrainConfig(**MAIN_JOB, policy=policy, policies=policies, epochs=1, linear_probe=False)
    out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "load_1min": os.getloadavg()[0]},
           "config": {k: v for k, v in config.to_dict().items() if k in (*MAIN_JOB, "policy")}}
    out["shares"] = shares(config, args.rounds, args.repeats)
    trainer = Trainer(replace(config))
    out["pipeline"] = pipeline(trainer.data.train_images[:args.images].cpu(), trainer.views, config.image_size,
                               config.batch_size, args.workers, args.rounds)
    out["machine"]["load_1min_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
