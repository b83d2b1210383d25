"""`byol-sweep sync`, and the report's first step: send the MLflow records a sweep's journal holds
and MLflow has not got (its tracking server was away when the driver ended). No Ray, and MLflow only
when there is something to send."""
from __future__ import annotations

import sys

from sweep.errors import SweepError
from sweep.rebuild import rebuild_from_results
from sweep.state import NAME_PATTERN, STATE_FILE, local_state_dir, read_state, tracking_uri_for
from sweep.tracking.journal import Journal, JournalBusy, JournalReadOnly
from sweep.tracking.writers import journal_path, sync_journal


def sync_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None,
               from_results: bool = False) -> tuple[int, int, list[str]]:
    """Send the MLflow records a sweep's journal holds and MLflow has not got (its tracking server
    was away when the driver ended); returns (sent, left, unsent) as sync_journal. from_results:
    then rebuild what the journal lost from the trials' own results (sweep/rebuild.py): every epoch's
    metrics; what the journal could not send is then named once more and no longer counted."""
    state = read_state(name, storage)
    uri = tracking_uri_for(state, name, tracking_uri)
    try:
        sent, left, unsent = sync_journal(uri, local_state_dir(storage, name))
    except JournalBusy:
        raise SweepError(f"sweep {name}'s driver is running: it sends its MLflow records itself") from None
    except JournalReadOnly as err:
        raise SweepError(f"sweep {name}'s {err.pending} MLflow records in its journal cannot be sent from here: "
                         f"{err.folder} is not writable (sending marks each record sent there); run `byol-sweep sync "
                         f"{name}` where that folder is writable") from None
    if from_results and not left:
        values, created = rebuild_from_results(name, storage, tracking_uri)
        print(f"from the trials' own results: sent {values} metric values MLflow lacked"
              + (f", created {created} runs it did not have" if created else ""), flush=True)
        for line in unsent:
            print(f"  not from the journal, its epochs rebuilt from the results (a tag or param it held is not): {line}",
                  file=sys.stderr, flush=True)
        unsent = []
    return sent, left, unsent


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
        except JournalReadOnly as err:
            print(f"{err.pending} MLflow records of sweep {name} wait in its journal, and {err.folder} is not writable "
                  f"(sending marks each record sent there); the report misses them until `byol-sweep sync {name}` "
                  "runs where that folder is writable", file=sys.stderr, flush=True)
            continue
        if sent:
            print(f"sent {sent} MLflow records of sweep {name} from its journal before reading", flush=True)
        if left:
            print(f"{left} MLflow records of sweep {name} could not be sent; the report misses them",
                  file=sys.stderr, flush=True)
        if unsent:
            print(f"{len(unsent)} MLflow records of sweep {name} will never reach MLflow from its journal (`byol-sweep "
                  f"sync {name}` lists them); the report misses them", file=sys.stderr, flush=True)
        if not left:
            end_if_abandoned(uri, name, storage, folder)


def end_if_abandoned(uri: str, name: str, storage: str, folder) -> None:
    """A sweep MLflow says is running whose journal no driver holds (its driver was killed) is marked
    interrupted, with the runs it left running; the lock is held meanwhile, so no driver starts."""
    from sweep.tracking.runs import end_abandoned  # MLflow's entities: `byol-sweep --help` does not wait for them

    journal = Journal(journal_path(folder))
    if not journal.writable or not (folder / STATE_FILE).exists():  # read-only: its driver may write elsewhere
        return
    try:
        journal.hold(wait=False)
    except JournalBusy:
        return
    try:
        if end_abandoned(uri, read_state(name, storage)["parent_run_id"]):
            print(f"sweep {name}'s driver ended without stopping it (killed?): the sweep and the runs it left running "
                  "are marked interrupted", flush=True)
    finally:
        journal.release()


def tell_sync(what: str, sent: int, left: int, unsent: list[str]) -> int:
    """`byol-sweep sync`'s answer: what was sent, what waits for the server, what never will reach
    MLflow (each named); the exit code, 1 while anything is left."""
    if unsent:
        print(f"{what}: sent {sent} MLflow records; {len(unsent)} will never reach MLflow from its journal:",
              file=sys.stderr)
        for line in unsent:
            print(f"  {line}", file=sys.stderr)
        if left:
            print(f"  and {left} more wait for the tracking server: try again", file=sys.stderr)
        return 1
    if left:
        print(f"{what}: sent {sent} MLflow records; {left} could not be sent (the tracking server does not answer), "
              "try again", file=sys.stderr)
        return 1
    print(f"{what}: sent {sent} MLflow records from its journal" if sent else f"{what}: MLflow has every record of its journal")
    return 0
