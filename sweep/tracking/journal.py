"""A local, append-only journal of MLflow writes: written (and fsync'd) first, sent from there.

Each record is one JSON line with an id (1, 2, ...). `<journal>.sent` holds the id of the last
record MLflow acknowledged, so a replay (after the server came back, at the end of a sweep, or by
`resume` / `sync`) sends each record once. A run gets a local placeholder id (`local-...`) when it
is journalled; the replay creates the run and maps the placeholder to MLflow's id (`<journal>.ids`,
JSON) for every later record.

Exactly once, also across a crash: a record MLflow accepted just before the sender died (or whose
answer timed out) is pending again. Such a record is "in doubt" and is checked before it is sent
again: a run is created with the tag `byol_sweep.record_id` = its placeholder and looked up by it
first; a metric already in MLflow with the same (key, step, timestamp, value) is not sent again.
Params, tags and terminations are idempotent in MLflow.

The journal also answers what has been written (`LocalState`): the driver reads its own writes
from there, so it needs no server to find a trial's run, its last epoch or the best so far.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

WRITES = ("create_run", "log_batch", "set_tag", "set_terminated", "update_run")
RECORD_TAG = "byol_sweep.record_id"  # a run's placeholder, so a re-sent create_run finds the run


class JournalBusy(RuntimeError):
    """Another process (a running driver) holds the journal."""


class LocalState:
    """What the journal says was written: each run's tags, status and last metric step."""

    def __init__(self):
        self.tags: dict[str, dict[str, str]] = {}
        self.last_step: dict[str, int] = {}
        self.terminated: dict[str, str] = {}

    def apply(self, record: dict) -> None:
        op, args = record["op"], record["args"]
        if op == "create_run":
            self.tags[args["placeholder"]] = dict(args.get("tags") or {})
            return
        run_id = args["run_id"]
        tags = self.tags.setdefault(run_id, {})
        if op == "log_batch":
            tags.update(args.get("tags") or {})
            for m in args.get("metrics") or []:
                self.last_step[run_id] = max(self.last_step.get(run_id, 0), int(m["step"]))
        elif op == "set_tag":
            tags[args["key"]] = args["value"]
        elif op == "set_terminated":
            self.terminated[run_id] = args["status"]
        elif op == "update_run":
            self.terminated.pop(run_id, None)

    def runs(self, **tags: str) -> list[str]:
        """Run ids (placeholders or MLflow's) whose tags include these (tag names with dots: pass a dict)."""
        return [run for run, have in self.tags.items() if all(have.get(k) == v for k, v in tags.items())]


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.sent_path = self.path.with_name(self.path.name + ".sent")
        self.ids_path = self.path.with_name(self.path.name + ".ids")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.existed = self.path.exists()
        self._lock = threading.Lock()
        self._drop_torn_tail()
        self.state = LocalState()
        last = 0
        for record, _ in self._scan(0):
            self.state.apply(record)
            last = record["id"]
        self._next = last + 1
        self._cursor = (0, 0)  # (id of a record, byte offset just after it): where pending() starts reading
        self.in_doubt = True  # the first pending record may have reached MLflow before the last sender died
        self.complete = True  # the whole record of its sweep (False: a resumed sweep that predates journals)
        self._lock_handle = None

    def _drop_torn_tail(self) -> None:
        """A last line without its newline was torn (the driver died mid-write, before the write
        returned): cut it, so the next record starts on a line of its own."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def _scan(self, offset: int) -> list[tuple[dict, int]]:
        out = []
        if not self.path.exists():
            return out
        with open(self.path, "rb") as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # being written, or torn
                try:
                    record = json.loads(raw)
                except ValueError:
                    break
                offset += len(raw)
                out.append((record, offset))
        return out

    def hold(self, wait: bool = True) -> None:
        """Take the journal for this process (an fcntl lock, released when the process dies): one
        sender at a time. JournalBusy if another holds it and not wait."""
        if self._lock_handle is not None:
            return
        handle = open(self.lock_path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise JournalBusy(f"{self.path} is held by another process") from None
        self._lock_handle = handle

    def release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def append(self, op: str, **args: Any) -> dict:
        if op not in WRITES:
            raise ValueError(f"{op} is not a journalled MLflow write; allowed: {', '.join(WRITES)}")
        with self._lock:
            record = {"id": self._next, "op": op, "args": args}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._next += 1
            self.state.apply(record)
        return record

    @property
    def last_id(self) -> int:
        return self._next - 1

    @property
    def sent(self) -> int:
        try:
            return int(self.sent_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def pending_count(self) -> int:
        return max(0, self.last_id - self.sent)

    def _mark_sent(self, record_id: int) -> None:
        tmp = self.sent_path.with_suffix(".tmp")
        tmp.write_text(str(record_id))
        os.replace(tmp, self.sent_path)

    def ids(self) -> dict[str, str]:
        try:
            return json.loads(self.ids_path.read_text())
        except FileNotFoundError:
            return {}

    def _save_ids(self, ids: dict[str, str]) -> None:
        tmp = self.ids_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids))
        os.replace(tmp, self.ids_path)

    def pending(self) -> list[dict]:
        done, out = self.sent, []
        start = self._cursor[1] if self._cursor[0] <= done else 0
        for record, end in self._scan(start):
            if record["id"] <= done:
                self._cursor = (record["id"], end)
            else:
                out.append(record)
        return out

    def replay(self, client) -> int:
        """Send every pending record, in order, each once; returns how many were sent. A record
        that fails stops the replay (raised) and is in doubt: the next replay checks what of it
        MLflow already holds before sending it again."""
        ids = self.ids()
        count = 0
        for record in self.pending():
            try:
                result = send(client, record, ids, check=self.in_doubt)
            except BaseException:
                self.in_doubt = True
                raise
            self.in_doubt = False
            if record["op"] == "create_run":
                ids[record["args"]["placeholder"]] = result
                self._save_ids(ids)
            self._mark_sent(record["id"])
            count += 1
        return count


def placeholder_id() -> str:
    return f"local-{uuid.uuid4().hex}"


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
    the record may have reached MLflow already (see the module's docstring): look first."""
    from mlflow.entities import Metric, Param, RunTag  # heavy: a journal with nothing to send never needs it

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
    return None


class JournalledWriter:
    """Writes go to the journal first, then to MLflow. Synchronously (background=False): sent at
    once while MLflow answers. In the background (the sweep's driver): a sender thread drains the
    journal, so a write never waits for the network; while MLflow does not answer, the records wait
    in the journal and the sender tries again every `retry_s`. Either way `on_offline` is told once
    when MLflow stops answering and once when it answers again."""

    def __init__(self, journal: Journal, client_factory: Callable[[], Any], on_offline: Callable[[str], None] = print,
                 background: bool = False, retry_s: float = 2.0):
        self.journal = journal
        self.client_factory = client_factory
        self.on_offline = on_offline
        self.background = background
        self.retry_s = retry_s
        self.offline = False
        self._told = False
        self._client = None
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
            try:
                if self._client is None:
                    self._client = self.client_factory()
                self.journal.replay(self._client)
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

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stop and self.journal.pending_count() == 0:
                    self._changed.wait()
                if self._stop:
                    return
            if not self.flush():
                with self._changed:  # MLflow does not answer: try again in retry_s (or when drained)
                    if not self._stop:
                        self._changed.wait(timeout=self.retry_s)

    def drain(self, timeout: float) -> int:
        """Wait up to timeout seconds until every record is sent; returns how many are left."""
        deadline = time.monotonic() + timeout
        if not self.background:
            while self.journal.pending_count() and not self.flush() and time.monotonic() < deadline:
                with self._changed:
                    self._changed.wait(timeout=min(self.retry_s, max(0.0, deadline - time.monotonic())))
            return self.journal.pending_count()
        with self._changed:
            self._changed.notify_all()  # try now, not at the next retry
            while self.journal.pending_count() and time.monotonic() < deadline:
                self._changed.wait(timeout=max(0.0, min(self.retry_s, deadline - time.monotonic())))
        return self.journal.pending_count()

    def close(self) -> None:
        """Stop the sender thread (what is pending stays in the journal) and release the journal."""
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.journal.release()
