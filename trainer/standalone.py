"""Train one configuration to a folder: per-epoch lines, metrics.json and a checkpoint."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from .config import ConfigError, TrainConfig
from .loop import Trainer

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


def format_result(metrics: dict) -> str:
    parts = [f"epoch {metrics['epoch']:>3}", f"loss {metrics['loss']:.4f}", f"knn_acc {metrics['knn_acc']:.4f}",
             f"z_std {metrics['z_std']:.4f}", f"z_spread {metrics['z_spread']:.3f}",
             f"eff_rank {metrics['eff_rank']:.1f}", f"lr {metrics['lr']:.4g}", f"tau {metrics['tau']:.5f}",
             f"{metrics['images_per_s']:.0f} img/s", f"{metrics['epoch_s']:.1f} s"]
    if "linear_probe_acc" in metrics:
        parts.append(f"linear_probe_acc {metrics['linear_probe_acc']:.4f}")
    return " | ".join(parts)


def train_to_folder(config: TrainConfig, out: str | os.PathLike, resume: bool = False,
                    log: Callable[[str], None] = print,
                    on_epoch: Callable[[list[dict]], None] | None = None) -> dict:
    """Train, checkpointing after every epoch (so a crash loses at most one epoch); with
    resume=True continue from out/checkpoint.pt. on_epoch(history) is called once an epoch's
    checkpoint and metrics.json are written (and once on resuming, with the history so far).
    Returns the final metrics."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output folder {out} cannot be created: {err.strerror}; give a writable folder (--out DIR)") from None
    trainer = Trainer(config, log=log)
    history: list[dict] = []
    metrics_path = out / METRICS
    if resume and (out / CHECKPOINT).exists():
        trainer.load(out / CHECKPOINT)
        if metrics_path.exists():
            history = json.loads(metrics_path.read_text())["history"][: trainer.epoch]
        log(f"resumed from {out / CHECKPOINT} at epoch {trainer.epoch}")
        if on_epoch is not None and history:
            on_epoch(history)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    log(f"training {config.backbone} on {config.dataset} for {config.epochs} epochs on {trainer.device} "
        f"({len(trainer.data.train_images)} images, batch {trainer.batch_size})")
    for result in trainer.fit():
        metrics = result.metrics()
        history.append(metrics)
        log(format_result(metrics))
        trainer.save(out / CHECKPOINT)
        tmp = metrics_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"final": metrics, "history": history}, indent=2))
        os.replace(tmp, metrics_path)
        if on_epoch is not None:
            on_epoch(history)
    final = history[-1] if history else {}
    log(f"wrote {metrics_path} and {out / CHECKPOINT}")
    return final
