"""A local, append-only journal of MLflow writes: written (and fsync'd) first, sent from there.

Each record is one JSON line with an id (1, 2, ...). `<journal>.sent` holds the id of the last
record MLflow acknowledged, so a replay (after the server came back, at the end of a sweep, or by
`resume`) sends each record exactly once. A run created while the server was away gets a local
placeholder id (`local-...`); the replay creates the run and maps the placeholder to MLflow's id
(`<journal>.ids`, JSON) for every later record.

Not yet wired into sweep/tracking.py's MlflowTracking (see the branch's report): the callback
still writes to MLflow directly.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

WRITES = ("create_run", "log_batch", "set_tag", "set_terminated", "update_run")


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.sent_path = self.path.with_name(self.path.name + ".sent")
        self.ids_path = self.path.with_name(self.path.name + ".ids")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._next = self._last_id() + 1

    def _last_id(self) -> int:
        last = 0
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    last = json.loads(line)["id"]
                except (ValueError, KeyError):
                    break  # a torn last line (the driver died mid-write): ignored
        return last

    def append(self, op: str, **args: Any) -> dict:
        if op not in WRITES:
            raise ValueError(f"{op} is not a journalled MLflow write; allowed: {', '.join(WRITES)}")
        record = {"id": self._next, "op": op, "args": args}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._next += 1
        return record

    @property
    def sent(self) -> int:
        try:
            return int(self.sent_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

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
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                if record["id"] > done:
                    out.append(record)
        return out

    def replay(self, client) -> int:
        """Send every pending record, in order, each exactly once; returns how many were sent. A
        record that fails stops the replay (raised): the next one starts from it again."""
        ids = self.ids()
        count = 0
        for record in self.pending():
            result = send(client, record, ids)
            if record["op"] == "create_run":
                ids[record["args"]["placeholder"]] = result
                self._save_ids(ids)
            self._mark_sent(record["id"])
            count += 1
        return count


def placeholder_id() -> str:
    return f"local-{uuid.uuid4().hex}"


def send(client, record: dict, ids: dict[str, str]) -> Any:
    """One record to MLflow (client: an MlflowClient); returns the run id of a created run."""
    from mlflow.entities import Metric, Param, RunTag

    args = dict(record["args"])
    op = record["op"]
    if "run_id" in args:
        args["run_id"] = ids.get(args["run_id"], args["run_id"])
    if op == "create_run":
        tags = dict(args.get("tags") or {})
        if "mlflow.parentRunId" in tags:
            tags["mlflow.parentRunId"] = ids.get(tags["mlflow.parentRunId"], tags["mlflow.parentRunId"])
        run = client.create_run(args["experiment_id"], run_name=args.get("run_name"), tags=tags,
                                start_time=args.get("start_time"))
        return run.info.run_id
    if op == "log_batch":
        client.log_batch(
            args["run_id"],
            metrics=[Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in args.get("metrics", [])],
            params=[Param(k, v) for k, v in args.get("params", {}).items()],
            tags=[RunTag(k, v) for k, v in args.get("tags", {}).items()],
        )
    elif op == "set_tag":
        client.set_tag(args["run_id"], args["key"], args["value"])
    elif op == "set_terminated":
        client.set_terminated(args["run_id"], args["status"], end_time=args.get("end_time"))
    elif op == "update_run":
        client.update_run(args["run_id"], status=args["status"])
    return None


class JournalledWriter:
    """Writes go to the journal first, then to MLflow right away while it answers; when it does
    not (`offline`), they wait in the journal and `flush` sends them later, in order."""

    def __init__(self, journal: Journal, client_factory: Callable[[], Any], on_offline: Callable[[str], None] = print):
        self.journal = journal
        self.client_factory = client_factory
        self.on_offline = on_offline
        self.offline = False
        self._told = False

    def write(self, op: str, **args: Any) -> str | None:
        """Journal one write, then try to send everything pending; returns the run id (or the
        placeholder, while offline) of a created run."""
        if op == "create_run":
            args["placeholder"] = placeholder_id()
        self.journal.append(op, **args)
        self.flush()
        if op == "create_run":
            return self.journal.ids().get(args["placeholder"], args["placeholder"])
        return None

    def flush(self) -> bool:
        """Send what is pending; False (and offline) when MLflow does not answer."""
        try:
            self.journal.replay(self.client_factory())
        except Exception as err:  # unreachable, timed out, 5xx: the records wait in the journal
            if not self._told:
                reason = str(err).strip().splitlines()[-1:] or [type(err).__name__]
                self.on_offline(f"MLflow does not answer ({reason[0][:200]}); training goes on and its records "
                                f"wait in {self.journal.path} until it is back")
                self._told = True
            self.offline = True
            return False
        if self.offline:
            self.on_offline("MLflow answers again; the journalled records were sent")
        self.offline, self._told = False, False
        return True
