"""The training loop: one Trainer, one readable epoch, exact checkpoints."""
from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from vocabulary import CONTINUABLE_FIELDS, RUNTIME_FIELDS

from . import augment
from . import data as datasets
from .byol import BYOL, ema_update, tau_at
from .checkpoint import read_checkpoint, restore_rng, rng_state, write_checkpoint
from .config import ConfigError, TrainConfig
from .evaluation import effective_rank, embed, extract_features, knn_accuracy, linear_probe, projection_std, z_spread
from .optim import build_optimizer, lr_at


class Diverged(RuntimeError):
    """The BYOL loss became NaN or infinite: the trial diverged."""


@dataclass
class EpochResult:
    epoch: int
    loss: float
    knn_acc: float
    z_std: float
    z_spread: float
    eff_rank: float
    lr: float
    tau: float
    images_per_s: float
    epoch_s: float
    linear_probe_acc: float | None = None

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


HEALTH_ROWS = 2048  # kNN bank images whose projections measure collapse (z_spread, eff_rank)

RESUMABLE_CHANGES = RUNTIME_FIELDS  # a resumed run may change where and how fast it runs, not what it trains
# what a run continued from another run's checkpoint may change when asked to (Population Based Training):
# the lr and tau schedules read base_lr and tau_base at every step, aug_strength only shapes the views
CONTINUABLE_CHANGES = CONTINUABLE_FIELDS
POLICY_PARAMS = "policy_params"  # the searched op parameters: continuable too, PBT perturbs them


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # TrainConfig.validate allows only auto, cpu, cuda and cuda:N
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config: device {name!r} was asked for, but CUDA is not available here; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"config: device {name!r} does not exist; this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def _fixed_subset(n: int, size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A fixed (seed 0) random subset of indices, so every trial is evaluated on the same images."""
    idx = torch.arange(n) if mask is None else torch.nonzero(mask.cpu()).flatten()
    if size and size < len(idx):
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))[:size]].sort().values
    return idx


class Trainer:
    def __init__(self, config: TrainConfig, data: datasets.ImageData | None = None,
                 log: Callable[[str], None] | None = None):
        config.validate()
        self.config = config
        self.log = log or (lambda message: None)
        self.device = resolve_device(config.device)
        cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if config.precision == "bf16" or (config.precision == "auto" and cuda) else None
        self.channels_last = config.channels_last

        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        if data is None:
            data = datasets.load(config.dataset, data_root=config.data_root, download=config.download,
                                 cache_dir=config.cache_dir, image_size=config.image_size,
                                 eval_split=config.eval_split)
        if config.train_limit:
            keep = datasets.stratified_subset(data.train_labels, config.train_limit).to(data.train_labels.device)
            data = datasets.ImageData(data.train_images[keep], data.train_labels[keep],
                                      data.eval_images, data.eval_labels, data.classes)
        limited = f" with train_limit {config.train_limit}" if config.train_limit else ""
        if len(data.train_images) < 2:  # BatchNorm needs two samples
            raise ConfigError(f"config: training needs at least 2 images; {config.dataset} gives "
                              f"{len(data.train_images)}{limited}")
        if config.batch_size > len(data.train_images):
            raise ConfigError(f"config: batch_size {config.batch_size} is larger than the training set ({config.dataset} "
                              f"gives {len(data.train_images)} training images{limited}); allowed: a batch_size "
                              f"from 2 to {len(data.train_images)}")
        self.data = data.to(self.device)
        stats = self.data.train_images[:10000].float().div(255)
        self.mean = stats.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.std = stats.std(dim=(0, 2, 3)).clamp(min=1e-3).view(1, -1, 1, 1)
        del stats
        self.bank_idx = _fixed_subset(len(data.train_images), config.knn_bank_size, data.train_labels >= 0).to(self.device)
        self.query_idx = _fixed_subset(len(data.eval_images), config.knn_queries).to(self.device)
        self.health_rows = _fixed_subset(len(self.bank_idx), HEALTH_ROWS).to(self.device)  # positions in the bank
        self.views = augment.policy_views(config.policy, config.aug_strength, config.policies,
                                           config.policy_params)

        self.model = BYOL(config.backbone, config.projector_hidden, config.projector_out, config.image_size).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.batch_size = config.batch_size
        self.steps_per_epoch = len(data.train_images) // self.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.peak_lr = config.base_lr * self.batch_size / 256
        self.optimizer = build_optimizer(
            config.optimizer, [self.model.encoder, self.model.projector, self.model.predictor],
            self.peak_lr, config.weight_decay, config.momentum, config.predictor_lr_scale,
        )
        self.ema_target, self.ema_online = self.model.ema_pairs()
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch = 0
        self.step = 0

    # -- training -----------------------------------------------------------------------------
    def fit(self) -> Iterator[EpochResult]:
        """Train the remaining epochs, yielding one EpochResult each; the last has the probe."""
        while self.epoch < self.config.epochs:
            result = self.train_epoch()
            if self.epoch == self.config.epochs and self.config.linear_probe:
                result.linear_probe_acc = self.probe()
            yield result

    def _view(self, batch: torch.Tensor, params: augment.ViewParams) -> torch.Tensor:
        x = augment.augment(batch, params, self.config.image_size, self.gen, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, batch: torch.Tensor, warmup_steps: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """One optimiser step on a uint8 batch: (loss, z_std) as device tensors (no host sync), lr, tau."""
        cfg = self.config
        lr = lr_at(self.step, self.total_steps, warmup_steps, self.peak_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        v1, v2 = self._view(batch, self.views[0]), self._view(batch, self.views[1])
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, z1, _ = self.forward(v1, v2, cfg.concat_views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        tau = tau_at(self.step, self.total_steps, cfg.tau_base)
        ema_update(self.ema_target, self.ema_online, tau)
        self.step += 1
        return loss.detach().float(), projection_std(z1.detach()), lr, tau

    def train_epoch(self) -> EpochResult:
        cfg = self.config
        self.model.train()
        start = time.perf_counter()
        order = torch.randperm(len(self.data.train_images), generator=self.gen, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        z_std_sum = torch.zeros((), device=self.device)
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        for i in range(self.steps_per_epoch):
            batch = self.data.train_images[order[i * self.batch_size : (i + 1) * self.batch_size]]
            loss, z_std, lr, tau = self.train_step(batch, warmup)
            loss_sum += loss
            z_std_sum += z_std
        mean_loss = float(loss_sum) / self.steps_per_epoch  # the epoch's one host sync
        train_s = time.perf_counter() - start
        self.epoch += 1
        if not np.isfinite(mean_loss):
            raise Diverged(f"loss became {mean_loss} in epoch {self.epoch} (step {self.step}); training stopped")
        knn, spread, rank = self.evaluate()
        return EpochResult(
            epoch=self.epoch, loss=mean_loss, knn_acc=knn,
            z_std=float(z_std_sum) / self.steps_per_epoch, z_spread=spread, eff_rank=rank, lr=lr, tau=tau,
            images_per_s=self.steps_per_epoch * self.batch_size / train_s,
            epoch_s=time.perf_counter() - start,
        )

    # -- evaluation ---------------------------------------------------------------------------
    def eval_view(self, batch: torch.Tensor) -> torch.Tensor:
        x = augment.resize_only(batch, self.config.image_size, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(bank features, bank labels, query features, query labels) from the online encoder."""
        d = self.data
        with self._autocast():
            bank = extract_features(self.model.encoder, d.train_images[self.bank_idx], self.eval_view)
            queries = extract_features(self.model.encoder, d.eval_images[self.query_idx], self.eval_view)
        return bank, d.train_labels[self.bank_idx], queries, d.eval_labels[self.query_idx]

    def evaluate(self) -> tuple[float, float, float]:
        """(knn_acc, z_spread, eff_rank): kNN top-1 of the online encoder's features, and the spread
        and effective rank of the online projections of a fixed set of the bank's images."""
        d = self.data
        with self._autocast():
            raw = embed(self.model.encoder, d.train_images[self.bank_idx], self.eval_view)
            queries = extract_features(self.model.encoder, d.eval_images[self.query_idx], self.eval_view)
            z = embed(self.model.projector, raw[self.health_rows])
        knn = knn_accuracy(torch.nn.functional.normalize(raw, dim=1), d.train_labels[self.bank_idx], queries,
                           d.eval_labels[self.query_idx], self.config.knn_k, self.config.knn_temperature,
                           len(self.data.classes))
        values = torch.stack([knn.float(), z_spread(z), effective_rank(z)]).tolist()  # one host sync
        return values[0], values[1], values[2]

    def probe(self) -> float:
        bank, bank_y, queries, query_y = self.features()
        return linear_probe(bank, bank_y, queries, query_y, seed=self.config.seed)

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "device_type": self.device.type,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            # the input normalisation the encoder was trained with (read by trainer/export.py)
            "normalisation": {"mean": self.mean.flatten().cpu(), "std": self.std.flatten().cpu()},
            "rng": rng_state(self.gen),
        }

    def load_state_dict(self, state: dict, allow_changes: tuple[str, ...] = ()) -> None:
        """Continue from a checkpoint's state. `allow_changes` (a subset of CONTINUABLE_CHANGES) names
        fields this run may hold other values of: they apply from the next step on, the lr and tau
        schedules continuing from the checkpoint's step (peak lr and views are this run's)."""
        unknown = [k for k in allow_changes if k not in (*CONTINUABLE_CHANGES, POLICY_PARAMS)]
        if unknown:
            raise ValueError(f"allow_changes may name only {', '.join((*CONTINUABLE_CHANGES, POLICY_PARAMS))}, "
                             f"not {', '.join(unknown)}")
        allowed = (*RESUMABLE_CHANGES, "epochs", *allow_changes)
        changed = [f"{k} {v!r} -> {getattr(self.config, k)!r}" for k, v in state["config"].items()
                   if k not in allowed and v != getattr(self.config, k, v)]
        if changed:
            raise ConfigError(f"the checkpoint was trained with another configuration ({'; '.join(changed)}); "
                              "resume with the checkpoint's configuration or start a new run")
        continued = {k: (state["config"][k], getattr(self.config, k)) for k in allow_changes
                     if k in state["config"] and state["config"][k] != getattr(self.config, k)}
        if continued:
            self.log("continuing with " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in continued.items())
                     + f" from step {state['step']}")
        saved_on = state.get("device_type", "cpu")
        if saved_on != self.device.type:
            raise ConfigError(f"the checkpoint was written on {saved_on} and this run is on {self.device.type}; "
                              f"an exact resume needs the same kind of device (set device: {saved_on})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        if state["config"].get("epochs", self.config.epochs) != self.config.epochs:
            self.log(f"epochs changed from {state['config']['epochs']} to {self.config.epochs}: the learning-rate "
                     f"and momentum schedules now span {self.config.epochs} epochs, from the step they are at")
        restore_rng(state["rng"], self.gen)

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
        write_checkpoint(self.state_dict(), path)

    def load(self, path: str | os.PathLike, allow_changes: tuple[str, ...] = ()) -> None:
        """Resume from a checkpoint; a file that is not one raises ConfigError naming it. A checkpoint
        of another configuration is refused, except in the fields named in `allow_changes`
        (see load_state_dict)."""
        state = read_checkpoint(path)
        try:
            self.load_state_dict(state, allow_changes)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{path} is not a byol-sweep checkpoint of this model ({reason})") from None
