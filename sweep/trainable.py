"""The Ray Tune function trainable: one trial = one Trainer, reported epoch by epoch."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from trainer import Diverged, Trainer

from .space import SweepSpec

CHECKPOINT_FILE = "trainer.pt"


def checkpoint_epochs(spec: SweepSpec, every: int) -> set[int]:
    """Epochs that end with a checkpoint: every `every` epochs, each ASHA rung (where a trial may
    be stopped and later resumed), and the last."""
    last = spec.max_epochs
    marks = {e for e in range(1, last + 1) if every and e % every == 0} | {last}
    if spec.asha:
        marks |= set(spec.asha.rungs())
    return marks


def train_byol(trial_config: dict[str, Any], spec: SweepSpec, checkpoint_every: int = 1) -> None:
    """Train one configuration, reporting every epoch; resumes from Tune's checkpoint if any."""
    config = spec.train_config(trial_config)
    trainer = Trainer(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load(Path(folder) / CHECKPOINT_FILE)
    marks = checkpoint_epochs(spec, checkpoint_every)
    try:
        for result in trainer.fit():
            metrics = result.metrics()
            if result.epoch in marks:
                with tempfile.TemporaryDirectory() as folder:
                    trainer.save(Path(folder) / CHECKPOINT_FILE)
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            else:
                tune.report(metrics)
    except Diverged as err:
        # A diverged trial ends normally (no retries: it would diverge again) with a marker result.
        tune.report({"epoch": trainer.epoch, "diverged": 1, "error": str(err)})
