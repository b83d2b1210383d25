"""MLflow from the Tune driver: one parent run per sweep, one child run per trial, exactly once.

The layout is documented in docs/mlflow-layout.md; reports/ reads exactly that.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vocabulary import INTERRUPTED, RUNNING

from .secrets import mask_secrets
from .space import SweepSpec


SEARCH, FINAL = "search", "final"  # the two stages of a sweep


class TrackingError(RuntimeError):
    """The MLflow store cannot be used; the message says which and why."""


def mask_uri(uri: str) -> str:
    """The URI with any password or token replaced by ***."""
    return mask_secrets(uri)


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; local paths made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            path = str(Path(path).resolve())
        return f"sqlite:///{path}"
    if uri.startswith("file:"):
        return Path(uri[len("file:"):]).resolve().as_uri()
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


@contextlib.contextmanager
def _fail_fast_http():
    """MLflow retries an unreachable server for minutes by default; a connectivity check must not."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock (fcntl) on a local SQLite store, held while it is created or migrated and
    while an experiment is created: two sweeps starting at once on a new mlflow.db then take turns.
    Other stores (a server) serialise on their own side."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///"):] + ".lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cause(err: BaseException) -> str:
    """The innermost error's last line: what really went wrong (e.g. SQLite's `duplicate column
    name`), not the wrapper's summary."""
    causes = [err]
    while len(causes) < 10:
        nxt = causes[-1].__cause__ or causes[-1].__context__
        if nxt is None or nxt in causes:
            break
        causes.append(nxt)
    noise = ("(Background on this error", "[SQL:", "[parameters:")  # SQLAlchemy's trailer lines
    for e in reversed(causes):
        lines = [line.strip() for line in str(e).strip().splitlines()
                 if line.strip() and not line.strip().startswith(noise)]
        if lines:
            return mask_secrets(lines[-1][:300])
    return type(err).__name__


def check_store(uri: str) -> None:
    """Raise TrackingError unless the tracking store answers and can be written."""
    local = uri.startswith("sqlite:///")
    if local:
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow store {mask_uri(uri)} cannot be created: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow store {mask_uri(uri)} is not writable: no write permission on {folder}")
    try:
        with _fail_fast_http(), store_lock(uri):
            client_for(uri).search_experiments(max_results=1)
    except Exception as err:
        if local:
            raise TrackingError(f"MLflow store {mask_uri(uri)} cannot be opened: {_cause(err)}") from None
        raise TrackingError(f"MLflow tracking server {mask_uri(uri)} is unreachable or refused the request: "
                            f"{_cause(err)}") from None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)


def experiment_for(uri: str, experiment: str) -> str:
    """The id of the named MLflow experiment, created if it is not there (artifacts of a local store
    beside its database, in mlartifacts/)."""
    client = client_for(uri)
    with store_lock(uri):
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if uri.startswith("sqlite:///"):
                artifact_location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
            try:
                client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # another driver (on a server) created it first
                if client.get_experiment_by_name(experiment) is None:
                    raise
            exp = client.get_experiment_by_name(experiment)
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {experiment!r} was deleted; restore it with `mlflow experiments "
                            f"restore --experiment-id {exp.experiment_id}` or name another with --experiment")
    return exp.experiment_id


def start_sweep(uri: str, experiment: str, spec: SweepSpec, sweep_name: str, extra_params: dict[str, Any]) -> str:
    """Create (or find, for a resumed sweep) the parent run; returns its id."""
    from mlflow.entities import Param

    client = client_for(uri)
    experiment_id = experiment_for(uri, experiment)
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`byol_sweep.role` = 'sweep' and tags.`byol_sweep.sweep_name` = '{sweep_name}'",
        max_results=1,
    )
    if existing:
        run_id = existing[0].info.run_id
        client.set_tag(run_id, "byol_sweep.state", "running")
        return run_id
    tags = {
        "byol_sweep.role": "sweep",
        "byol_sweep.sweep_name": sweep_name,
        "byol_sweep.state": "running",
        "byol_sweep.version": _version("byol-sweep"),
        "byol_sweep.ray_version": _version("ray"),
        "byol_sweep.torch_version": _version("torch"),
        "byol_sweep.mlflow_version": _version("mlflow"),
        "byol_sweep.command": mask_secrets(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),
        "byol_sweep.host": platform.node(),
    }
    commit = _git_commit()
    if commit:
        tags["byol_sweep.git_commit"] = commit
    run = client.create_run(experiment_id, run_name=sweep_name, tags=tags)
    params = {
        "metric": spec.metric,
        "mode": spec.mode,
        "num_samples": spec.num_samples,
        "space_file": Path(spec.source).name,
        "swept": ",".join(spec.swept),
        **{f"space.{k}": d.to_json() for k, d in spec.search.items()},
        **{f"space.{k}": json.dumps({"type": "grid", "values": v}) for k, v in spec.grid.items()},
        **{f"base.{k}": _param_value(v) for k, v in spec.base.items()},
        **spec.tracking_params(),  # search, scheduler, scheduler.<key>, and each entry's own (asha.*, optuna.*)
        **extra_params,
    }
    client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
    if spec.text:
        client.log_text(run.info.run_id, spec.text, "search_space.yaml")
    return run.info.run_id


# parent run id -> tracking URI, set by the driver that runs or resumes the sweep
DRIVER_TRACKING_URI: dict[str, str] = {}
# ---- the journal: every write of the driver goes to <sweep folder>/mlflow-journal.jsonl first ----

JOURNAL_FILE = "mlflow-journal.jsonl"
# what the sender's client may wait for one request; MLflow's defaults retry an absent server for minutes
SENDER_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# parent run id -> the sweep's journal writer in this driver (one journal, one sender thread per sweep)
_WRITERS: dict[str, Any] = {}
_SAVED_ENV: dict[str, str | None] = {}


def journal_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / JOURNAL_FILE


def open_journal(uri: str, parent_run_id: str, folder: str | os.PathLike, sync_command: str = "",
                 new: bool = False):
    """Start journalling the sweep of parent_run_id in folder: send what an earlier driver left
    (before anything else is written), then run a sender thread. new: a sweep just started, whose
    journal is the whole record; a resumed sweep that predates journals has only part of it there
    (reads then fall back to MLflow)."""
    from .journal import Journal, JournalledWriter

    if parent_run_id in _WRITERS:
        return _WRITERS[parent_run_id]
    journal = Journal(journal_path(folder))
    journal.hold()
    partial = journal.path.with_name(journal.path.name + ".partial")
    if not new and not journal.existed:
        partial.touch()
    journal.complete = not partial.exists()
    for key, value in SENDER_HTTP.items():  # the user's own settings win
        if key not in os.environ:
            _SAVED_ENV[key] = None
            os.environ[key] = value
    told = lambda message: print(f"MLflow {mask_uri(uri)}: {message}", file=sys.stderr, flush=True)  # noqa: E731
    before = journal.pending_count()
    if before and JournalledWriter(journal, lambda: client_for(uri), told).flush():
        print(f"sent the {before} MLflow records an earlier driver left in {journal.path}", flush=True)
    writer = JournalledWriter(journal, lambda: client_for(uri), told, background=True)
    writer.sync_command = sync_command
    _WRITERS[parent_run_id] = writer
    return writer


def journal_writer(parent_run_id: str):
    return _WRITERS.get(parent_run_id)


def wait_sent(parent_run_id: str, timeout: float) -> int:
    """Wait up to timeout seconds for the sweep's journal to be sent; returns how many records are left."""
    writer = _WRITERS.get(parent_run_id)
    return writer.drain(timeout) if writer is not None else 0


def close_journal(parent_run_id: str, timeout: float | None = None) -> int:
    """The driver ends: wait a bounded time (BYOL_SWEEP_DRAIN_S, default 60 s) for the journal to be
    sent, say what is left and how it will be sent, stop the sender. Returns the records left."""
    writer = _WRITERS.pop(parent_run_id, None)
    if writer is None:
        return 0
    if timeout is None:
        timeout = float(os.environ.get("BYOL_SWEEP_DRAIN_S", "60"))
    left = writer.journal.pending_count()
    if left:
        print(f"sending the last {left} MLflow records (waiting up to {timeout:g} s)", flush=True)
        left = writer.drain(timeout)
    writer.close()
    if not _WRITERS:
        for key, value in _SAVED_ENV.items():
            if value is None:
                os.environ.pop(key, None)
        _SAVED_ENV.clear()
    if left:
        print(f"{left} MLflow records could not be sent (the tracking server does not answer); they wait in "
              f"{writer.journal.path} and are sent by `{writer.sync_command or 'byol-sweep sync NAME'}` once the server "
              "is back", file=sys.stderr, flush=True)
    return left


def sync_journal(uri: str, folder: str | os.PathLike) -> tuple[int, int]:
    """Send what a sweep's journal holds and MLflow has not got (`byol-sweep sync`, `report`);
    returns (sent, left). JournalBusy if the sweep's driver is running (it sends them itself)."""
    from .journal import Journal, JournalledWriter

    path = journal_path(folder)
    if not path.exists():
        return 0, 0
    journal = Journal(path)
    journal.hold(wait=False)
    try:
        if not journal.pending_count():
            return 0, 0  # nothing to send: MLflow is not even imported
        before = journal.sent
        with _fail_fast_http():
            JournalledWriter(journal, lambda: client_for(uri), lambda message: None).flush()
        return journal.sent - before, journal.pending_count()
    finally:
        journal.release()


def write(uri: str | None, parent_run_id: str, op: str, **args: Any) -> str | None:
    """One MLflow write of the sweep of parent_run_id: through its journal when the driver keeps
    one, else straight to MLflow."""
    writer = _WRITERS.get(parent_run_id)
    if writer is not None:
        return writer.write(op, **args)
    from .journal import placeholder_id, send

    if op == "create_run":
        args["placeholder"] = placeholder_id()
    uri = uri or DRIVER_TRACKING_URI.get(parent_run_id)
    if uri is None:
        raise TrackingError(f"no tracking URI is known for the sweep of parent run {parent_run_id}")
    return send(client_for(uri), {"op": op, "args": args}, {})


def _metric(key: str, value: float, step: int, timestamp: int | None = None) -> dict:
    return {"key": key, "value": float(value), "step": int(step),
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp}


def end_sweep(uri: str, parent_run_id: str, state: str) -> None:
    """Mark the sweep `finished` (every trial and final-stage run ended) or `interrupted`."""
    writer = journal_writer(parent_run_id)
    if writer is not None and writer.journal.complete:
        now = int(time.time() * 1000)
        if state == "interrupted":  # runs the callbacks could not end (the driver died or raised)
            for run_id in writer.state.runs(**{"mlflow.parentRunId": parent_run_id, "status": RUNNING}):
                writer.write("set_tag", run_id=run_id, key="status", value=INTERRUPTED)
                writer.write("set_terminated", run_id=run_id, status="KILLED", end_time=now)
        writer.write("set_tag", run_id=parent_run_id, key="byol_sweep.state", value=state)
        if state == "finished":
            writer.write("set_terminated", run_id=parent_run_id, status="FINISHED", end_time=now)
        return
    client = client_for(uri)
    if state == "interrupted":  # runs the callbacks could not end (the driver died or raised)
        parent = client.get_run(parent_run_id)
        for run in client.search_runs([parent.info.experiment_id], max_results=10000, filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.status = '{RUNNING}'")):
            client.set_tag(run.info.run_id, "status", INTERRUPTED)
            client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(parent_run_id, "byol_sweep.state", state)
    if state == "finished":
        client.set_terminated(parent_run_id, "FINISHED")


def log_baselines(uri: str, parent_run_id: str, split: str, baselines: dict[str, float]) -> None:
    """The baselines (trainer.baselines.baseline_accuracies) of a split, on the parent run."""
    now = int(time.time() * 1000)
    write(uri, parent_run_id, "log_batch", run_id=parent_run_id,
          metrics=[_metric(f"baseline.{name}.{split}", value, 0, now) for name, value in baselines.items()])
