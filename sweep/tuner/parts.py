"""The searcher and scheduler of a space as Ray objects, with the concurrency rule: the scheduler
says how many trials may be live (PBT: the whole population), the searcher where that limit goes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.space import SweepSpec


def startup_trials(spec: SweepSpec) -> int:
    """How many of TPE's first trials are drawn at random before it models the results."""
    return spec.searcher.startup_trials(spec) if spec.algorithm == "optuna" else 0


def build_searcher(spec: SweepSpec, max_concurrent: int | None, seed: int = 0, state_dir: Path | None = None):
    """The space's search algorithm as a Ray object (see sweep/space/searchers.py)."""
    return spec.searcher.build(spec, max_concurrent, seed, state_dir)


@dataclass
class TuneParts:
    search_alg: Any
    scheduler: Any
    max_concurrent_trials: int | None  # TuneConfig's (None where the searcher takes the limit itself)
    num_to_keep: int | None  # CheckpointConfig's: checkpoints kept per trial
    note: str | None  # what the scheduler changed about concurrency, for the console


def tune_parts(spec: SweepSpec, concurrency: int, seed: int = 0, state_dir: Path | None = None,
               decisions: dict[str, list[dict]] | None = None) -> TuneParts:
    """The searcher and scheduler of a space as Ray objects, with the concurrency rule: the scheduler
    says how many trials may be live (PBT: the whole population), the searcher where that limit goes."""
    limit, note = spec.scheduler.trial_limit(concurrency, spec)
    return TuneParts(
        search_alg=spec.searcher.build(spec, limit, seed, state_dir),
        scheduler=build_scheduler(spec, decisions),
        max_concurrent_trials=spec.searcher.tune_limit(limit),
        num_to_keep=spec.scheduler.checkpoints_to_keep(),
        note=note,
    )


def build_scheduler(spec: SweepSpec, decisions: dict[str, list[dict]] | None = None):
    """The space's scheduler as a Ray object (see sweep/space/schedulers.py); `decisions` collects what
    a recording scheduler decided, for the MLflow callback."""
    return spec.scheduler.build(spec, {} if decisions is None else decisions)
