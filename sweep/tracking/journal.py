"""A local, append-only journal of MLflow writes: written first, sent from there.

Durability, in two steps (a group commit): `append` hands each record to the operating system at
once, so a driver that dies (killed, crashed) loses none of them; `sync` puts everything appended
so far on disk with one fsync, and the sender calls it before it sends anything (sweep/tracking/
sender.py), so MLflow never holds a record the disk does not, and a machine that loses power loses
at most the records of the last moments, which Tune's own state (written less often) runs again.
With an fsync per record the driver's MLflow callback took 13 ms a result at the median and 31-34 ms at
the 99th percentile on a loaded machine (benchmarks/driver_scale.py).

Each record is one JSON line with an id (1, 2, ...) and a checksum of its content (`crc`).
`<journal>.sent` holds the id of the last record MLflow acknowledged, so a replay (after the server
came back, at the end of a sweep, or by `resume` / `sync`) sends each record once. The sender sends
records in windows (several records of a run in one MLflow call, sweep/tracking/sender.py):
`<journal>.sending` holds the id of the last record of the window being sent, and `.sent` moves to it
when the whole window is in MLflow. A run gets a local placeholder id (`local-...`) when it
is journalled; the replay creates the run and maps the placeholder to MLflow's id (`<journal>.ids`,
JSON) for every later record.

Exactly once, also across a crash: a record MLflow accepted just before the sender died (or whose
answer timed out) is pending again. Such a record (any record up to `.sending`, and the first pending
record of a journal written before windows) is "in doubt" and is checked before it is sent again: a run is created with the tag `byol_sweep.record_id` = its placeholder and looked up by it
first; a metric already in MLflow with the same (key, step, timestamp, value) is not sent again.
Params, tags and terminations are idempotent in MLflow.

Damage is named, never skipped silently: a line that is not valid JSON, fails its checksum or is out
of sequence, and a torn last line (a write that never completed), is copied to `<journal>.damaged`
with its line number and reason (kept in memory when the folder cannot be written: a sweep's results
on read-only storage are read, never changed), and the records after it are read and sent as usual; a new record
never reuses the id of a damaged or sent one. A record MLflow refuses (a deleted run, a param logged
again with another value: anything but "the server is away", see sweep/tracking/sender.py) is set
aside in `<journal>.refused` with MLflow's reason, and the records after it flow on.

The journal also answers what has been written (`LocalState`): the driver reads its own writes
from there, so it needs no server to find a trial's run, its last epoch or the best so far.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabulary.journal_files import IDS_SUFFIX, REFUSED_SUFFIX, read_refused

WRITES = ("create_run", "log_batch", "set_tag", "set_terminated", "update_run", "log_artifacts")
RECORD_TAG = "byol_sweep.record_id"  # a run's placeholder, so a re-sent create_run finds the run


def checksum(record: dict) -> str:
    """CRC-32 of a record's id, op and args, as canonical JSON."""
    body = json.dumps({k: record.get(k) for k in ("id", "op", "args")}, sort_keys=True)
    return f"{zlib.crc32(body.encode()):08x}"


@dataclass(frozen=True)
class Damage:
    """A journal line that could not be read as a record: where, why, and what of it can be told."""

    line: int
    reason: str
    text: str
    id: int | None  # the record id it carried, when that much can be read
    sent: bool  # MLflow had it before the damage (a later record was acknowledged)

    def describe(self, path: Path) -> str:
        run = re.search(r'"run_id": "([^"]+)"', self.text)
        steps = sorted({int(s) for s in re.findall(r'"step": (\d+)', self.text)})
        what = ", ".join(x for x in ((f"record {self.id}" if self.id else ""), (f"run {run.group(1)}" if run else ""),
                                     (f"epochs {', '.join(map(str, steps))}" if steps else "")) if x)
        return f"{path}, line {self.line} ({what or 'nothing of it readable'}): {self.reason}"


class JournalBusy(RuntimeError):
    """Another process (a running driver) holds the journal."""


class JournalReadOnly(RuntimeError):
    """The journal's folder cannot be written (results on read-only storage): its records can be read,
    not sent (sending marks them sent there) nor added to. pending: the records MLflow has not got."""

    def __init__(self, folder: Path, pending: int):
        super().__init__(f"{folder} is not writable")
        self.folder, self.pending = folder, pending


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


def lock_path(journal: Path) -> Path:
    """The file whose lock the process sending a journal holds (see Journal.hold)."""
    return journal.with_name(journal.name + ".lock")


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.sent_path = self.path.with_name(self.path.name + ".sent")
        self.sending_path = self.path.with_name(self.path.name + ".sending")
        self.ids_path = self.path.with_name(self.path.name + IDS_SUFFIX)
        self.lock_path = lock_path(self.path)
        self.damaged_path = self.path.with_name(self.path.name + ".damaged")
        self.refused_path = self.path.with_name(self.path.name + REFUSED_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writable = os.access(self.path.parent, os.W_OK)  # False: a folder on read-only storage, read as it is
        self.existed = self.path.exists()
        self._lock = threading.Lock()
        self.damage: list[Damage] = []
        torn = self._cut_torn_tail()
        self.state = LocalState()
        last = 0
        for record, _ in self._scan(0, self.damage):
            self.state.apply(record)
            last = record["id"]
        if torn:
            self.damage.append(torn)
        self._name_damage()
        self._last_record = last
        ids = [last, self.sent, *(d.id or 0 for d in self.damaged())]
        self._next = max(ids) + 1  # never the id of a damaged record, nor one MLflow acknowledged
        self._cursor = (0, 0)  # (id of a record, byte offset just after it): where pending() starts reading
        self.in_doubt = True  # the first pending record may have reached MLflow before the last sender died
        self.complete = True  # the whole record of its sweep (False: a resumed sweep that predates journals)
        self._lock_handle = None
        self._file = None  # open for appending from the first append until release()
        self._unsynced = False

    def _cut_torn_tail(self) -> Damage | None:
        """A last line without its newline was torn (its write never completed): cut it, so the next
        record starts on a line of its own, and say so (its id, when readable, is never reused)."""
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return None
        start = data.rfind(b"\n") + 1
        if self.writable:  # else it stays: a scan stops before a line without its newline
            with open(self.path, "rb+") as f:
                f.truncate(start)
        text = data[start:].decode("utf-8", "replace")
        found = re.match(r'\{"id": (\d+)', text)
        record_id = int(found.group(1)) if found else None
        return Damage(data.count(b"\n") + 1, "torn: its write never completed (the process died writing it)", text,
                      record_id, bool(record_id and record_id <= self.sent))

    def _scan(self, offset: int, damage: list[Damage] | None = None) -> list[tuple[dict, int]]:
        """(record, byte offset after it) of each good line from offset; a damaged line is skipped
        and, with damage given (a scan from the start), described there."""
        out: list[tuple[dict, int]] = []
        if not self.path.exists():
            return out
        bad: list[tuple[int, str, bytes, int]] = []
        last_id, line = 0, 0
        with open(self.path, "rb") as f:
            f.seek(offset)
            for raw in f:
                line += 1
                if not raw.endswith(b"\n"):
                    break  # being written
                offset += len(raw)
                reason = None
                try:
                    record = json.loads(raw)
                    if not (isinstance(record, dict) and isinstance(record.get("id"), int) and record.get("op") in WRITES):
                        reason = "not a journal record"
                    elif "crc" in record and record["crc"] != checksum(record):
                        reason = "its checksum does not match its content"
                    elif record["id"] <= last_id:
                        reason = f"out of sequence (id {record['id']} after {last_id})"
                except ValueError:
                    reason = "not valid JSON"
                if reason:
                    bad.append((line, reason, raw, offset))
                    continue
                last_id = record["id"]
                out.append((record, offset))
        if damage is not None:
            sent = self.sent
            for line_no, reason, raw, end in bad:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                found = re.match(r'\{"id": (\d+)', text)
                record_id = int(found.group(1)) if found else None
                after = next((r["id"] for r, e in out if e > end), None)  # records are sent in order
                was_sent = (record_id is not None and record_id <= sent) or (after is not None and after <= sent)
                damage.append(Damage(line_no, reason, text, record_id, was_sent))
        return out

    def _name_damage(self) -> None:
        """Copy each damaged line, not named before, to <journal>.damaged."""
        known = set()
        if self.damaged_path.exists():
            for raw in self.damaged_path.read_text().splitlines():
                try:
                    known.add((json.loads(raw)["line"], json.loads(raw)["text"]))
                except (ValueError, KeyError):
                    continue
        new = [d for d in self.damage if (d.line, d.text) not in known]
        if new and self.writable:  # else damaged() adds them from memory
            with open(self.damaged_path, "a", encoding="utf-8") as f:
                for d in new:
                    f.write(json.dumps({"line": d.line, "reason": d.reason, "text": d.text, "id": d.id,
                                        "sent": d.sent}) + "\n")

    def damaged(self) -> list[Damage]:
        """Every damaged line named so far (this and earlier openings of the journal)."""
        out = []
        if self.damaged_path.exists():
            for raw in self.damaged_path.read_text().splitlines():
                try:
                    d = json.loads(raw)
                    out.append(Damage(d["line"], d["reason"], d["text"], d.get("id"), bool(d.get("sent"))))
                except (ValueError, KeyError):
                    continue
        named = {(d.line, d.text) for d in out}
        return out + [d for d in self.damage if (d.line, d.text) not in named]

    def set_aside(self, record: dict, reason: str) -> None:
        """A record MLflow refused: kept in <journal>.refused with the reason; counted as handled."""
        with open(self.refused_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": record["id"], "op": record["op"], "run_id": record["args"].get("run_id"),
                                "reason": reason, "record": record}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def refused(self) -> list[dict]:
        return read_refused(self.path)

    def unsent(self) -> list[str]:
        """What MLflow will never get from this journal, one line each: the records it refused and the
        damaged lines it had not got."""
        ids = self.ids()
        names = {run: tags.get("byol_sweep.trial_id") for run, tags in self.state.tags.items()}
        names.update({ids[run]: name for run, name in list(names.items()) if run in ids})
        out = []
        for r in self.refused():
            run = r.get("run_id") or r["record"]["args"].get("placeholder")
            steps = sorted({int(m["step"]) for m in r["record"]["args"].get("metrics") or []})
            epochs = f", epochs {', '.join(map(str, steps))}" if steps else ""
            who = f"run {ids.get(run, run)}" + (f" ({names[run]})" if names.get(run) else "")
            out.append(f"record {r['id']} ({r['op']} of {who}{epochs}) refused by MLflow: {r['reason']}")
        out += [f"damaged: {d.describe(self.path)}" for d in self.damaged() if not d.sent]
        return out

    def hold(self, wait: bool = True) -> None:
        """Take the journal for this process (an fcntl lock, released when the process dies): one
        sender at a time. JournalBusy if another holds it and not wait. A journal that cannot be written
        has no sender here to keep out."""
        if self._lock_handle is not None or not self.writable:
            return
        handle = open(self.lock_path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise JournalBusy(f"{self.path} is held by another process") from None
        self._lock_handle = handle

    def release(self) -> None:
        self.sync()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def append(self, op: str, **args: Any) -> dict:
        if op not in WRITES:
            raise ValueError(f"{op} is not a journalled MLflow write; allowed: {', '.join(WRITES)}")
        with self._lock:
            record = {"id": self._next, "op": op, "args": args}
            record["crc"] = checksum(record)
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()  # the operating system has it: the process may die now
            self._unsynced = True
            self._next += 1
            self._last_record = record["id"]
            self.state.apply(record)
        return record

    def sync(self) -> None:
        """Put every record appended so far on disk: one fsync for all of them."""
        with self._lock:
            if not self._unsynced:
                return
            fd = os.dup(self._file.fileno())  # fsync outside the lock: appends go on meanwhile
            self._unsynced = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def last_id(self) -> int:
        return self._next - 1

    @property
    def sent(self) -> int:
        return _read_mark(self.sent_path)

    @property
    def sending(self) -> int:
        """The last record of the window the sender was sending (0: none yet): up to it, pending records
        may already be in MLflow."""
        return _read_mark(self.sending_path)

    def mark_sending(self, record_id: int) -> None:
        _write_mark(self.sending_path, self.path.with_name(self.path.name + ".sending.tmp"), record_id)

    def pending_count(self) -> int:
        return max(0, self._last_record - self.sent)

    def mark_sent(self, record_id: int) -> None:
        _write_mark(self.sent_path, self.sent_path.with_suffix(".tmp"), record_id)

    def ids(self) -> dict[str, str]:
        try:
            return json.loads(self.ids_path.read_text())
        except FileNotFoundError:
            return {}

    def save_ids(self, ids: dict[str, str]) -> None:
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


def _read_mark(path: Path) -> int:
    """A record id kept in its own file (.sent, .sending); 0 when there is none yet."""
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def _write_mark(path: Path, tmp: Path, record_id: int) -> None:
    tmp.write_text(str(record_id))
    os.replace(tmp, path)  # whole or not at all


def placeholder_id() -> str:
    return f"local-{uuid.uuid4().hex}"
