"""`byol-sweep status NAME`: the console's view of a sweep (sweep/progress.py), from another terminal
or after the sweep, read from its folder (sweep.json, whether a driver holds its journal) and from
MLflow (its parent run and their child runs). Read-only: it creates no MLflow store and no file."""
from __future__ import annotations

import fcntl
import json
import sys
import time

from sweep.errors import TrackingError
from sweep.progress import StageView, TrialRow, sig
from sweep.space import parse_space
from sweep.space.yaml_input import read_yaml
from sweep.state import chosen_tracking_uri, local_state_dir, read_state
from sweep.tracking.journal import lock_path
from sweep.tracking.store import client_for, fail_fast_http, local_store_path, mask_uri
from sweep.tracking.writers import journal_path
from vocabulary import COMPLETED, PENDING, RUNNING


def driver_holds(folder) -> bool:
    """Does a process (the sweep's driver, or a `sync`) hold the sweep's journal now? Its lock file is
    only read, never made."""
    try:
        handle = open(lock_path(journal_path(folder)))
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def store_uri(state: dict, name: str, tracking_uri: str | None) -> str:
    """The sweep's tracking URI (--tracking-uri, $MLFLOW_TRACKING_URI, else sweep.json's), refused when
    a local store is not there: status never makes one."""
    uri = chosen_tracking_uri(state, name, tracking_uri)
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise TrackingError(f"there is no MLflow store at {path}; give the --tracking-uri sweep {name} logs to "
                            f"({state['tracking_uri']})")
    return uri


def _rows(client, runs, metric: str, max_epochs: int) -> list[TrialRow]:
    """A row per run: its status tag, its last epoch (the budget when it completed, its `stopped_epoch`
    when one is recorded, else the last step of its metric) and its metric there."""
    rows = []
    for run in sorted(runs, key=lambda r: r.info.run_name or ""):
        tags = run.data.tags
        status = tags.get("status", RUNNING)
        if status == COMPLETED:
            epoch = max_epochs
        elif "stopped_epoch" in tags:
            epoch = int(tags["stopped_epoch"])
        else:
            epoch = max((m.step for m in client.get_metric_history(run.info.run_id, metric)), default=0)
        rows.append(TrialRow(run.info.run_name, status, epoch, run.data.metrics.get(metric)))
    return rows


def _eta(view: StageView, runs, concurrency: int) -> float | None:
    """The epochs left times the mean latest epoch time of the stage's runs, over the trials run at once."""
    times = [r.data.metrics["epoch_s"] for r in runs if "epoch_s" in r.data.metrics]
    return view.epochs_left * sum(times) / len(times) / max(1, concurrency) if times else None


def show_status(name: str, storage: str = "byol-runs", tracking_uri: str | None = None, out=None) -> int:
    """Print a sweep's view: whether its driver runs, then per stage its progress over its epoch budget
    and each trial's status, epoch and latest metric. Returns the exit code (0)."""
    from mlflow.exceptions import MlflowException  # MLflow's own error type: only here, as the store is read

    out = out or sys.stdout
    state = read_state(name, storage)
    spec = parse_space(read_yaml(state["space_text"]), state["space_source"], state["space_text"])
    spec.num_samples = state["num_samples"]
    uri = store_uri(state, name, tracking_uri)
    try:
        with fail_fast_http():
            client = client_for(uri)
            parent = client.get_run(state["parent_run_id"])
            children = client.search_runs([state["experiment_id"]],
                                          f"tags.`mlflow.parentRunId` = '{state['parent_run_id']}'", max_results=50000)
            stages = {role: [r for r in children if r.data.tags.get("byol_sweep.role") == role]
                      for role in ("trial", "final")}
            rows = {role: _rows(client, runs, spec.metric, spec.max_epochs) for role, runs in stages.items()}
    except MlflowException as err:
        raise TrackingError(f"MLflow store {mask_uri(uri)} could not give sweep {name}'s runs: "
                            f"{str(err).splitlines()[0][:300]}") from None
    running = driver_holds(local_state_dir(storage, name))
    tag = parent.data.tags.get("byol_sweep.state", "")
    if running:
        driver = "its driver is running"
    elif tag == "running":
        driver = f"its driver is not running (it stopped without ending the sweep: `byol-sweep resume {name}`)"
    else:
        driver = f"its driver is not running; sweep {tag or 'state unknown'}"
    print(f"sweep {name} ({time.strftime('%H:%M:%S')}): {driver}; MLflow {mask_uri(uri)}, experiment "
          f"{state['experiment']}", file=out)
    search = StageView("search", rows["trial"], spec.total_trials, spec.max_epochs, spec.metric,
                       bounded=spec.scheduler.stops_early)
    best = parent.data.tags.get("byol_sweep.best_trial_id")
    if best and "byol_sweep.best_metric" in parent.data.tags:
        search.best = f"best {spec.metric} {sig(float(parent.data.tags['byol_sweep.best_metric']))} (trial_{best})"
    views = [(search, stages["trial"])]
    final = json.loads(parent.data.tags.get("byol_sweep.final", "null"))
    if final is not None:
        chosen = len(json.loads(parent.data.tags.get("byol_sweep.final_selection", "[]")))
        views.append((StageView("final stage", rows["final"], chosen * final["seeds"], spec.max_epochs, spec.metric,
                                bounded=False), stages["final"]))
    for view, runs in views:
        if running:
            view.eta_s = _eta(view, runs, state["concurrency"])
        print(view.line(), file=out)
        for line in view.trial_lines():
            print(f"  {line}", file=out)
    if not running and any(row.status in (RUNNING, PENDING) for view, _ in views for row in view.rows):
        print(f"(a trial that reads running stopped with its driver; `byol-sweep resume {name}` continues it)", file=out)
    out.flush()
    return 0
