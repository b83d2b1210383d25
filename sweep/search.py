"""Search algorithms and the scheduler for a SweepSpec.

Ray's OptunaSearch tells Optuna that a trial ASHA stopped early COMPLETED with its truncated
last value, which biases TPE toward configurations that look good early. PruningOptunaSearch
reports each epoch's value at step = epoch and tells Optuna such trials were PRUNED (TPE then
ranks them by how far they got); diverged and failed trials are told as FAIL.
"""
from __future__ import annotations

import logging
from pathlib import Path

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from .space import SweepSpec

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class PruningOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs
        self._reported_epochs: dict[str, set[int]] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self.metric not in result or "epoch" not in result:
            return
        step = int(result["epoch"])
        reported = self._reported_epochs.setdefault(trial_id, set())
        if step not in reported:  # an epoch repeated after a restore is told once
            self._ot_trials[trial_id].report(float(result[self.metric]), step)
            reported.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result:  # Tune hands the last result to on_trial_complete only
            self.on_trial_result(trial_id, result)
        ot_trial = self._ot_trials[trial_id]
        value = None if result is None else result.get(self.metric)
        if error or value is None or (result or {}).get("diverged"):
            state, value = optuna.trial.TrialState.FAIL, None
        elif int(result.get("epoch", 0)) < self.max_epochs:
            state, value = optuna.trial.TrialState.PRUNED, None  # its epochs were reported as intermediates
        else:
            state = optuna.trial.TrialState.COMPLETE
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. a NaN value; Optuna refuses it and the search goes on
            logger.warning("Optuna refused the result of trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def build_searcher(spec: SweepSpec, max_concurrent: int, seed: int = 0, state_dir: Path | None = None):
    """Optuna's seeded TPE (its study kept in <state_dir>/optuna.db), or Tune's random/grid generator."""
    if spec.algorithm == "optuna":
        storage = optuna.storages.RDBStorage(f"sqlite:///{state_dir / 'optuna.db'}") if state_dir else None
        return PruningOptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, spec.num_samples // 3))),
            storage=storage, study_name=spec.name if storage else None, max_epochs=spec.max_epochs,
        )
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed)


def build_scheduler(spec: SweepSpec):
    if spec.asha is None:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=spec.asha.max_epochs,
        grace_period=spec.asha.grace_period,
        reduction_factor=spec.asha.reduction_factor,
    )
