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


def startup_trials(spec: SweepSpec) -> int:
    """How many of TPE's first trials are drawn at random before it models the results."""
    return max(2, min(10, spec.num_samples // 3))


def build_searcher(spec: SweepSpec, max_concurrent: int, seed: int = 0, state_dir: Path | None = None):
    """Optuna's seeded TPE (its study kept in <state_dir>/optuna.db), or Tune's random/grid generator.

    TPE is multivariate (it models the parameters jointly: lr and momentum interact) and uses a
    constant liar: a trial still running counts as a poor result, so concurrent trials are not
    all proposed in the same spot."""
    if spec.algorithm == "optuna":
        storage = optuna.storages.RDBStorage(f"sqlite:///{state_dir / 'optuna.db'}") if state_dir else None
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(spec), multivariate=True,
                                             constant_liar=True)
        return PruningOptunaSearch(sampler=sampler, storage=storage, study_name=spec.name if storage else None,
                                   max_epochs=spec.max_epochs)
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed)


class RecordingASHA(ASHAScheduler):
    """Ray's ASHA, recording each decision as it is made: the rung, the trial's value there, the
    cut-off it faced (None for the first trial to reach a rung) and continue/stop.

    `decisions` (trial id -> list of records) is shared with the MLflow callback, which logs them."""

    def __init__(self, *args, decisions: dict[str, list[dict]], **kwargs):
        super().__init__(*args, **kwargs)
        self.decisions = decisions

    def _pending_rung(self, trial, result: dict) -> tuple[int, float | None] | None:
        """The rung this result will be judged at and its cut-off, as Ray's bracket computes them."""
        if self._time_attr not in result or self._metric not in result or result[self._time_attr] >= self._max_t:
            return None
        bracket = self._trial_info.get(trial.trial_id)
        if bracket is None:
            return None
        for milestone, recorded in bracket._rungs:
            if result[self._time_attr] < milestone or trial.trial_id in recorded:
                continue
            cutoff = bracket.cutoff(recorded)
            return int(milestone), None if cutoff is None else float(cutoff) * self._metric_op
        return None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        pending = self._pending_rung(trial, result)
        action = super().on_trial_result(tune_controller, trial, result)
        if pending is not None:
            rung, cutoff = pending
            self.decisions.setdefault(trial.trial_id, []).append({
                "rung": rung, "value": float(result[self._metric]), "cutoff": cutoff,
                "decision": "stop" if action == self.STOP else "continue",
            })
        return action


def build_scheduler(spec: SweepSpec, decisions: dict[str, list[dict]] | None = None):
    if spec.asha is None:
        return FIFOScheduler()
    return RecordingASHA(
        time_attr="epoch",
        max_t=spec.asha.max_epochs,
        grace_period=spec.asha.grace_period,
        reduction_factor=spec.asha.reduction_factor,
        decisions={} if decisions is None else decisions,
    )
