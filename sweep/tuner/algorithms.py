"""Our subclasses of Ray's searchers and schedulers: ASHA and PBT that record each decision (for
MLflow and the report), and an Optuna search that prunes. The space's entries
(sweep/space/schedulers.py, sweep/space/searchers.py) build them; sweep/tuner/parts.py assembles them.

Ray's OptunaSearch tells Optuna that a trial ASHA stopped early COMPLETED with its truncated
last value, which biases TPE toward configurations that look good early. PruningOptunaSearch
reports each epoch's value at step = epoch and tells Optuna such trials were PRUNED (TPE then
ranks them by how far they got); diverged and failed trials are told as FAIL. Its study lives in
memory while the sweep runs (an SQLite write for every epoch of every trial held the driver 20 ms a
result at the median, 56-83 ms at the 99th percentile, benchmarks/driver_scale.py); Tune pickles it with the searcher at each of its experiment
checkpoints, which is what a resume restores, and each checkpoint adds the trials finished since the
last one to the study's SQLite file (`study_file`), for Optuna's own tools.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class PruningOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_epochs: int, study_file: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs
        self.study_file = study_file
        self._reported_epochs: dict[str, set[int]] = {}
        self._in_file: set[int] = set()  # numbers of the finished trials the study's file holds

    def save(self, checkpoint_path: str) -> None:
        """Tune's checkpoint of the searcher (the study in memory, pickled), then the study's file."""
        super().save(checkpoint_path)
        if self.study_file is not None and self._storage is None:  # else the study is that file (an older sweep's)
            self._write_study_file()

    def _write_study_file(self) -> None:
        """Add the trials finished since the last checkpoint to the study's SQLite file: once each, by
        their number in this study (a user attribute there), also after a resume."""
        finished = [t for t in self._ot_study.get_trials(deepcopy=False) if t.state.is_finished()
                    and t.number not in self._in_file]
        if not finished:
            return
        to = optuna.create_study(storage=f"sqlite:///{self.study_file}", study_name=self._ot_study.study_name,
                                 direction=self._ot_study.direction, load_if_exists=True)
        if not self._in_file:  # the first checkpoint of this driver: what an earlier one wrote
            self._in_file = {t.user_attrs.get("byol_sweep.number") for t in to.get_trials(deepcopy=False)}
        copies = []
        for trial in finished:
            if trial.number not in self._in_file:
                copy = optuna.trial.create_trial(
                    state=trial.state, value=trial.value, params=trial.params, distributions=trial.distributions,
                    user_attrs={**trial.user_attrs, "byol_sweep.number": trial.number},
                    system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values)
                copies.append(copy)
        to.add_trials(copies)
        self._in_file.update(trial.number for trial in finished)

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


class RecordingPBT(PopulationBasedTraining):
    """Ray's PBT, recording each exploit as it is made: the epoch the member had reached, the member
    it copied and that member's epoch (the checkpoint it continues from), and the old and new values
    of the perturbed fields, as TrainConfig fields. `decisions` is shared with the MLflow callback,
    which logs each record as the tag pbt.exploit_<epoch> on the member that copied."""

    def __init__(self, *args, decisions: dict[str, list[dict]], max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.decisions = decisions
        self.max_t = max_t

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self.max_t:
            return self.CONTINUE  # the member's last epoch: its run ends; nothing is left to copy into
        return super().on_trial_result(tune_controller, trial, result)

    def _fields(self, config: dict) -> dict[str, float]:
        out = {}
        for k in self._hyperparam_mutations:
            if k.startswith("one_minus_"):
                out[k[len("one_minus_"):]] = 1 - float(config[k])
            else:
                out[k] = float(config[k])
        return out

    def _exploit(self, tune_controller, trial, trial_to_clone):
        old = self._fields(trial.config)
        epoch = int((self._trial_state[trial].last_result or {}).get(self._time_attr, 0))
        from_epoch = int((self._trial_state[trial_to_clone].last_result or {}).get(self._time_attr, 0))
        super()._exploit(tune_controller, trial, trial_to_clone)
        self.decisions.setdefault(trial.trial_id, []).append({
            "tag": f"pbt.exploit_{epoch}", "epoch": epoch, "from": trial_to_clone.trial_id,
            "from_epoch": from_epoch, "old": old, "new": self._fields(trial.config)})


@dataclass
class Clip:
    """PBT's explore step keeps each perturbed value inside its search range (a factor of 1.2 would
    otherwise walk a value out of it, e.g. 1 - tau_base past the range's end)."""

    bounds: dict[str, tuple[float, float]]

    def __call__(self, config: dict) -> dict:
        for k, (low, high) in self.bounds.items():
            if k in config:
                config[k] = min(max(float(config[k]), low), high)
        return config
