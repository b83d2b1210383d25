"""Sending journalled records to MLflow (sweep/tracking/journal.py): in windows, a run's records
gathered into one call where MLflow allows, what
counts as MLflow refusing a record rather than being away, and the writer that journals each write
and sends it, at once or from a background thread."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable

from sweep.tracking.journal import RECORD_TAG, Journal, LocalState, placeholder_id

WINDOW = 500  # records sent between two marks of what MLflow holds (journal.py: .sending, .sent)
BATCH_METRICS, BATCH_TAGS = 1000, 100  # MLflow's limits on one log_batch call
PROGRESS_S = 10.0  # a long drain says how many records are left this often
LINGER_S = 0.2  # the sender thread waits this long after a record arrives, for the records that follow it


def replay(journal: Journal, client, on_refused: Callable[[dict, str], None] | None = None) -> int:
    """Send every pending record of the journal, in order for each run, each once; returns how many
    were sent. Records go in windows of WINDOW, and within a window a run's consecutive metrics and
    tags (log_batch records without params, up to MLflow's limits) go in one call: a SQLite store took
    34-44 ms for a log_batch of 11 metrics and 369 ms for one of 990 (BENCHMARKS.md, "A 1,000-trial
    simulation"), so a sender one call a record fell behind a sweep of 32 trials. A record MLflow
    refuses is set aside (on_refused(record, reason) is told) and the replay goes on; any other
    failure stops the replay (raised) and leaves the window in doubt: the next replay checks what of
    it MLflow already holds before sending it again."""
    ids = journal.ids()
    pending = journal.pending()
    if not pending:
        return 0
    # up to here MLflow may hold records already: the window a sender was sending when it died, or (a
    # journal from before windows) the first pending record; checking more would cost a call a metric key
    in_doubt = max(journal.sending, pending[0]["id"] if journal.in_doubt else 0)
    count = 0
    for start in range(0, len(pending), WINDOW):
        window = pending[start:start + WINDOW]
        journal.mark_sending(window[-1]["id"])
        for group in batches(window):
            count += _send_group(journal, client, group, ids, in_doubt, on_refused)
        journal.mark_sent(window[-1]["id"])
        journal.in_doubt = False
    return count


def batches(window: list[dict]) -> list[list[dict]]:
    """The window's records in groups sent as one call each, ordered by their first record: a run's
    log_batch records without params are gathered until any other record of that run (or MLflow's
    limits on one call) closes the group; every other record is a group of its own. A run's records
    therefore reach MLflow in their order, and a run is created before anything is logged to it."""
    groups: list[list[dict]] = []
    open_group: dict[str, tuple[list[dict], list[int], set[str]]] = {}  # run: (group, [metrics], tag keys)
    for record in window:
        run = record["args"].get("run_id")
        if record["op"] == "log_batch" and not record["args"].get("params"):
            metrics, tags = len(record["args"].get("metrics") or []), set(record["args"].get("tags") or {})
            if run in open_group:
                group, count, keys = open_group[run]
                if count[0] + metrics <= BATCH_METRICS and len(keys | tags) <= BATCH_TAGS:
                    group.append(record)
                    count[0] += metrics
                    keys |= tags
                    continue
            open_group[run] = ([record], [metrics], tags)
            groups.append(open_group[run][0])
        else:
            open_group.pop(run, None)
            groups.append([record])
    return groups


def _merged(group: list[dict]) -> dict:
    """One log_batch record for a group: its metrics in order, its tags with the later value of a key
    (as sending them one by one would leave them)."""
    if len(group) == 1:
        return group[0]
    tags: dict[str, str] = {}
    for r in group:
        tags.update(r["args"].get("tags") or {})
    metrics = [m for r in group for m in r["args"].get("metrics") or []]
    return {"id": group[-1]["id"], "op": "log_batch",
            "args": {"run_id": group[0]["args"]["run_id"], "metrics": metrics, "tags": tags}}


def _send_group(journal: Journal, client, group: list[dict], ids: dict[str, str], in_doubt: int,
                on_refused: Callable[[dict, str], None] | None) -> int:
    """Send one group; returns how many of its records MLflow took. A group MLflow refuses as a whole
    (one call is one transaction) is sent again record by record, so only what it refuses is set aside."""
    result = None
    try:
        reason = orphan(group[0], ids)
        if reason is None:
            result = send(client, _merged(group), ids, check=group[0]["id"] <= in_doubt)
    except BaseException as err:
        reason = refusal(err)
        if reason is None:
            raise
        if len(group) > 1:
            return sum(_send_group(journal, client, [r], ids, group[-1]["id"], on_refused) for r in group)
    if reason is not None:
        for record in group:
            journal.set_aside(record, reason)
            if on_refused is not None:
                on_refused(record, reason)
        return 0
    if group[0]["op"] == "create_run":
        ids[group[0]["args"]["placeholder"]] = result
        journal.save_ids(ids)
    return len(group)


def orphan(record: dict, ids: dict[str, str]) -> str | None:
    """Why a record cannot be sent at all: its run was never created (its placeholder has no MLflow id,
    so the record creating it, which comes first, was damaged or refused)."""
    run = record["args"].get("run_id", "")
    if record["op"] != "create_run" and run.startswith("local-") and run not in ids:
        return "its run was never created in MLflow (the record creating it is damaged or was refused)"
    return None


def refusal(err: BaseException) -> str | None:
    """Why MLflow refused a record, or None when the failure means "the server is away" (a connection
    error, a time-out, a 5xx, a locked database) and the record is to be tried again. Refused: MLflow's
    own 4xx answers (a deleted run or experiment, a param logged again with another value, a value it
    rejects)."""
    from mlflow.exceptions import MlflowException  # heavy: `sync` with nothing to send never imports MLflow

    if isinstance(err, MlflowException) and 400 <= err.get_http_status_code() < 500:
        return str(err.message).strip().splitlines()[0][:300]
    return None


def _already_there(client, run_id: str, metrics: list[dict]) -> list[dict]:
    """The metrics MLflow does not hold yet (by key, step, timestamp and value)."""
    held: dict[str, set] = {}
    out = []
    for m in metrics:
        if m["key"] not in held:
            held[m["key"]] = {(h.step, h.timestamp, h.value) for h in client.get_metric_history(run_id, m["key"])}
        if (int(m["step"]), int(m["timestamp"]), float(m["value"])) not in held[m["key"]]:
            out.append(m)
    return out


def send(client, record: dict, ids: dict[str, str], check: bool = False) -> Any:
    """One record to MLflow (client: an MlflowClient); returns the run id of a created run. check:
    the record may have reached MLflow already (see journal.py's docstring): look first."""
    from mlflow.entities import Metric, Param, RunTag  # heavy: `sync` with nothing to send never imports MLflow

    args = dict(record["args"])
    op = record["op"]
    if "run_id" in args:
        args["run_id"] = ids.get(args["run_id"], args["run_id"])
    if op == "create_run":
        placeholder = args["placeholder"]
        if check:
            found = client.search_runs([args["experiment_id"]], filter_string=f"tags.`{RECORD_TAG}` = '{placeholder}'",
                                       max_results=1)
            if found:
                return found[0].info.run_id
        tags = dict(args.get("tags") or {})
        if "mlflow.parentRunId" in tags:
            tags["mlflow.parentRunId"] = ids.get(tags["mlflow.parentRunId"], tags["mlflow.parentRunId"])
        tags[RECORD_TAG] = placeholder
        run = client.create_run(args["experiment_id"], run_name=args.get("run_name"), tags=tags,
                                start_time=args.get("start_time"))
        return run.info.run_id
    if op == "log_batch":
        metrics = args.get("metrics") or []
        if check and metrics:
            metrics = _already_there(client, args["run_id"], metrics)
        params, tags = args.get("params") or {}, args.get("tags") or {}
        if metrics or params or tags:
            client.log_batch(
                args["run_id"],
                metrics=[Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"])) for m in metrics],
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
    elif op == "set_tag":
        client.set_tag(args["run_id"], args["key"], args["value"])
    elif op == "set_terminated":
        client.set_terminated(args["run_id"], args["status"], end_time=args.get("end_time"))
    elif op == "update_run":
        client.update_run(args["run_id"], status=args["status"])
    elif op == "log_artifacts":  # a folder on this machine (a trial's model/): sent again, it is overwritten
        client.log_artifacts(args["run_id"], args["local_dir"], args.get("artifact_path"))
    return None


class JournalledWriter:
    """Writes go to the journal first, then to MLflow. Synchronously (background=False): sent at
    once while MLflow answers. In the background (the sweep's driver): a sender thread drains the
    journal, so a write never waits for the network; while MLflow does not answer, the records wait
    in the journal and the sender tries again every `retry_s`. Either way `on_offline` is told once
    when MLflow stops answering and once when it answers again. The sender thread gathers what arrives
    within `linger_s` of a record before it sends: the records of a burst of results go in fewer calls,
    and the thread does not take the interpreter from Tune's loop in the middle of each result."""

    def __init__(self, journal: Journal, client_factory: Callable[[], Any], on_offline: Callable[[str], None] = print,
                 background: bool = False, retry_s: float = 2.0, linger_s: float = LINGER_S):
        self.journal = journal
        self.client_factory = client_factory
        self.on_offline = on_offline
        self.background = background
        self.retry_s = retry_s
        self.linger_s = linger_s
        self._hurry = threading.Event()  # drain or close: send now, no lingering
        self.offline = False
        self._told = False
        self._client = None
        self._refused_runs: set[str] = set()
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name=f"mlflow-journal:{journal.path.name}", daemon=True)
            self._thread.start()

    @property
    def state(self) -> LocalState:
        return self.journal.state

    def write(self, op: str, **args: Any) -> str | None:
        """Journal one write and have it sent; returns the run id of a created run: its placeholder
        in the background (or while offline), MLflow's id when sent at once."""
        if op == "create_run":
            args["placeholder"] = placeholder_id()
        self.journal.append(op, **args)
        if self.background:
            with self._changed:
                self._changed.notify_all()
        else:
            self.flush()
        if op == "create_run":
            return args["placeholder"] if self.background else self.journal.ids().get(args["placeholder"], args["placeholder"])
        return None

    def flush(self) -> bool:
        """Send what is pending; False (and offline) when MLflow does not answer."""
        with self._send_lock:
            self.journal.sync()  # on disk before MLflow has it
            try:
                if self._client is None:
                    self._client = self.client_factory()
                replay(self.journal, self._client, self._tell_refused)
            except Exception as err:  # unreachable, timed out, 5xx: the records wait in the journal
                if not self._told:
                    reason = str(err).strip().splitlines()[-1:] or [type(err).__name__]
                    self.on_offline(f"MLflow does not answer ({reason[0][:200]}); training goes on and its records "
                                    f"wait in {self.journal.path} until it is back")
                    self._told = True
                self.offline = True
                ok = False
            else:
                if self.offline:
                    self.on_offline("MLflow answers again; the journalled records were sent")
                self.offline, self._told = False, False
                ok = True
        with self._changed:
            self._changed.notify_all()
        return ok

    def _tell_refused(self, record: dict, reason: str) -> None:
        run = record["args"].get("run_id") or record["args"].get("placeholder", "")
        if run in self._refused_runs:
            return
        self._refused_runs.add(run)
        self.on_offline(f"MLflow refused a record of run {run} ({reason}); it and that run's later refused records "
                        f"are set aside in {self.journal.refused_path}, and the other records go on")

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stop and self.journal.pending_count() == 0:
                    self._changed.wait()
                if self._stop:
                    return
            self._hurry.wait(timeout=self.linger_s)
            if self._stop:
                return
            if not self.flush():
                with self._changed:  # MLflow does not answer: try again in retry_s (or when drained)
                    if not self._stop:
                        self._changed.wait(timeout=self.retry_s)

    def drain(self, timeout: float, progress: Callable[[int], None] | None = None) -> int:
        """Wait until every record is sent, giving up after `timeout` seconds in which MLflow took none;
        returns how many are left. `progress` is told the records left every PROGRESS_S."""
        deadline = time.monotonic() + timeout
        if not self.background:
            while self.journal.pending_count() and not self.flush() and time.monotonic() < deadline:
                with self._changed:
                    self._changed.wait(timeout=min(self.retry_s, max(0.0, deadline - time.monotonic())))
            return self.journal.pending_count()
        left = self.journal.pending_count()
        told = time.monotonic()
        self._hurry.set()
        try:
            with self._changed:
                self._changed.notify_all()  # try now, not at the next retry
                while left and time.monotonic() < deadline:
                    self._changed.wait(timeout=max(0.0, min(self.retry_s, deadline - time.monotonic())))
                    now_left = self.journal.pending_count()
                    if now_left < left:  # MLflow takes them: wait on
                        deadline = time.monotonic() + timeout
                    left = now_left
                    if progress is not None and left and time.monotonic() - told >= PROGRESS_S:
                        progress(left)
                        told = time.monotonic()
        finally:
            self._hurry.clear()
        return left

    def close(self) -> None:
        """Stop the sender thread (what is pending stays in the journal) and release the journal."""
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        self._hurry.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.journal.release()
