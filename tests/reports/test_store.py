"""The report reads a SQLite store with sqlite3 alone (no MLflow import) and gets, sweep for sweep,
exactly what MLflow's own client gives (reports/store.py). The render tests' fake sweeps are held
to the same in tests/reports/test_render.py."""
from __future__ import annotations

import types
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from benchmarks.report_scale import synthesise
from reports import ReportError, load
from reports.load import load_sweep
from reports.store import MlflowReader, SqliteReader, open_store


def assert_same(a: load.Sweep, b: load.Sweep) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y, obj=name)
        else:
            assert x == y, name


def read_both_ways(path: Path, experiment: str, monkeypatch) -> tuple[load.Sweep, load.Sweep]:
    monkeypatch.setattr(load.time, "time", lambda: 1.9e9)  # running trials' wall time counts to "now"
    direct, through_mlflow = open_store(f"sqlite:///{path}"), MlflowReader(f"sqlite:///{path}")
    assert isinstance(direct, SqliteReader)
    return load_sweep(direct, experiment), load_sweep(through_mlflow, experiment)


def test_an_asha_sweep_with_deleted_runs_reads_the_same_both_ways(tmp_path, monkeypatch):
    tmp_path = tmp_path / "my runs"  # a space: an SQLite URI needs the path quoted
    tmp_path.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = synthesise(uri, 30)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'")
    client.delete_run(runs[0].info.run_id)  # a deleted run is no trial of the sweep
    client.log_batch(runs[1].info.run_id, metrics=[Metric("knn_acc", float("nan"), 1, 1)])
    gone = client.create_experiment("deleted-experiment")
    client.delete_experiment(gone)
    direct, through_mlflow = read_both_ways(tmp_path / "mlflow.db", name, monkeypatch)
    assert_same(direct, through_mlflow)
    assert len(direct.trials) == 29 and runs[0].info.run_name not in set(direct.trials["trial"])
    assert (direct.trials["status"] == "stopped_early").sum() > 10  # ASHA stopped most: their one epoch read from the run
    with pytest.raises(ReportError, match="'deleted-experiment' not found"):
        load_sweep(open_store(uri), "deleted-experiment")


def test_other_stores_go_through_mlflow(tmp_path):
    assert isinstance(open_store("http://127.0.0.1:9"), MlflowReader)  # no request is made to open it
    with pytest.raises(ReportError, match="is not an MLflow store"):
        (tmp_path / "other.db").write_bytes(b"")
        open_store(f"sqlite:///{tmp_path / 'other.db'}")


def sweep_with_a_journal(tmp_path, name: str):
    """A sweep's parent run in a SQLite store (its params say where its folder is) and its empty journal
    there: (uri, client, experiment id, parent run id, journal)."""
    from sweep.state import local_state_dir
    from sweep.tracking.journal import Journal
    from sweep.tracking.writers import journal_path

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(name)
    storage = tmp_path / "runs"
    parent = client.create_run(exp, run_name=name, tags={"byol_sweep.role": "sweep"}).info.run_id
    client.log_param(parent, "sweep_name", name)
    client.log_param(parent, "storage", str(storage))
    return uri, client, exp, parent, Journal(journal_path(local_state_dir(str(storage), name)))


def test_report_sends_a_sweeps_journalled_records_before_reading(tmp_path, capsys):
    """A sweep whose journal still holds records (its server was away at the end): `byol-sweep report`
    finds the sweep's folder from the parent run's params, sends them, then reads them into the report."""
    from sweep.cli import main
    uri, client, exp, parent, journal = sweep_with_a_journal(tmp_path, "journalled")
    journal.append("create_run", experiment_id=exp, run_name="trial_00000", placeholder="local-t0",
                   tags={"mlflow.parentRunId": parent, "byol_sweep.role": "trial", "status": "completed"})
    journal.append("log_batch", run_id="local-t0", metrics=[{"key": "knn_acc", "value": 0.5 + 0.1 * e, "step": e,
                                                             "timestamp": 1000 * e} for e in (1, 2, 3)])
    assert journal.pending_count() == 2

    assert main(["report", "--experiment", "journalled", "--tracking-uri", uri, "--out", str(tmp_path / "rep")]) == 0
    assert "sent 2 MLflow records of sweep journalled from its journal before reading" in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "rep" / "trials.csv")
    assert list(trials["trial"]) == ["trial_00000"] and trials["final_metric"].iloc[0] == pytest.approx(0.8)


def test_report_names_the_records_mlflow_refused_in_its_health_section(tmp_path, capsys):
    """A record MLflow refuses (a param logged again with another value) is set aside beside the
    journal; the console says so once, and the report's Health section names it: run, what, reason."""
    from sweep.cli import main
    uri, client, exp, parent, journal = sweep_with_a_journal(tmp_path, "refusing")
    journal.append("create_run", experiment_id=exp, run_name="trial_00000", placeholder="local-t0",
                   tags={"mlflow.parentRunId": parent, "byol_sweep.role": "trial", "status": "completed"})
    journal.append("log_batch", run_id="local-t0", params={"base_lr": "0.1"},
                   metrics=[{"key": "knn_acc", "value": 0.5, "step": 1, "timestamp": 1000}])
    journal.append("log_batch", run_id="local-t0", params={"base_lr": "0.2"})  # MLflow keeps a param's first value

    assert main(["report", "--experiment", "refusing", "--tracking-uri", uri, "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert err.count("will never reach MLflow") == 1, err
    health = (tmp_path / "rep" / "report.md").read_text().split("## Health")[1]
    assert ("Refused by MLflow: 1 record, set aside beside the sweep's journal (mlflow-journal.jsonl.refused in its "
            "folder); this report misses what they hold.") in health
    row = next(line for line in health.splitlines() if line.startswith("| trial_00000"))
    assert "| params base_lr |" in row and "base_lr" in row.split("| params base_lr |")[1], row


class _ListedThenCreated:
    """A reader's connection to the store: right after it lists a sweep's child runs, the sweep (still
    running) creates one more."""

    def __init__(self, db, create):
        self.db, self.create = db, create

    def execute(self, sql, args=()):
        cursor = self.db.execute(sql, args)
        if "order by start_time desc" not in sql or "mlflow.parentRunId" not in args:
            return cursor
        rows = cursor.fetchall()  # read before the sweep writes: SQLite lets no commit past a pending read
        self.create()
        return types.SimpleNamespace(fetchall=lambda: rows)


def test_a_trial_a_running_sweep_creates_while_the_report_reads_is_left_out(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = synthesise(uri, 12)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name).experiment_id
    parent = client.search_runs([exp], "tags.`byol_sweep.role` = 'sweep'")[0].info.run_id
    reader = open_store(uri)
    reader.db = _ListedThenCreated(reader.db, lambda: client.create_run(
        exp, run_name="trial_late", tags={"mlflow.parentRunId": parent, "byol_sweep.role": "trial", "status": "running"}))
    sweep = load_sweep(reader, name)
    assert len(sweep.trials) == 12 and "trial_late" not in set(sweep.trials["trial"])
    assert len(load_sweep(open_store(uri), name).trials) == 13  # the next report has it
