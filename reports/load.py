"""MLflow -> DataFrames: read one sweep exactly as docs/mlflow-layout.md lays it out."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports.errors import ReportError
from reports.store import History, Reader, RunRecord
from vocabulary import COMPLETED, EPOCH_METRICS, FINAL_METRICS, FINISHED, RUNNING, best_index, objective
from vocabulary.journal_files import refused_records

TRIAL_COLUMNS = (
    "experiment", "trial", "trial_id", "run_id", "status", "policy", "seed", "epochs_run",
    "metric", "final_metric", "best_metric", "best_epoch", "final_loss", "final_z_std", "final_z_spread",
    "final_eff_rank",
    "linear_probe_acc", "compute_s", "wall_s", "start_ms", "resources_cpu", "resources_gpu",
    "stopped_epoch", "error",
)


@dataclass
class Sweep:
    """One sweep: the parent run's facts plus a trials table and a curves table."""

    experiment: str
    parent_id: str
    name: str
    state: str  # running | finished | interrupted | unknown
    start_ms: int | None
    end_ms: int | None
    params: dict[str, str]  # the parent's params, as MLflow strings
    tags: dict[str, str]
    metric: str
    mode: str
    swept: list[str]
    space: dict[str, dict]  # swept field -> distribution (the parent's space.<field> JSON)
    trials: pd.DataFrame  # one row per trial, TRIAL_COLUMNS then TrainConfig params
    curves: pd.DataFrame  # one row per trial and epoch
    raw_params: dict[str, dict[str, str]]  # trial name -> its params exactly as MLflow holds them
    param_names: list[str]
    finals: pd.DataFrame = field(default_factory=pd.DataFrame)  # the final stage's runs, one row each
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)  # ASHA's, as made: trial, rung, value, cutoff, decision
    baselines: dict[str, float] = field(default_factory=dict)  # parent metrics baseline.<what>.<split>
    exploits: pd.DataFrame = field(default_factory=pd.DataFrame)  # PBT's, as made (see reports/pbt.py)
    policy_definitions: dict[str, str] = field(default_factory=dict)  # policy -> its views as a trial recorded them
    views: list[dict] = field(default_factory=list)  # pictures of the views: {policy, strength, label, png}
    other_parents: int = 0
    refused: list[dict] = field(default_factory=list)  # records MLflow refused, set aside by the journal (on this machine)
    loaded_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def scheduler(self) -> str:
        """The trial scheduler's name (param `scheduler`; older sweeps: asha when asha.* was recorded)."""
        return self.params.get("scheduler") or ("asha" if self.asha else "fifo")

    @property
    def asha(self) -> tuple[int, int, int] | None:
        """(grace_period, reduction_factor, max_epochs), or None when the sweep used no ASHA."""
        keys = ("asha.grace_period", "asha.reduction_factor", "asha.max_epochs")
        try:
            grace, rf, max_t = (int(float(self.params[k])) for k in keys)
        except (KeyError, ValueError):
            return None
        return (grace, rf, max_t) if grace >= 1 and rf >= 2 and max_t >= 1 else None

    @property
    def finished(self) -> pd.DataFrame:
        """Trials that ran to a result a scheduler compared (completed or stopped early) with a finite objective."""
        t = self.trials
        return t[t["status"].isin(FINISHED) & np.isfinite(t["final_metric"].astype(float))]

    @property
    def grid_fields(self) -> list[str]:
        return [f for f, d in self.space.items() if d.get("type") == "grid"]

    @property
    def full_budget(self) -> pd.DataFrame:
        """Finished trials that ran the whole budget: the only ones ranked and compared."""
        t = self.finished
        return t[t["status"] == COMPLETED]

    @property
    def stopped_early(self) -> pd.DataFrame:
        t = self.finished
        return t[t["status"] != COMPLETED]

    @property
    def finals_done(self) -> pd.DataFrame:
        """Final-stage runs that completed with a finite test value."""
        f = self.finals
        if f.empty:
            return f
        return f[(f["status"] == COMPLETED) & np.isfinite(f["final_metric"].astype(float))]

    @property
    def final_per(self) -> str | None:
        """The field the final stage grouped by (final: {per: ...}), if any."""
        return _json(self.tags.get("byol_sweep.final", "{}")).get("per") or None

    def baseline(self, what: str, split: str) -> float | None:
        return self.baselines.get(f"baseline.{what}.{split}")

    def seed_baselines(self, what: str, split: str) -> dict[int, float]:
        """{seed: value} of a baseline measured on each final-stage seed's own init (empty for a sweep
        older than that, or a baseline that has no seed)."""
        prefix = f"baseline.{what}.{split}.seed_"
        return {int(k[len(prefix):]): v for k, v in self.baselines.items() if k.startswith(prefix)}

    def queries(self, split: str) -> int | None:
        """How many images the kNN metric classified on a split (its binomial noise depends on it)."""
        n = self.baselines.get(f"baseline.queries.{split}")
        return int(n) if n else None

    @property
    def wall_s(self) -> float | None:
        if self.start_ms is None:
            return None
        end = self.end_ms if (self.end_ms and not self.running) else self.loaded_ms
        return max(0.0, (end - self.start_ms) / 1000)


def sweep_parents(store: Reader, experiment: str) -> tuple[str, list[RunRecord]] | None:
    """(experiment id, the parent runs of the sweeps logged to it), or None when no such active experiment."""
    experiment_id = store.experiment_id(experiment)
    if experiment_id is None:
        return None
    return experiment_id, store.runs(experiment_id, "byol_sweep.role", "sweep")


def load_sweep(store: Reader, experiment: str) -> Sweep:
    """One experiment's sweep (its newest parent run) from a reader of reports/store.py."""
    found = sweep_parents(store, experiment)
    if found is None:
        names = sorted(store.experiment_names())
        known = ", ".join(names) if names else "none"
        raise ReportError(f"Experiment {experiment!r} not found; existing experiments: {known}.")
    experiment_id, parents = found
    if not parents:
        raise ReportError(
            f"Experiment {experiment!r} holds no sweep (no run tagged byol_sweep.role = sweep); "
            "was it written by byol-sweep run?"
        )
    parent = max(parents, key=lambda r: r.start_ms or 0)
    runs = store.runs(experiment_id, "mlflow.parentRunId", parent.run_id)
    runs.sort(key=lambda r: (r.name, r.start_ms or 0))
    children = [c for c in runs if c.tags.get("byol_sweep.role", "trial") == "trial"]
    final_runs = [c for c in runs if c.tags.get("byol_sweep.role") == "final"]

    p = parent.params
    metric, mode = p.get("metric", "knn_acc"), p.get("mode", "max")
    space = {k[len("space."):]: _json(v) for k, v in p.items() if k.startswith("space.")}
    swept = [s.strip() for s in p.get("swept", "").split(",") if s.strip()] or sorted(space)
    now_ms = int(time.time() * 1000)
    curves = _curves(store, children, experiment)
    trials, raw = _trials(children, curves, experiment, metric, mode, now_ms)
    param_names = sorted({k for r in raw.values() for k in r})
    finals = _finals(store, final_runs, experiment, metric, mode, now_ms)
    definitions = {r.tags["policy"]: r.tags["byol_sweep.policy_definition"] for r in [*final_runs, *children][::-1]
                   if "policy" in r.tags and "byol_sweep.policy_definition" in r.tags}
    return Sweep(
        experiment=experiment,
        parent_id=parent.run_id,
        name=parent.tags.get("byol_sweep.sweep_name", parent.name or experiment),
        state=parent.tags.get("byol_sweep.state", "unknown"),
        start_ms=parent.start_ms,
        end_ms=parent.end_ms,
        params=dict(p),
        tags=dict(parent.tags),
        metric=metric,
        mode=mode,
        swept=swept,
        space=space,
        trials=trials,
        curves=curves,
        raw_params=raw,
        param_names=param_names,
        finals=finals,
        decisions=_decisions(children),
        exploits=_exploits(children),
        baselines={k: v for k, v in parent.metrics.items() if k.startswith("baseline.")},
        other_parents=len(parents) - 1,
        refused=refused_records(p.get("storage"), p.get("sweep_name")),
        loaded_ms=now_ms,
        policy_definitions=definitions,
        views=_views(store, parent),
    )


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def metric_histories(store: Reader, runs: list[RunRecord], keys: list[str]) -> dict[tuple[str, str], History]:
    """(run id, key) -> that metric's history [(timestamp, step, value)], read in bulk (reports/store.py).

    A metric whose latest value is at step 1 (epoch 1, the first; docs/mlflow-layout.md) has no
    other epoch: its history is that value, which the run already holds (the later one, when epoch 1
    was logged twice). Most trials of an ASHA sweep stop there, so only the others are asked for."""
    out: dict[tuple[str, str], History] = {}
    for key in keys:
        wanted = []
        for run in runs:
            latest = run.latest.get(key)
            if latest is None:
                continue
            if latest[1] <= 1:
                out[(run.run_id, key)] = [latest]
            else:
                wanted.append(run.run_id)
        if wanted:
            out.update(store.histories(key, wanted))
    return out


def _curves(store: Reader, runs: list, experiment: str) -> pd.DataFrame:
    keys = sorted({k for run in runs for k in run.metrics if k not in FINAL_METRICS})
    histories = metric_histories(store, runs, keys)
    rows: dict[tuple[str, int], dict] = {}
    for run in runs:
        trial = _name(run)
        for key in keys:
            # a resumed trial may log an epoch twice: the later value wins
            for _, step, value in sorted(histories.get((run.run_id, key), ())):
                rows.setdefault((trial, int(step)), {"experiment": experiment, "trial": trial, "epoch": int(step)})[key] = value
    ordered = [k for k in EPOCH_METRICS if k in keys] + sorted(set(keys) - set(EPOCH_METRICS))
    columns = ["experiment", "trial", "epoch", *ordered]
    df = pd.DataFrame(list(rows.values()), columns=columns)
    return df.sort_values(["trial", "epoch"], kind="stable").reset_index(drop=True)


def _trials(runs: list, curves: pd.DataFrame, experiment: str, metric: str, mode: str, now_ms: int):
    rows, raw = [], {}
    rows_of = curves.groupby("trial", sort=False).indices if len(curves) else {}  # trial -> its rows, epoch order
    column = {k: curves[k].to_numpy(dtype=float) for k in ("epoch", metric, "loss", "z_std", "z_spread", "eff_rank",
                                                            "epoch_s") if k in curves}
    nowhere = np.zeros(0, dtype=int)
    for run in runs:
        tags, params = run.tags, run.params
        trial = _name(run)
        raw[trial] = dict(params)
        at = rows_of.get(trial, nowhere)
        final, best, best_epoch = _final_best(column, at, metric, mode)
        end = run.end_ms or now_ms
        rows.append({
            "experiment": experiment,
            "trial": trial,
            "trial_id": tags.get("byol_sweep.trial_id", ""),
            "run_id": run.run_id,
            "status": tags.get("status", RUNNING),
            "policy": tags.get("policy", params.get("policy", "")),
            "seed": tags.get("seed", params.get("seed")),
            "epochs_run": int(column["epoch"][at].max()) if len(at) else 0,
            "metric": metric,
            "final_metric": final,
            "best_metric": best,
            "best_epoch": best_epoch,
            "final_loss": _last(column, at, "loss"),
            "final_z_std": _last(column, at, "z_std"),
            "final_z_spread": _last(column, at, "z_spread"),
            "final_eff_rank": _last(column, at, "eff_rank"),
            "linear_probe_acc": run.metrics.get("linear_probe_acc", math.nan),
            "compute_s": float(np.nansum(column["epoch_s"][at])) if "epoch_s" in column else 0.0,
            "wall_s": (end - run.start_ms) / 1000 if run.start_ms else math.nan,
            "start_ms": run.start_ms,
            "resources_cpu": _number(tags.get("resources.cpu"), 0.0),
            "resources_gpu": _number(tags.get("resources.gpu"), 0.0),
            "stopped_epoch": _number(tags.get("stopped_epoch")),
            "error": tags.get("error", ""),
        })
    trials = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    trials["seed"] = typed_column(trials["seed"])
    names = sorted({k for p in raw.values() for k in p} - set(TRIAL_COLUMNS))
    if names:
        params = pd.DataFrame([{k: raw[t].get(k) for k in names} for t in trials["trial"]], columns=names)
        params = params.apply(typed_column)
        trials = pd.concat([trials, params], axis=1)
    return trials, raw


def _finals(store: Reader, runs: list, experiment: str, metric: str, mode: str, now_ms: int) -> pd.DataFrame:
    """The final stage's runs as trial rows, with the configuration each re-trains and its seed."""
    if not runs:
        return pd.DataFrame()
    curves = _curves(store, runs, experiment)
    finals, _ = _trials(runs, curves, experiment, metric, mode, now_ms)
    for key in ("rank", "group", "source_trial", "source_value"):
        finals[f"final_{key}"] = [r.tags.get(f"final.{key}", "") for r in runs]
    finals["final_rank"] = pd.to_numeric(finals["final_rank"], errors="coerce")
    finals["final_source_value"] = pd.to_numeric(finals["final_source_value"], errors="coerce")
    return finals


def _name(run: RunRecord) -> str:
    return run.name or run.run_id


def _tagged_records(runs: list, prefix: str):
    """(trial name, record) for each JSON object a scheduler left in a run's tags named prefix<n>."""
    for run in runs:
        for key, text in run.tags.items():
            if key.startswith(prefix):
                record = _json(text)
                if record:
                    yield _name(run), record


DECISION_COLUMNS = ["trial", "rung", "value", "cutoff", "decision"]


def _decisions(runs: list) -> pd.DataFrame:
    """ASHA's decisions as the scheduler recorded them (tags asha.rung_<epoch>)."""
    rows = []
    for trial, d in _tagged_records(runs, "asha.rung_"):
        cutoff = d.get("cutoff")
        rows.append({"trial": trial, "rung": int(d.get("rung", 0)), "value": float(d.get("value", math.nan)),
                     "cutoff": math.nan if cutoff is None else float(cutoff), "decision": str(d.get("decision", ""))})
    return pd.DataFrame(rows, columns=DECISION_COLUMNS).sort_values(["rung", "trial"]).reset_index(drop=True)


EXPLOIT_COLUMNS = ["trial", "epoch", "from_trial", "from_epoch", "old", "new"]


def _exploits(runs: list) -> pd.DataFrame:
    """PBT's exploits as the scheduler recorded them (tags pbt.exploit_<epoch> on the member that copied):
    at `epoch` it took `from_trial`'s checkpoint of `from_epoch` and continued with `new` values."""
    names = {r.tags.get("byol_sweep.trial_id"): _name(r) for r in runs}
    rows = []
    for trial, d in _tagged_records(runs, "pbt.exploit_"):
        rows.append({"trial": trial, "epoch": int(d.get("epoch", 0)),
                     "from_trial": names.get(d.get("from"), f"trial_{d.get('from')}"),
                     "from_epoch": int(d.get("from_epoch", 0)), "old": d.get("old") or {}, "new": d.get("new") or {}})
    return pd.DataFrame(rows, columns=EXPLOIT_COLUMNS).sort_values(["epoch", "trial"]).reset_index(drop=True)


def _final_best(column: dict, at: np.ndarray, metric: str, mode: str) -> tuple[float, float, float]:
    """Of one trial's rows `at` of the curves: (the objective: the value at the last epoch; the best
    value over epochs and its epoch, for information only)."""
    if metric not in column or not len(at):
        return math.nan, math.nan, math.nan
    values, epochs = column[metric][at], column["epoch"][at]
    i = best_index(values, mode)
    if i is None:
        return objective(values), math.nan, math.nan
    return objective(values), float(values[i]), float(epochs[i])


def _last(column: dict, at: np.ndarray, key: str) -> float:
    """One trial's value of key at its last row of the curves."""
    if key not in column or not len(at):
        return math.nan
    return float(column[key][at[-1]])


def _number(text, default=math.nan) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


def typed_column(col: pd.Series) -> pd.Series:
    """MLflow strings -> numbers or booleans when every value of the column is one."""
    values = col.dropna()
    if len(values) and values.isin(["True", "False"]).all():
        return col.map({"True": True, "False": False})
    numbers = pd.to_numeric(col, errors="coerce")
    if len(values) and numbers[col.notna()].notna().all():
        return numbers
    return col


def _views(store: Reader, parent: RunRecord) -> list[dict]:
    """The pictures of the policies' views the driver logged (tag byol_sweep.views lists them)."""
    try:
        entries = json.loads(parent.tags.get("byol_sweep.views", "[]"))
    except ValueError:
        return []
    return [{**e, "png": store.artifact(parent.run_id, str(e.get("path", "")))}
            for e in entries if isinstance(entries, list) and isinstance(e, dict)]
