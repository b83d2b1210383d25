"""reports/load.py reads metric histories in bulk, and only where a run has more than its first epoch,
through either reader of reports/store.py."""
from __future__ import annotations

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from reports.load import metric_histories
from reports.store import MlflowReader, SqliteReader, open_store


def _later_per_step(history) -> dict[int, float]:
    """step -> the value a report keeps (the later by timestamp, as reports/load._curves reads it)."""
    return {step: value for _, step, value in sorted(history)}


def _log_runs(client: MlflowClient, n_runs: int) -> str:
    """Runs that stopped at epoch 1 (one with epoch 1 logged twice, as a re-run does), and runs with
    several epochs (one with epoch 2 logged twice); knn_acc on all, loss on every other run."""
    exp = client.create_experiment("histories")
    for i in range(n_runs):
        run_id = client.create_run(exp, run_name=f"trial_{i:03d}", tags={"group": "g"}).info.run_id
        epochs = 1 if i % 3 == 0 else 2 + i % 4
        metrics = [Metric("knn_acc", 0.1 * e + i / 1000, 1000 * e, e) for e in range(1, epochs + 1)]
        metrics += [Metric("loss", 2.0 / e, 1000 * e, e) for e in range(1, epochs + 1) if i % 2 == 0]
        if i in (0, 1):  # a re-run epoch: the later value is the one kept
            metrics.append(Metric("knn_acc", 0.9, 5000 * epochs, epochs if i == 0 else 2))
        client.log_batch(run_id, metrics=metrics)
    return exp


def _check(client: MlflowClient, reader, exp: str) -> list:
    keys = ["knn_acc", "loss"]
    runs = reader.runs(exp, "group", "g")
    histories = metric_histories(reader, runs, keys)
    expected = {(r.run_id, k) for r in runs for k in keys if k in r.metrics}
    assert set(histories) == expected and len(expected) > 12
    for run_id, key in expected:
        full = [(m.timestamp, m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert _later_per_step(histories[(run_id, key)]) == _later_per_step(full)
        if max(step for _, step, _ in full) > 1:  # read in full, duplicates included
            assert sorted(histories[(run_id, key)]) == sorted(full)
    return runs


@pytest.mark.parametrize("reader_of", [SqliteReader, lambda path: MlflowReader(f"sqlite:///{path}")],
                         ids=["sqlite3", "mlflow"])
def test_histories_from_sqlite_skip_nothing_a_report_reads(tmp_path, reader_of):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = _log_runs(client, 12)
    reader = reader_of(tmp_path / "mlflow.db")
    runs = _check(client, reader, exp)
    one_epoch = next(r for r in runs if r.name == "trial_000")
    assert metric_histories(reader, [one_epoch], ["knn_acc"]) == {
        (one_epoch.run_id, "knn_acc"): [(5000, 1, 0.9)]}  # epoch 1's later value, read from the run itself


@pytest.mark.slow  # a real mlflow server
def test_histories_from_a_server_in_parallel_requests_match_each_runs_history(mlflow_server, monkeypatch):
    monkeypatch.setattr(MlflowReader, "RUN_IDS_PER_CALL", 4)  # several requests per metric, in flight at once
    client = MlflowClient(mlflow_server)
    exp = _log_runs(client, 15)
    reader = open_store(mlflow_server)
    assert isinstance(reader, MlflowReader)
    _check(client, reader, exp)
