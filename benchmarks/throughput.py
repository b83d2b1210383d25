"""Training throughput of the BYOL core, and of lightly's BYOL recipe on the same backbone and images.

    python benchmarks/throughput.py --backbone resnet18_cifar --data /tmp/cifar10-jpeg/train

prints one JSON object. `images_per_s` counts source images per second; each gives two views,
and a step is augmentation + forward + backward + optimiser step + EMA update. Warmup steps are
not timed; kNN evaluation is never part of it.

- byol_sweep: the real Trainer, stepped by `CoreSteps`, a copy of the body of
  Trainer.train_epoch (same order of operations, same single host sync at the end).
- lightly (only when the optional `lightly` package is installed): lightly's BYOLTransform in a
  torch DataLoader (--workers processes) over PIL images, BYOLProjectionHead/BYOLPredictionHead,
  update_momentum, NegativeCosineSimilarity and lightly's LARS (or SGD), on an encoder from
  trainer.models.build_encoder with the same projector sizes, batch size, precision and device.
  Its views use the core's view parameters (crop area, jitter, grayscale, blur, solarize, flip)
  and the core's normalisation statistics.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer import ConfigError, DataError, TrainConfig, Trainer
from trainer import data as datasets
from trainer.augment import ViewParams
from trainer.config import BACKBONES, FIXED_DATASETS, PRECISIONS
from trainer.models import build_encoder, feature_dim


def dataset_name(data: str) -> str:
    """--data to TrainConfig.dataset: a fixed name, imagefolder:<path>, or a bare folder path."""
    if data in FIXED_DATASETS or data.startswith("imagefolder:"):
        return data
    return "imagefolder:" + data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, finish, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls of step() after `warmup` untimed ones; finish() ends the timed run."""
    for _ in range(warmup):
        step()
    finish()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    finish()
    sync(device)
    return time.perf_counter() - start


def sync_checked(step):
    """step wrapped so that CUDA warns about any host synchronisation inside it."""
    def run() -> None:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return run


# -- byol-sweep ---------------------------------------------------------------------------------
class CoreSteps:
    """Trainer.train_epoch's loop: Trainer.train_step once per call, a new epoch order when one runs out."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        trainer.model.train()
        self.i = trainer.steps_per_epoch  # the first call draws an epoch order
        self.warmup = int(round(trainer.config.warmup_epochs * trainer.steps_per_epoch))
        self.loss_sum = torch.zeros((), device=trainer.device)
        self.z_std_sum = torch.zeros((), device=trainer.device)
        self.steps = 0

    def step(self) -> None:
        t = self.t
        if self.i == t.steps_per_epoch:
            self.order = torch.randperm(len(t.data.train_images), generator=t.gen, device=t.device)
            self.i = 0
        batch = t.data.train_images[self.order[self.i * t.batch_size : (self.i + 1) * t.batch_size]]
        loss, z_std, _, _ = t.train_step(batch, self.warmup)
        self.loss_sum += loss
        self.z_std_sum += z_std
        self.i += 1
        self.steps += 1

    def finish(self) -> float:
        """The epoch's one host sync, as in train_epoch: the mean loss so far."""
        return float(self.loss_sum) / max(1, self.steps)


# -- lightly ------------------------------------------------------------------------------------
class PILImages(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) tensors as PIL images, each passed through a transform; label 0."""

    def __init__(self, images: torch.Tensor, transform):
        from PIL import Image

        array = images.cpu().permute(0, 2, 3, 1).numpy()
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        self.images = [Image.fromarray(np.ascontiguousarray(a)) for a in array]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), 0


def lightly_images(dataset: str, train_images: torch.Tensor, transform) -> torch.utils.data.Dataset:
    """The trainer's training images for lightly: image files for an ImageFolder tree (decoded in
    the DataLoader workers, lightly's usual setup), otherwise the trainer's uint8 tensors as PIL."""
    if not dataset.startswith("imagefolder:"):
        return PILImages(train_images, transform)
    from torchvision.datasets import ImageFolder

    root = Path(dataset[len("imagefolder:"):]).expanduser()
    train_files = datasets.tree_split(root, "val")[0]  # the trainer's training files for eval_split val
    folder = ImageFolder(str(root / "train" if (root / "train").is_dir() else root), transform=transform)
    position = {Path(path): i for i, (path, _) in enumerate(folder.samples)}
    return torch.utils.data.Subset(folder, [position[f] for f in train_files])


def lightly_view_kwargs(p: ViewParams, size: int, mean: list[float], std: list[float]) -> dict:
    b, c, s, h = p.jitter
    return dict(
        input_size=size, min_scale=p.crop_min_area, hf_prob=p.flip_p,
        cj_prob=p.jitter_p, cj_strength=1.0, cj_bright=b, cj_contrast=c, cj_sat=s, cj_hue=h,
        random_gray_scale=p.grayscale_p, gaussian_blur=p.blur_p, sigmas=p.blur_sigma,
        solarization_prob=p.solarize_p, normalize={"mean": mean, "std": std},
    )


class LightlyBYOL(nn.Module):
    """lightly's BYOL example model, on a byol-sweep encoder."""

    def __init__(self, backbone: str, hidden: int, out: int, image_size: int):
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = build_encoder(backbone)
        dim = feature_dim(self.backbone, image_size)
        self.projection_head = BYOLProjectionHead(dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return self.prediction_head(z)

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1))
        return z.detach()


class LightlySteps:
    """lightly's BYOL recipe, one training step per call, on the trainer's backbone and images."""

    def __init__(self, args, trainer: Trainer, train_images: torch.Tensor):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.utils import get_weight_decay_parameters, update_momentum
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
        from lightly.utils.lars import LARS
        from lightly.utils.scheduler import cosine_schedule

        self.update_momentum, self.cosine_schedule = update_momentum, cosine_schedule
        cfg = trainer.config
        self.cfg, self.device, self.batch_size = cfg, trainer.device, trainer.batch_size
        self.total_steps, self.workers = trainer.total_steps, args.workers
        mean = trainer.mean.flatten().tolist()
        std = trainer.std.flatten().tolist()
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(**lightly_view_kwargs(trainer.views[0], cfg.image_size, mean, std)),
            view_2_transform=BYOLView2Transform(**lightly_view_kwargs(trainer.views[1], cfg.image_size, mean, std)),
        )
        self.images = lightly_images(cfg.dataset, train_images, transform)
        if len(self.images) != len(trainer.data.train_images):
            print(f"warning: lightly sees {len(self.images)} training images, byol_sweep "
                  f"{len(trainer.data.train_images)}", file=sys.stderr)

        torch.manual_seed(cfg.seed)
        self.model = LightlyBYOL(cfg.backbone, cfg.projector_hidden, cfg.projector_out, cfg.image_size).to(self.device)
        self.model.train()
        decay, no_decay = get_weight_decay_parameters(
            [self.model.backbone, self.model.projection_head, self.model.prediction_head])
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        if args.lightly_optimizer == "lars":  # lightly's LARS leaves weight-decay-0 groups unadapted
            self.optimizer = LARS(groups, lr=trainer.peak_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=trainer.peak_lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
        self.criterion = NegativeCosineSimilarity()
        self.amp_dtype = trainer.amp_dtype
        self.loss_sum = torch.zeros((), device=self.device)
        self.steps = 0
        self.loader = self.it = None

    def start(self) -> None:
        """New DataLoader workers (their start-up falls in the untimed warmup)."""
        self.loader = torch.utils.data.DataLoader(
            self.images, batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=self.workers,
            persistent_workers=self.workers > 0, pin_memory=self.device.type == "cuda",
        )
        self.it = iter(self.loader)

    def stop(self) -> None:
        """Shut the workers down, so that they take no CPU from the other side's measurement."""
        self.it = self.loader = None

    def next_batch(self):
        try:
            return next(self.it)
        except StopIteration:  # a new epoch (persistent workers are reused)
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> None:
        model, device = self.model, self.device
        (x0, x1), _ = self.next_batch()
        m = self.cosine_schedule(self.steps, self.total_steps, self.cfg.tau_base, 1.0)
        self.update_momentum(model.backbone, model.backbone_momentum, m=m)
        self.update_momentum(model.projection_head, model.projection_head_momentum, m=m)
        x0 = x0.to(device, non_blocking=True)
        x1 = x1.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            p0, z0 = model(x0), model.forward_momentum(x0)
            p1, z1 = model(x1), model.forward_momentum(x1)
            loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach().float()
        self.steps += 1

    def finish(self) -> float:
        return float(self.loss_sum) / max(1, self.steps)


def measure(side, warmup: int, steps: int, batch_size: int, device: torch.device) -> dict:
    """One round: warmup, then `steps` timed steps; images per second and seconds per step."""
    seconds = time_steps(side.step, side.finish, warmup, steps, device)
    loss = side.finish()
    if not math.isfinite(loss):
        print(f"warning: {type(side).__name__} loss is {loss} after {side.steps} steps", file=sys.stderr)
    return {"images_per_s": steps * batch_size / seconds, "step_s": seconds / steps}


def summary(rounds: list[dict], **extra) -> dict:
    """The best round (the least disturbed by other work on the machine) and every round's figure."""
    best = max(rounds, key=lambda r: r["images_per_s"])
    return {
        "images_per_s": round(best["images_per_s"], 2),
        "step_s": round(best["step_s"], 5),
        "rounds": [round(r["images_per_s"], 2) for r in rounds],
        **extra,
    }


def lightly_version() -> str | None:
    try:
        import lightly
    except ImportError:
        return None
    return getattr(lightly, "__version__", "unknown")


# -- command line -------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="small_cnn", choices=BACKBONES)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data", default="digits",
                    help="digits | cifar10 | cifar100 | stl10 | imagefolder:<path> | an ImageFolder path")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds, alternating the two sides; each reports its best round")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers on the lightly side")
    ap.add_argument("--hidden", type=int, default=4096, help="projector/predictor hidden width")
    ap.add_argument("--out", type=int, default=256, help="projection size")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="both sides (autocast); auto = bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the core's networks")
    ap.add_argument("--optimizer", default="lars", choices=("lars", "sgd", "adamw"), help="the core's optimiser")
    ap.add_argument("--lightly-optimizer", default="lars", choices=("lars", "sgd"),
                    help="lightly.utils.lars.LARS or torch SGD on the lightly side")
    ap.add_argument("--no-lightly", action="store_true", help="measure the core only")
    ap.add_argument("--sync-debug", action="store_true",
                    help="on CUDA, warn about every host sync inside a byol_sweep step (slows it down)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--data-root", default=TrainConfig.data_root)
    ap.add_argument("--cache-dir", default=TrainConfig.cache_dir, help="where decoded imagefolder trees are cached")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.workers < 0 or args.threads < 0:
        ap.error("--warmup, --workers and --threads must be at least 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = TrainConfig(
            dataset=dataset_name(args.data), data_root=args.data_root, cache_dir=args.cache_dir,
            backbone=args.backbone, batch_size=args.batch_size, projector_hidden=args.hidden,
            projector_out=args.out, optimizer=args.optimizer, epochs=1000, knn_bank_size=256,
            knn_queries=256, linear_probe=False, device=args.device, precision=args.precision,
            compile=args.compile, seed=args.seed,
        )
        data = datasets.load(config.dataset, data_root=config.data_root, download=False,
                             cache_dir=config.cache_dir, image_size=config.image_size, eval_split=config.eval_split)
        trainer = Trainer(config, data=data)
    except (ConfigError, DataError, ValueError) as err:
        print(f"throughput: {err}", file=sys.stderr)
        return 2

    with_lightly = lightly_version() is not None and not args.no_lightly
    core = CoreSteps(trainer)
    if args.sync_debug and trainer.device.type == "cuda":
        core.step = sync_checked(core.step)
    other = LightlySteps(args, trainer, data.train_images) if with_lightly else None
    core_rounds, lightly_rounds = [], []
    for _ in range(args.repeats):
        core_rounds.append(measure(core, args.warmup, args.steps, trainer.batch_size, trainer.device))
        if other is not None:
            other.start()
            lightly_rounds.append(measure(other, args.warmup, args.steps, trainer.batch_size, trainer.device))
            other.stop()

    result = {
        "backbone": args.backbone,
        "batch_size": trainer.batch_size,
        "data": args.data,
        "train_images": len(trainer.data.train_images),
        "image_size": config.image_size,
        "device": str(trainer.device),
        "gpu": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else None,
        "precision": "bf16" if trainer.amp_dtype is torch.bfloat16 else "fp32",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "byol_sweep": summary(core_rounds, optimizer=config.optimizer, compile=config.compile,
                              channels_last=trainer.channels_last),
        "lightly": None,
        "lightly_version": lightly_version(),
        "speedup": None,
        "peak_device_mb": (round(torch.cuda.max_memory_allocated(trainer.device) / 2**20, 1)
                           if trainer.device.type == "cuda" else None),
    }
    if other is not None:
        result["lightly"] = summary(lightly_rounds, workers=args.workers, optimizer=args.lightly_optimizer)
        result["speedup"] = round(result["byol_sweep"]["images_per_s"] / result["lightly"]["images_per_s"], 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
