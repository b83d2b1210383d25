"""Every MLflow write of a sweep's driver goes through the sweep's journal
(<sweep folder>/mlflow-journal.jsonl, sweep/tracking/journal.py) and a sender thread: a server that
goes away loses nothing and stalls no trial. `sync` sends what a driver left.

Tune pickles its callbacks with the sweep's state and restores them on `resume` without their
secrets, so the writers and the tracking URI are found here by the sweep's parent run id."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from sweep.errors import TrackingError
from sweep.tracking.journal import Journal, JournalReadOnly, placeholder_id
from sweep.tracking.sender import JournalledWriter, send
from sweep.tracking.store import client_for, fail_fast_http, mask_uri
from vocabulary.journal_files import JOURNAL_FILE

DRAIN_ENV = "BYOL_SWEEP_DRAIN_S"  # how long an ending driver waits for its records to be sent


def drain_seconds() -> float:
    """BYOL_SWEEP_DRAIN_S, default 60 s: how long a driver waits for MLflow to take any of its pending records."""
    return float(os.environ.get(DRAIN_ENV, "60"))


# parent run id -> tracking URI, set by the driver that runs or resumes the sweep
DRIVER_TRACKING_URI: dict[str, str] = {}

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
    if parent_run_id in _WRITERS:
        return _WRITERS[parent_run_id]
    journal = Journal(journal_path(folder))
    if not journal.writable:
        raise TrackingError(f"{journal.path.parent} is not writable (read-only storage?), and this command writes there "
                            "(the MLflow journal, checkpoints, state); run it where that folder is writable, or on a "
                            "writable copy of it")
    journal.hold()
    partial = journal.path.with_name(journal.path.name + ".partial")
    if not new and not journal.existed:
        partial.touch()
    journal.complete = not partial.exists()
    for key, value in SENDER_HTTP.items():  # the user's own settings win
        if key not in os.environ:
            _SAVED_ENV[key] = None
            os.environ[key] = value
    told = lambda message: print(mask_uri(f"MLflow {uri}: {message}"), file=sys.stderr, flush=True)  # noqa: E731  # a quoted error may hold the URI's token
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
    """The driver ends: wait for the journal to be sent while MLflow takes its records, up to
    BYOL_SWEEP_DRAIN_S (default 60 s) in which it takes none, say what is left and how it will be sent,
    stop the sender. Returns the records left."""
    writer = _WRITERS.pop(parent_run_id, None)
    if writer is None:
        return 0
    if timeout is None:
        timeout = drain_seconds()
    left = writer.journal.pending_count()
    if left:
        print(f"sending the last {left:,} MLflow records (while MLflow takes them; giving up after {timeout:g} s in "
              "which it takes none)", flush=True)
        left = writer.drain(timeout, progress=lambda n: print(f"  {n:,} records left to send", flush=True))
    writer.close()
    if not _WRITERS:
        for key, value in _SAVED_ENV.items():
            if value is None:
                os.environ.pop(key, None)
        _SAVED_ENV.clear()
    if left:
        why = ("the tracking server does not answer" if writer.offline else
               f"MLflow answers, but took none of them in the last {timeout:g} s allowed (BYOL_SWEEP_DRAIN_S)")
        print(f"{left} MLflow records could not be sent ({why}); they wait in {writer.journal.path} and are sent by "
              f"`{writer.sync_command or 'byol-sweep sync NAME'}`" + (" once the server is back" if writer.offline else ""),
              file=sys.stderr, flush=True)
    return left


def sync_journal(uri: str, folder: str | os.PathLike) -> tuple[int, int, list[str]]:
    """Send what a sweep's journal holds and MLflow has not got (`byol-sweep sync`, `report`);
    returns (sent, left, unsent): left, the records still pending (MLflow is away); unsent, one line
    for each record MLflow will never get from the journal (refused, or damaged before it was sent).
    JournalBusy if the sweep's driver is running (it sends them itself); JournalReadOnly if records are
    pending and the folder cannot be written (a read-only one with nothing pending is read as usual)."""
    path = journal_path(folder)
    if not path.exists():
        return 0, 0, []
    journal = Journal(path)
    journal.hold(wait=False)
    try:
        before = journal.sent
        pending = [r["id"] for r in journal.pending()]
        if pending and not journal.writable:
            raise JournalReadOnly(journal.path.parent, len(pending))
        if pending:  # else MLflow is not even imported
            with fail_fast_http():
                JournalledWriter(journal, lambda: client_for(uri), lambda message: None).flush()
        refused_now = len([r for r in journal.refused() if r["id"] > before])
        sent = len([i for i in pending if i <= journal.sent]) - refused_now
        return sent, journal.pending_count(), journal.unsent()
    finally:
        journal.release()


def write(uri: str | None, parent_run_id: str, op: str, **args: Any) -> str | None:
    """One MLflow write of the sweep of parent_run_id: through its journal when the driver keeps
    one, else straight to MLflow."""
    writer = _WRITERS.get(parent_run_id)
    if writer is not None:
        return writer.write(op, **args)
    if op == "create_run":
        args["placeholder"] = placeholder_id()
    uri = uri or DRIVER_TRACKING_URI.get(parent_run_id)
    if uri is None:
        raise TrackingError(f"no tracking URI is known for the sweep of parent run {parent_run_id}")
    return send(client_for(uri), {"op": op, "args": args}, {})
