"""The MLflow store: its URI made absolute (a Ray worker's cwd is a temp folder), its secrets masked,
a client for it, a lock for a local SQLite file, and a check that it answers before a sweep starts."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sweep.errors import TrackingError
from sweep.tracking.secrets import mask_secrets


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
def fail_fast_http():
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
    from mlflow.tracking import MlflowClient  # heavy: `validate`, `sync` with nothing to send and workers skip it

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
        with fail_fast_http(), store_lock(uri):
            client_for(uri).search_experiments(max_results=1)
    except Exception as err:
        if local:
            raise TrackingError(f"MLflow store {mask_uri(uri)} cannot be opened: {_cause(err)}") from None
        raise TrackingError(f"MLflow tracking server {mask_uri(uri)} is unreachable or refused the request: "
                            f"{_cause(err)}") from None
