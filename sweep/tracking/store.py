"""The MLflow store: its URI made absolute (a Ray worker's cwd is a temp folder), its secrets masked,
a client for it, a lock for a local SQLite file, a check that it answers before a sweep starts, and a
refusal of a local file that is not an MLflow store (MLflow would write its tables into it)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

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
def temporary_environment(values: dict[str, str]):
    """These environment variables set for the block, each put back as it was after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fail_fast_http():
    """MLflow retries an unreachable server for minutes by default; a connectivity check must not."""
    return temporary_environment({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})


def client_for(uri: str):
    """An MlflowClient for the store; never one that would write MLflow's tables into a file that is
    not an MLflow store (refuse_foreign_file)."""
    refuse_foreign_file(uri)
    from mlflow.tracking import MlflowClient  # heavy: `validate`, `sync` with nothing to send and workers skip it

    return MlflowClient(tracking_uri=uri)


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
MLFLOW_TABLES = ("alembic_version", "experiments")  # an SQLite database with both is an MLflow store


def local_store_path(uri: str) -> Path | None:
    """The file or folder a local tracking URI names (sqlite:///<file>, file:<folder>); None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None


def _sqlite_tables(path: Path) -> set[str] | None:
    """The tables of an SQLite file, read-only (None when SQLite cannot read them: MLflow will say why)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True,
                                                timeout=10)) as db:
            return {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error:
        return None


def not_a_store(uri: str) -> str | None:
    """Why the existing file a local tracking URI points at is not an MLflow store, or None: it is one,
    nothing is there yet (MLflow makes the store), or the store is a server.

    SQLite: a file is an MLflow store when its first 16 bytes are SQLite's header and it has MLflow's
    tables alembic_version and experiments. An empty file is refused too: MLflow would lose no byte
    filling it, but it is a file someone made (a placeholder, a notes file not yet written, a typo for
    another path), and MLflow makes its own file where there is none, so the refusal costs only
    deleting it. A file store (file:) is a folder, so an existing file there is never one."""
    path = local_store_path(uri)
    if path is None or not os.path.lexists(path):
        return None
    if uri.startswith("file:"):
        return None if path.is_dir() else "a file, and an MLflow file store is a folder"
    if path.is_dir():
        return "a folder"
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError:
        return None  # unreadable: MLflow cannot write it either, and says why
    if not header:
        return "an empty file"
    if header != SQLITE_HEADER:
        return "not an SQLite database"
    tables = _sqlite_tables(path)
    missing = [] if tables is None else [table for table in MLFLOW_TABLES if table not in tables]
    if missing:
        return f"an SQLite database without MLflow's table{'s' if len(missing) > 1 else ''} {' and '.join(missing)}"
    return None


def refuse_foreign_file(uri: str) -> None:
    """Raise TrackingError when a local tracking URI points at an existing file that is not an MLflow
    store (not_a_store): MLflow would otherwise write its tables into it. The file is not touched."""
    why = not_a_store(uri)
    if why:
        raise TrackingError(f"{local_store_path(uri)} is not an MLflow store ({why}) and was left untouched; give a "
                            "tracking URI of an MLflow store or of a file that does not exist yet, e.g. "
                            "sqlite:///mlflow.db")


def _lock_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):] + ".lock")


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock (fcntl) on a local SQLite store, held while it is created or migrated and
    while an experiment is created: two sweeps starting at once on a new mlflow.db then take turns.
    Other stores (a server) serialise on their own side."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = _lock_path(uri)
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


def check_stored(uri: str, what: str) -> None:
    """check_store for a command that only reads (what it reads, for the message): a local store that
    is not there is refused, never created."""
    path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if path is not None and not path.is_file():
        raise TrackingError(f"there is no MLflow store at {path} to read {what} from; give --tracking-uri of the "
                            "store it was logged to (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    check_store(uri)


def check_store(uri: str) -> None:
    """Raise TrackingError unless the tracking store answers and can be written, and unless a local
    file it names is an MLflow store or absent (refuse_foreign_file)."""
    local = uri.startswith("sqlite:///")
    if local:
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow store {mask_uri(uri)} cannot be created: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow store {mask_uri(uri)} is not writable: no write permission on {folder}")
    if not local or not _lock_path(uri).exists():
        # no sweep is creating this store (one holds its lock file while it does): a foreign file is
        # refused now, without a lock file made beside it
        refuse_foreign_file(uri)
    try:
        with fail_fast_http(), store_lock(uri):
            client_for(uri).search_experiments(max_results=1)  # under the lock, a store being created is complete
    except TrackingError:
        raise
    except Exception as err:
        if local:
            raise TrackingError(f"MLflow store {mask_uri(uri)} cannot be opened: {_cause(err)}") from None
        raise TrackingError(f"MLflow tracking server {mask_uri(uri)} is unreachable or refused the request: "
                            f"{_cause(err)}") from None
