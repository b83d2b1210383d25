"""MLflow -> DataFrames: read one sweep exactly as docs/mlflow-layout.md lays it out."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from reports.errors import ReportError
from vocabulary import COMPLETED, EPOCH_METRICS, FINAL_METRICS, FINISHED, RUNNING, best_index, objective
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
    other_parents: int = 0
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


def open_client(tracking_uri: str | None) -> MlflowClient:
    """A client on an existing store; never creates an empty store where the user pointed by mistake."""
    if not tracking_uri:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default
    if tracking_uri:
        parsed = urlparse(tracking_uri)
        path = None
        if parsed.scheme == "sqlite":
            path = Path(tracking_uri.split("sqlite:///", 1)[-1]) if "sqlite:///" in tracking_uri else None
        elif parsed.scheme in ("", "file"):
            path = Path(parsed.path if parsed.scheme == "file" else tracking_uri)
        if path is not None and not path.exists():
            raise ReportError(f"No MLflow store at {tracking_uri}: {path} does not exist.")
        if parsed.scheme == "sqlite" and path is not None and not _is_mlflow_sqlite(path):
            raise ReportError(f"{path} is not an MLflow store (it has no MLflow tables); give the tracking URI "
                              "the sweep logged to, e.g. sqlite:///mlflow.db")
    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as err:  # an unknown scheme, a malformed URI
        raise ReportError(f"Cannot open the MLflow store at {tracking_uri}: {str(err).strip().splitlines()[0]}") from None


def _is_mlflow_sqlite(path: Path) -> bool:
    """Read-only look: MLflow would otherwise create its tables inside any SQLite file it is given."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError:
        return False
    return {"experiments", "runs"} <= tables


def load_sweep(client: MlflowClient, experiment: str) -> Sweep:
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        names = sorted(e.name for e in _all_experiments(client))
        known = ", ".join(names) if names else "none"
        raise ReportError(f"Experiment {experiment!r} not found; existing experiments: {known}.")
    parents = _search(client, exp.experiment_id, "tags.`byol_sweep.role` = 'sweep'")
    if not parents:
        raise ReportError(
            f"Experiment {experiment!r} holds no sweep (no run tagged byol_sweep.role = sweep); "
            "was it written by byol-sweep run?"
        )
    parent = max(parents, key=lambda r: r.info.start_time or 0)
    runs = _search(client, exp.experiment_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    runs.sort(key=lambda r: (r.info.run_name or "", r.info.start_time or 0))
    children = [c for c in runs if c.data.tags.get("byol_sweep.role", "trial") == "trial"]
    final_runs = [c for c in runs if c.data.tags.get("byol_sweep.role") == "final"]

    p = parent.data.params
    metric, mode = p.get("metric", "knn_acc"), p.get("mode", "max")
    space = {k[len("space."):]: _json(v) for k, v in p.items() if k.startswith("space.")}
    swept = [s.strip() for s in p.get("swept", "").split(",") if s.strip()] or sorted(space)
    now_ms = int(time.time() * 1000)
    curves = _curves(client, children, experiment)
    trials, raw = _trials(children, curves, experiment, metric, mode, now_ms)
    param_names = sorted({k for r in raw.values() for k in r})
    finals = _finals(client, final_runs, experiment, metric, mode, now_ms)
    return Sweep(
        experiment=experiment,
        parent_id=parent.info.run_id,
        name=parent.data.tags.get("byol_sweep.sweep_name", parent.info.run_name or experiment),
        state=parent.data.tags.get("byol_sweep.state", "unknown"),
        start_ms=parent.info.start_time,
        end_ms=parent.info.end_time,
        params=dict(p),
        tags=dict(parent.data.tags),
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
        baselines={k: v for k, v in parent.data.metrics.items() if k.startswith("baseline.")},
        other_parents=len(parents) - 1,
        loaded_ms=now_ms,
    )


def _all_experiments(client: MlflowClient) -> list:
    out, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY, 1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


RUN_IDS_PER_CALL = 100  # the tracking server's limit for one bulk-history request
SERVER_MAX_RESULTS = 25_000
SERVER_THREADS = 4  # bulk-history requests in flight at once: a server answers them on its own workers


def metric_histories(client: MlflowClient, runs: list, keys: list[str]) -> dict[tuple[str, str], list]:
    """(run id, key) -> that metric's history [(timestamp, step, value)], read in bulk: one query
    per metric for a SQL store, one request per metric and 100 runs for a tracking server (several
    in flight at once), one call per run and metric only for a store that has neither.

    A metric whose latest value is at step 1 (epoch 1, the first; docs/mlflow-layout.md) has no
    other epoch: its history is that value, which the run already holds (the later one, when epoch 1
    was logged twice). Most trials of an ASHA sweep stop there, so only the others are asked for."""
    out: dict[tuple[str, str], list] = {}
    asks: list[tuple[str, list[str]]] = []
    latest_of = [(run.info.run_id, _latest(run)) for run in runs]
    for key in keys:
        wanted = []
        for run_id, latest_metrics in latest_of:
            latest = latest_metrics.get(key)
            if latest is None:
                continue
            if latest.step <= 1:
                out[(run_id, key)] = [(latest.timestamp, latest.step, latest.value)]
            else:
                wanted.append(run_id)
        if wanted:
            asks.append((key, wanted))
    if not asks:
        return out
    store = client._tracking_client.store
    if hasattr(store, "get_metric_history_bulk"):  # SQLAlchemy: one query for all runs
        for key, wanted in asks:
            for i in range(0, len(wanted), 500):
                for m in store.get_metric_history_bulk(wanted[i : i + 500], key, max_results=10**9):
                    out.setdefault((m.run_id, key), []).append((m.timestamp, m.step, m.value))
    elif hasattr(store, "get_host_creds"):  # a tracking server
        from concurrent.futures import ThreadPoolExecutor

        creds = store.get_host_creds()
        chunks = [(key, wanted[i : i + RUN_IDS_PER_CALL]) for key, wanted in asks
                  for i in range(0, len(wanted), RUN_IDS_PER_CALL)]
        with ThreadPoolExecutor(SERVER_THREADS) as pool:
            for part in pool.map(lambda chunk: _bulk_from_server(creds, *chunk), chunks):
                for item, history in part.items():
                    out.setdefault(item, []).extend(history)
    else:
        for key, wanted in asks:
            for run_id in wanted:
                out[(run_id, key)] = [(m.timestamp, m.step, m.value) for m in client.get_metric_history(run_id, key)]
    return out


def _latest(run) -> dict:
    """key -> the run's latest value of that metric as MLflow holds it (a Metric: step, timestamp, value)."""
    return {m.key: m for m in run.data._metric_objs}  # RunData keeps the Metric objects only privately


def _bulk_from_server(creds, key: str, run_ids: list[str]) -> dict[tuple[str, str], list]:
    from mlflow.utils.rest_utils import http_request

    response = http_request(creds, "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                            params={"run_id": run_ids, "metric_key": key, "max_results": SERVER_MAX_RESULTS})
    response.raise_for_status()
    metrics = response.json().get("metrics", [])
    if len(metrics) >= SERVER_MAX_RESULTS and len(run_ids) > 1:  # the answer was cut: ask in halves
        half = len(run_ids) // 2
        return _bulk_from_server(creds, key, run_ids[:half]) | _bulk_from_server(creds, key, run_ids[half:])
    out: dict[tuple[str, str], list] = {}
    for m in metrics:
        out.setdefault((m["run_id"], key), []).append((int(m["timestamp"]), int(m["step"]), float(m["value"])))
    return out


def _curves(client: MlflowClient, runs: list, experiment: str) -> pd.DataFrame:
    keys = sorted({k for run in runs for k in run.data.metrics if k not in FINAL_METRICS})
    histories = metric_histories(client, runs, keys)
    rows: dict[tuple[str, int], dict] = {}
    for run in runs:
        trial = run.info.run_name or run.info.run_id
        for key in keys:
            # a resumed trial may log an epoch twice: the later value wins
            for _, step, value in sorted(histories.get((run.info.run_id, key), ())):
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
        tags, params = run.data.tags, run.data.params
        trial = run.info.run_name or run.info.run_id
        raw[trial] = dict(params)
        at = rows_of.get(trial, nowhere)
        final, best, best_epoch = _final_best(column, at, metric, mode)
        end = run.info.end_time or now_ms
        rows.append({
            "experiment": experiment,
            "trial": trial,
            "trial_id": tags.get("byol_sweep.trial_id", ""),
            "run_id": run.info.run_id,
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
            "linear_probe_acc": run.data.metrics.get("linear_probe_acc", math.nan),
            "compute_s": float(np.nansum(column["epoch_s"][at])) if "epoch_s" in column else 0.0,
            "wall_s": (end - run.info.start_time) / 1000 if run.info.start_time else math.nan,
            "start_ms": run.info.start_time,
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


def _finals(client: MlflowClient, runs: list, experiment: str, metric: str, mode: str, now_ms: int) -> pd.DataFrame:
    """The final stage's runs as trial rows, with the configuration each re-trains and its seed."""
    if not runs:
        return pd.DataFrame()
    curves = _curves(client, runs, experiment)
    finals, _ = _trials(runs, curves, experiment, metric, mode, now_ms)
    for key in ("rank", "group", "source_trial", "source_value"):
        finals[f"final_{key}"] = [r.data.tags.get(f"final.{key}", "") for r in runs]
    finals["final_rank"] = pd.to_numeric(finals["final_rank"], errors="coerce")
    finals["final_source_value"] = pd.to_numeric(finals["final_source_value"], errors="coerce")
    return finals


def _tagged_records(runs: list, prefix: str):
    """(trial name, record) for each JSON object a scheduler left in a run's tags named prefix<n>."""
    for run in runs:
        for key, text in run.data.tags.items():
            if key.startswith(prefix):
                record = _json(text)
                if record:
                    yield run.info.run_name or run.info.run_id, record


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
    names = {r.data.tags.get("byol_sweep.trial_id"): r.info.run_name or r.info.run_id for r in runs}
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
