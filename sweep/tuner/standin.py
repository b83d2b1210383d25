"""The stand-in trainable: a Ray Tune function trainable that trains nothing and reports a synthetic
BYOL learning curve at a fixed rate, with the real trainable's result keys and checkpoints. It is
what the benchmarks of the sweep machinery (driver, schedulers, MLflow tracking, reports) run
instead of BYOL, and what `byol-sweep run --simulate` runs a whole sweep through: the scheduler,
searcher and tracking see trials that behave like real ones, in seconds instead of GPU-hours. A trial
keeps nothing outside its own call, so one worker process may run trial after trial (a simulation
has Tune reuse its actors: TuneConfig(reuse_actors=True)), and this module imports no torch, so such
a process is small and quick to start.

The curve: knn_acc rises as plateau * (1 - exp(-epoch / (budget / 4))) plus seeded noise, where
the plateau is highest at base_lr OPTIMUM["base_lr"], 1 - tau_base OPTIMUM["one_minus_tau"] and
aug_strength OPTIMUM["aug_strength"], and falls off smoothly (a Gaussian in log base_lr, in
log10(1 - tau_base) and in aug_strength) away from them; the loss falls as the accuracy rises.
The same configuration, seed and epoch always report the same values, so a resumed or restored
trial continues the curve it was on."""
from __future__ import annotations

import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.space import SweepSpec
from trainer.config import TrainConfig
from vocabulary import CONTINUABLE_FIELDS

STANDIN_EPOCH_S = 0.05  # default seconds per reported epoch
STANDIN_FILE = "standin.json"  # the stand-in's checkpoint in its Tune checkpoint folder: the epoch it reached
OPTIMUM = {"base_lr": 1.0, "one_minus_tau": 0.01, "aug_strength": 1.0}
NOISE = 0.005  # standard deviation of the accuracy's noise


def standin_trainable(trial_config: dict[str, Any], spec: SweepSpec, epoch_seconds: float = STANDIN_EPOCH_S,
                      marks: frozenset[int] | None = None) -> None:
    """A trial of `spec` that reports one synthetic epoch every `epoch_seconds`: its configuration is
    the space's base with the trial's sampled values on top, as train_byol builds it, and it leaves a
    checkpoint at each epoch of `marks` (None: every epoch), as standin_search_trainable gives the real
    trainable's. As a Tuner takes it: tune.with_parameters(standin_trainable, spec=spec, epoch_seconds=...)."""
    config = spec.train_config(trial_config)
    pbt = spec.scheduler.name == "pbt"
    values = {f"hp.{k}": float(getattr(config, k)) for k in CONTINUABLE_FIELDS} if pbt else {}
    values["node_id"] = ray.get_runtime_context().get_node_id()
    epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            epoch = int(json.loads((Path(folder) / STANDIN_FILE).read_text())["epoch"])
    start = last = time.monotonic()
    for done, epoch in enumerate(range(epoch + 1, config.epochs + 1), start=1):
        time.sleep(max(0.0, start + done * epoch_seconds - time.monotonic()))  # a fixed rate, however long a report took
        now = time.monotonic()
        metrics = {**standin_metrics(config, epoch, now - last), **values}
        last = now
        if marks is None or epoch in marks:
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / STANDIN_FILE).write_text(json.dumps({"epoch": epoch}))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)


def plateau(config: TrainConfig) -> float:
    """The kNN accuracy the configuration's curve approaches: 0.9 at the optimum, 0.1 far from it."""
    distance = (math.log(config.base_lr / OPTIMUM["base_lr"]) ** 2 / 2
                + math.log10(max(1 - config.tau_base, 1e-9) / OPTIMUM["one_minus_tau"]) ** 2 / 2
                + (config.aug_strength - OPTIMUM["aug_strength"]) ** 2 / 0.5)
    return 0.1 + 0.8 * math.exp(-distance)


def standin_metrics(config: TrainConfig, epoch: int, epoch_s: float) -> dict[str, float]:
    """The result the stand-in reports at `epoch` (1-based) of the configuration's curve: the keys of
    trainer.loop.EpochResult, the linear probe at the last epoch; throughput counts one batch an epoch."""
    top = plateau(config)
    progress = 1 - math.exp(-epoch / max(1.0, config.epochs / 4))
    noise = random.Random(f"{config.seed}:{epoch}:{config.base_lr!r}:{config.tau_base!r}:{config.aug_strength!r}")
    knn = min(1.0, max(0.0, top * progress + noise.gauss(0.0, NOISE)))
    cosine = (1 + math.cos(math.pi * epoch / config.epochs)) / 2  # the lr and tau schedules' cosine, at the epoch's end
    out = {"epoch": epoch, "loss": 0.1 + 3.5 * (1 - knn), "knn_acc": knn,
           "z_std": top / math.sqrt(config.projector_out), "z_spread": 0.5 + top / 2,
           "eff_rank": config.projector_out * (0.2 + 0.6 * top * progress),
           "lr": config.base_lr * config.batch_size / 256 * cosine, "tau": 1 - (1 - config.tau_base) * cosine,
           "images_per_s": config.batch_size / epoch_s if epoch_s > 0 else 0.0, "epoch_s": epoch_s}
    if epoch == config.epochs and config.linear_probe:
        out["linear_probe_acc"] = min(1.0, knn + 0.05)
    return out


def standin_search_trainable(spec: SweepSpec, resources: dict[str, float], checkpoint_every: int, epoch_seconds: float):
    """standin_trainable with the space, a trial's resources and the epochs the real trainable would
    checkpoint (every `checkpoint_every`, the last, and where the space's scheduler needs one), as the
    Tuner takes it (search_trainable's twin)."""
    # torch: here in the driver only, where it is loaded already; a stand-in's worker process needs none
    # (measured: 1.6 s and 110 MB of its own memory to start, against 5 s and 460 MB with torch)
    from sweep.tuner.trainable import checkpoint_epochs

    marks = frozenset(checkpoint_epochs(spec, checkpoint_every))
    return tune.with_resources(tune.with_parameters(standin_trainable, spec=spec, epoch_seconds=epoch_seconds,
                                                    marks=marks), resources)
