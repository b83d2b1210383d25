"""Where a trial is started: the Ray Tune function trainables (one trial = one Trainer, reported
epoch by epoch, checkpointed where the scheduler needs it), wrapped with their resources."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.space import SweepSpec
from sweep.tracking.encoders import CHECKPOINT_FILE
from trainer import ConfigError, Diverged, TrainConfig, Trainer
from trainer.checkpoint import read_checkpoint
from trainer.loop import CONTINUABLE_CHANGES, POLICY_PARAMS


def checkpoint_epochs(spec: SweepSpec, every: int) -> set[int]:
    """Epochs that end with a checkpoint: every `every` epochs, the last, and each epoch where the
    scheduler needs one (an ASHA rung or HyperBand milestone, where a trial may be stopped or paused
    and later resumed; a PBT perturbation, where another member may copy it)."""
    return every_epochs(spec.max_epochs, every) | spec.scheduler.checkpoint_epochs(spec.max_epochs)


def every_epochs(last: int, every: int) -> set[int]:
    return {e for e in range(1, last + 1) if every and e % every == 0} | {last}


def train_byol(trial_config: dict[str, Any], spec: SweepSpec, checkpoint_every: int = 1) -> None:
    """A search trial: the space's base with the trial's sampled values on top. Under PBT a trial
    may start from another member's checkpoint with new values of the fields PBT changes: it
    continues from that checkpoint's step, and reports those values every epoch (hp.<field>)."""
    pbt = spec.scheduler.name == "pbt"
    fit_and_report(spec.train_config(trial_config), checkpoint_epochs(spec, checkpoint_every),
                   allow_changes=(*CONTINUABLE_CHANGES, POLICY_PARAMS) if pbt else (), report_hyperparameters=pbt)


def train_final(trial_config: dict[str, Any], checkpoint_every: int = 1) -> None:
    """A final-stage run: a selected configuration, complete, with a fresh seed (see sweep/final.py)."""
    config = TrainConfig.from_dict(trial_config["final"]["config"], source="final-stage configuration")
    fit_and_report(config, every_epochs(config.epochs, checkpoint_every))


def fit_and_report(config: TrainConfig, marks: set[int], allow_changes: tuple[str, ...] = (),
                   report_hyperparameters: bool = False) -> None:
    """Train, reporting every epoch; resumes from Tune's checkpoint if any (which may hold other
    values of the fields in `allow_changes`: those of this config apply from its next step)."""
    trainer = Trainer(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            restore(trainer, Path(folder), allow_changes)
    values = {f"hp.{k}": float(getattr(config, k)) for k in CONTINUABLE_CHANGES} if report_hyperparameters else {}
    # which Ray node ran each epoch: the driver tags the trial's run with it (a restored trial may move)
    values["node_id"] = ray.get_runtime_context().get_node_id()
    try:
        for result in trainer.fit():
            metrics = {**result.metrics(), **values}
            if result.epoch in marks:
                with tempfile.TemporaryDirectory() as folder:
                    trainer.save(Path(folder) / CHECKPOINT_FILE)
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            else:
                tune.report(metrics)
    except Diverged as err:
        # A diverged trial ends normally (no retries: it would diverge again) with a marker result.
        tune.report({"epoch": trainer.epoch, "diverged": 1, "error": str(err)})


def restore(trainer: Trainer, folder: Path, allow_changes: tuple[str, ...] = ()) -> None:
    """Continue from Tune's checkpoint in `folder`. A driver killed after Tune deleted a trial's older
    checkpoint (it keeps num_to_keep) and before it saved its own state leaves that state naming the
    deleted one; the trial then goes on from its newest readable checkpoint short of the last epoch
    (one at the last epoch would leave no epoch to report), or from its start, and says so."""
    if (folder / CHECKPOINT_FILE).exists():
        trainer.load(folder / CHECKPOINT_FILE, allow_changes=allow_changes)
        return
    for candidate in sorted(folder.parent.glob("checkpoint_*"), reverse=True):
        try:
            if read_checkpoint(candidate / CHECKPOINT_FILE)["epoch"] >= trainer.config.epochs:
                continue
        except ConfigError:  # absent or damaged
            continue
        trainer.load(candidate / CHECKPOINT_FILE, allow_changes=allow_changes)
        print(f"{folder} has no checkpoint (deleted by Tune after the driver last saved its state): "
              f"continuing from {candidate.name}, epoch {trainer.epoch}", file=sys.stderr, flush=True)
        return
    print(f"{folder} has no checkpoint (deleted by Tune after the driver last saved its state), nor has any "
          "other of this trial short of its last epoch: starting it again", file=sys.stderr, flush=True)


def search_trainable(spec: SweepSpec, resources: dict[str, float], checkpoint_every: int):
    """train_byol with the space and a trial's resources, as the Tuner takes it."""
    return tune.with_resources(tune.with_parameters(train_byol, spec=spec, checkpoint_every=checkpoint_every), resources)


def final_trainable(resources: dict[str, float], checkpoint_every: int):
    return tune.with_resources(tune.with_parameters(train_final, checkpoint_every=checkpoint_every), resources)
