"""`byol-sweep sync`, and the report's first step: send the MLflow records a sweep's journal holds
and MLflow has not got (its tracking server was away when the driver ended). No Ray, and MLflow only
when there is something to send."""
from __future__ import annotations

import sys

from sweep.errors import SweepError
from sweep.state import NAME_PATTERN, local_state_dir, read_state, tracking_uri_for
from sweep.tracking.journal import JournalBusy
from sweep.tracking.writers import journal_path, sync_journal


def sync_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None) -> tuple[int, int, list[str]]:
    """Send the MLflow records a sweep's journal holds and MLflow has not got (its tracking server
    was away when the driver ended); returns (sent, left, unsent) as sync_journal."""
    state = read_state(name, storage)
    uri = tracking_uri_for(state, name, tracking_uri)
    try:
        return sync_journal(uri, local_state_dir(storage, name))
    except JournalBusy:
        raise SweepError(f"sweep {name}'s driver is running: it sends its MLflow records itself") from None


def sync_sweeps(uri: str, sweeps: list[tuple[str | None, str | None]]) -> None:
    """Before a report: send what the journals of these sweeps (name, storage: the parent run's params)
    still hold, for those whose folder is on this machine."""
    for name, storage in sweeps:
        if not name or not storage or not NAME_PATTERN.fullmatch(name):
            continue
        folder = local_state_dir(storage, name)
        if not journal_path(folder).exists():
            continue
        try:
            sent, left, unsent = sync_journal(uri, folder)
        except JournalBusy:
            print(f"sweep {name} is running: the report shows what MLflow holds now", file=sys.stderr, flush=True)
            continue
        if sent:
            print(f"sent {sent} MLflow records of sweep {name} from its journal before reading", flush=True)
        if left:
            print(f"{left} MLflow records of sweep {name} could not be sent; the report misses them",
                  file=sys.stderr, flush=True)
        if unsent:
            print(f"{len(unsent)} MLflow records of sweep {name} will never reach MLflow from its journal (`byol-sweep "
                  f"sync {name}` lists them); the report misses them", file=sys.stderr, flush=True)
