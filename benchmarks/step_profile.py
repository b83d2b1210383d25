"""Where a training step's time goes: the core's augmentation, lightly's PIL transform, and a
torch.profiler breakdown of Trainer.train_step.

    python benchmarks/step_profile.py --backbone small_cnn --data digits

prints one JSON object (milliseconds per batch, and each operator group's share of the step).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from throughput import PILImages, dataset_name, lightly_view_kwargs

from trainer import TrainConfig, Trainer
from trainer.config import BACKBONES

GROUPS = {  # profiler operator -> group; children are not counted twice
    "aten::mkldnn_convolution": "convolution", "aten::convolution_backward": "convolution",
    "aten::addmm": "linear", "aten::mm": "linear",
    "aten::native_batch_norm": "batch_norm", "aten::native_batch_norm_backward": "batch_norm",
    "Optimizer.step#LARS.step": "optimizer", "aten::_foreach_lerp_": "ema",
}


def ms_per_call(fn, calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="small_cnn", choices=BACKBONES)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    trainer = Trainer(TrainConfig(dataset=dataset_name(args.data), backbone=args.backbone,
                                  batch_size=args.batch_size, epochs=1, linear_probe=False, device="cpu"))
    batch = trainer.data.train_images[: args.batch_size]
    report = {"backbone": args.backbone, "data": args.data, "batch_size": args.batch_size,
              "torch_threads": torch.get_num_threads()}
    report["core_augment_ms"] = round(ms_per_call(
        lambda: [trainer._view(batch, view) for view in trainer.views], 10), 1)
    try:
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
    except ImportError:
        report["lightly_transform_ms"] = None
    else:
        mean, std = trainer.mean.flatten().tolist(), trainer.std.flatten().tolist()
        views = [kind(**lightly_view_kwargs(p, trainer.config.image_size, mean, std))
                 for kind, p in zip((BYOLView1Transform, BYOLView2Transform), trainer.views)]
        images = PILImages(batch, BYOLTransform(*views))
        report["lightly_transform_ms"] = round(ms_per_call(lambda: [images[i] for i in range(len(images))], 3), 1)

    for _ in range(2):
        trainer.train_step(batch, 0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            trainer.train_step(batch, 0)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        group = GROUPS.get(e.key)
        if group:
            shares[group] = shares.get(group, 0.0) + (e.cpu_time_total if group == "optimizer" else e.self_cpu_time_total)
    report["step_ms"] = round(total / args.steps / 1000, 1)
    report["share_of_step"] = {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
