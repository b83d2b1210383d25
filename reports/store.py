"""Read access to an MLflow store for the report: the few questions reports/load.py asks, nothing more.

Two readers give the same answers. A SQLite file is read directly with sqlite3, read-only: importing
MLflow and building its SQLAlchemy store took about 3.5 s of the quick sweep's 7-s report, and turning
1,000 runs into MLflow entities most of the 1000-trial report's reading. Any other store (a tracking
server, a file store), and a SQLite file whose tables are not the ones read here, go through MLflow's
client, and so does one whose schema revision (alembic_version) is not one the tests cover: another
MLflow version's tables, said once on the console. tests/reports/test_store.py holds the two readers to
identical sweeps on real stores.
"""
from __future__ import annotations

import contextlib
import sqlite3
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from reports.errors import ReportError

History = list[tuple[int, int, float]]  # one metric of one run: (timestamp ms, step, value), as logged


@dataclass
class RunRecord:
    """One MLflow run as the report reads it."""

    run_id: str
    name: str  # the run's name, else its mlflow.runName tag, else ""
    start_ms: int | None
    end_ms: int | None
    tags: dict[str, str]
    params: dict[str, str]
    latest: dict[str, tuple[int, int, float]]  # metric -> (timestamp, step, value) of its latest value, as MLflow keeps it

    def __post_init__(self):
        self.name = self.name or self.tags.get("mlflow.runName") or ""

    @cached_property
    def metrics(self) -> dict[str, float]:
        """metric -> its latest value."""
        return {k: v for k, (_, _, v) in self.latest.items()}


def open_store(tracking_uri: str | None):
    """A reader of an existing store; never creates an empty store where the user pointed by mistake."""
    if not tracking_uri:
        import mlflow  # here: a SQLite store is read without importing MLflow

        tracking_uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default
    parsed = urlparse(tracking_uri)
    path = None
    if parsed.scheme == "sqlite":
        path = Path(tracking_uri.split("sqlite:///", 1)[-1]) if "sqlite:///" in tracking_uri else None
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else tracking_uri)
    if path is not None and not path.exists():
        raise ReportError(f"No MLflow store at {tracking_uri}: {path} does not exist.")
    if parsed.scheme == "sqlite" and path is not None:
        tables = _sqlite_tables(path)
        if not {"alembic_version", "experiments", "runs"} <= set(tables):  # else MLflow's client would add them
            raise ReportError(f"{path} is not an MLflow store (it has no MLflow tables); give the tracking URI "
                              "the sweep logged to, e.g. sqlite:///mlflow.db")
        revision = _schema_revision(path)
        if revision not in SqliteReader.REVISIONS:
            _say_once(f"{path} has MLflow schema revision {revision or 'none'}, not one the fast SQLite reader is "
                      f"tested on ({', '.join(SqliteReader.REVISIONS)}); the report reads it through MLflow's client")
        elif all(set(columns) <= set(tables.get(table, ())) for table, columns in SqliteReader.READS.items()):
            return SqliteReader(path)
    return MlflowReader(tracking_uri)


_TOLD: set[str] = set()  # a report opens its store more than once: each line is said once per process


def _say_once(line: str) -> None:
    if line not in _TOLD:
        _TOLD.add(line)
        print(line, file=sys.stderr, flush=True)


def _schema_revision(path: Path) -> str | None:
    """The store's alembic revision: which of MLflow's schemas its tables follow."""
    with contextlib.closing(_read_only(path)) as db:
        row = db.execute("select version_num from alembic_version").fetchone()
    return None if row is None else str(row[0])


def _sqlite_tables(path: Path) -> dict[str, list[str]]:
    """table -> its columns, read-only: MLflow would otherwise create its tables inside any SQLite file."""
    try:
        with contextlib.closing(_read_only(path)) as db:
            names = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
            return {name: [row[1] for row in db.execute(f"pragma table_info('{name}')")] for name in names}
    except sqlite3.DatabaseError:
        return {}


def _read_only(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=timeout)


class SqliteReader:
    """MLflow's SQLite tables read as MLflow's SQLAlchemy store reads them (active rows only; a NaN
    is stored as 0 with is_nan set; runs in MLflow's order: newest start first, then run id)."""

    READS = {
        "experiments": ("experiment_id", "name", "lifecycle_stage"),
        "runs": ("run_uuid", "name", "start_time", "end_time", "lifecycle_stage", "experiment_id"),
        "tags": ("key", "value", "run_uuid"),
        "params": ("key", "value", "run_uuid"),
        "latest_metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
        "metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    }
    REVISIONS = ("dc11669786a5",)  # the schemas tests/reports/test_store.py holds to MLflow's client: MLflow 3.17.2's
    CHUNK = 500  # run ids per history query (SQLite's bound parameters)
    READ_ERRORS = (sqlite3.Error,)

    def __init__(self, path: Path):
        self.uri = f"sqlite:///{path}"
        self.db = _read_only(path, timeout=60)  # a running sweep may be writing

    def experiment_id(self, name: str) -> str | None:
        row = self.db.execute("select experiment_id from experiments where name = ? and lifecycle_stage = 'active'",
                              (name,)).fetchone()
        return None if row is None else str(row[0])

    def experiment_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("select name from experiments where lifecycle_stage = 'active'")]

    def runs(self, experiment_id: str, tag: str, value: str) -> list[RunRecord]:
        """The experiment's active runs whose tag `tag` is `value`."""
        chosen = ("select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid where r.experiment_id = ? "
                  "and r.lifecycle_stage = 'active' and t.key = ? and t.value = ?")
        args = (int(experiment_id), tag, value)
        info = self.db.execute(f"select run_uuid, name, start_time, end_time from runs where run_uuid in ({chosen}) "
                               "order by start_time desc, run_uuid", args).fetchall()
        tags: dict[str, dict] = {row[0]: {} for row in info}
        params: dict[str, dict] = {row[0]: {} for row in info}
        latest: dict[str, dict] = {row[0]: {} for row in info}
        # a run a sweep creates between these queries is left out: it was not there when info was read
        for run_id, key, text in self.db.execute(f"select run_uuid, key, value from tags where run_uuid in ({chosen})", args):
            if run_id in tags:
                tags[run_id][key] = text
        for run_id, key, text in self.db.execute(f"select run_uuid, key, value from params where run_uuid in ({chosen})", args):
            if run_id in params:
                params[run_id][key] = text
        for run_id, key, v, ts, step, nan in self.db.execute(
                f"select run_uuid, key, value, timestamp, step, is_nan from latest_metrics where run_uuid in ({chosen})", args):
            if run_id in latest:
                latest[run_id][key] = (int(ts), int(step), float("nan") if nan else float(v))
        return [RunRecord(run_id, name, start, end, tags[run_id], params[run_id], latest[run_id])
                for run_id, name, start, end in info]

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """A run's artifact file, when the run's artifacts are local files (file://), else None."""
        row = self.db.execute("select artifact_uri from runs where run_uuid = ?", (run_id,)).fetchone()
        if row is None or not str(row[0]).startswith("file://"):
            return None
        file = Path(unquote(urlparse(row[0]).path)) / path
        return file.read_bytes() if file.is_file() else None

    def histories(self, key: str, run_ids: list[str]) -> dict[tuple[str, str], History]:
        out: dict[tuple[str, str], History] = {}
        for i in range(0, len(run_ids), self.CHUNK):
            chunk = run_ids[i: i + self.CHUNK]
            marks = ",".join("?" * len(chunk))
            for run_id, ts, step, v, nan in self.db.execute(
                    f"select run_uuid, timestamp, step, value, is_nan from metrics where key = ? and run_uuid in ({marks})",
                    (key, *chunk)):
                out.setdefault((run_id, key), []).append((int(ts), int(step), float("nan") if nan else float(v)))
        return out


class MlflowReader:
    """Any store through MLflow's client: a tracking server (histories in bulk requests, several in
    flight), a SQL store (MLflow's bulk history query), a file store (one call per run and metric)."""

    RUN_IDS_PER_CALL = 100  # the tracking server's limit for one bulk-history request
    SERVER_MAX_RESULTS = 25_000
    SERVER_THREADS = 4  # bulk-history requests in flight at once: a server answers them on its own workers

    def __init__(self, uri: str):
        from mlflow.exceptions import MlflowException  # here: a SQLite store is read without importing MLflow
        from mlflow.tracking import MlflowClient  # here: a SQLite store is read without importing MLflow

        self.uri = uri
        self.READ_ERRORS = (MlflowException,)
        try:
            self.client = MlflowClient(tracking_uri=uri)
        except Exception as err:  # an unknown scheme, a malformed URI
            raise ReportError(f"Cannot open the MLflow store at {uri}: {str(err).strip().splitlines()[0]}") from None

    def experiment_id(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None

    def experiment_names(self) -> list[str]:
        from mlflow.entities import ViewType  # here: a SQLite store is read without importing MLflow

        out, token = [], None
        while True:
            page = self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
            out.extend(e.name for e in page)
            token = page.token
            if not token:
                return out

    def runs(self, experiment_id: str, tag: str, value: str) -> list[RunRecord]:
        from mlflow.entities import ViewType  # here: a SQLite store is read without importing MLflow

        out, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], f"tags.`{tag}` = '{value}'", ViewType.ACTIVE_ONLY, 1000,
                                           page_token=token)
            out.extend(RunRecord(r.info.run_id, r.info.run_name, r.info.start_time, r.info.end_time, dict(r.data.tags),
                               dict(r.data.params),
                               {m.key: (m.timestamp, m.step, m.value) for m in r.data._metric_objs})  # kept privately
                       for r in page)
            token = page.token
            if not token:
                return out

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """A run's artifact file, or None when it is not there or cannot be fetched."""
        import mlflow.artifacts  # here: a SQLite store is read without importing MLflow

        try:
            with tempfile.TemporaryDirectory() as folder:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=folder,
                                                            tracking_uri=self.uri)
                return Path(local).read_bytes()
        except Exception:  # a missing artifact or an unreachable artifact store: the report says it is missing
            return None

    def histories(self, key: str, run_ids: list[str]) -> dict[tuple[str, str], History]:
        out: dict[tuple[str, str], History] = {}
        store = self.client._tracking_client.store
        if hasattr(store, "get_metric_history_bulk"):  # SQLAlchemy: one query for all runs
            for i in range(0, len(run_ids), 500):
                for m in store.get_metric_history_bulk(run_ids[i: i + 500], key, max_results=10**9):
                    out.setdefault((m.run_id, key), []).append((m.timestamp, m.step, m.value))
        elif hasattr(store, "get_host_creds"):  # a tracking server
            creds = store.get_host_creds()
            chunks = [run_ids[i: i + self.RUN_IDS_PER_CALL] for i in range(0, len(run_ids), self.RUN_IDS_PER_CALL)]
            with ThreadPoolExecutor(self.SERVER_THREADS) as pool:
                for part in pool.map(lambda chunk: self._bulk_from_server(creds, key, chunk), chunks):
                    for item, history in part.items():
                        out.setdefault(item, []).extend(history)
        else:
            for run_id in run_ids:
                out[(run_id, key)] = [(m.timestamp, m.step, m.value) for m in self.client.get_metric_history(run_id, key)]
        return out

    def _bulk_from_server(self, creds, key: str, run_ids: list[str]) -> dict[tuple[str, str], History]:
        from mlflow.utils.rest_utils import http_request  # here: a SQLite store is read without importing MLflow

        response = http_request(creds, "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                                params={"run_id": run_ids, "metric_key": key, "max_results": self.SERVER_MAX_RESULTS})
        response.raise_for_status()
        metrics = response.json().get("metrics", [])
        if len(metrics) >= self.SERVER_MAX_RESULTS and len(run_ids) > 1:  # the answer was cut: ask in halves
            half = len(run_ids) // 2
            return self._bulk_from_server(creds, key, run_ids[:half]) | self._bulk_from_server(creds, key, run_ids[half:])
        out: dict[tuple[str, str], History] = {}
        for m in metrics:
            out.setdefault((m["run_id"], key), []).append((int(m["timestamp"]), int(m["step"]), float(m["value"])))
        return out


Reader = SqliteReader | MlflowReader
