"""Tracking URIs: resolution, secrets never shown, unusable stores refused before any trial."""
from __future__ import annotations

import json

import pytest

from sweep.errors import TrackingError
from sweep.tracking.secrets import mask_secrets
from sweep.tracking.store import check_store, mask_uri, resolve_tracking_uri


def test_default_store_is_an_absolute_sqlite_file_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///sub/x.db") == f"sqlite:///{tmp_path}/sub/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(None) == "http://tracking:5000"


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cret@host:5000", "http://alice:***@host:5000"),
    ("https://tok3n@host/mlflow", "https://***@host/mlflow"),
    ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
    ("http://host:5000/?x=1&API_KEY=abc#f", "http://host:5000/?x=1&API_KEY=***#f"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("databricks://profile", "databricks://profile"),
])
def test_secrets_are_masked(uri, shown):
    assert mask_uri(uri) == shown


def test_secrets_are_masked_inside_any_text():
    text = "failed: url http://bob:pw@h:1/api?token=t0k&run=1 then https://tok@h2/x (retry)"
    assert mask_secrets(text) == "failed: url http://bob:***@h:1/api?token=***&run=1 then https://***@h2/x (retry)"


def test_an_unreachable_server_fails_fast_with_one_sentence():
    with pytest.raises(TrackingError) as err:
        check_store("http://bob:hunter2@127.0.0.1:9")
    message = str(err.value)
    assert "unreachable" in message and "hunter2" not in message and "bob:***@127.0.0.1:9" in message


def test_a_store_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        check_store(f"sqlite:///{tmp_path}/missing/mlflow.db")


STARTER = """
import sys, time
from sweep.space import load_space
from sweep.tracking.runs import start_sweep
from sweep.tracking.store import check_store
uri, space, name, go = sys.argv[1:5]
spec = load_space(space)
while time.time() < float(go):  # both processes start at the same moment
    time.sleep(0.005)
check_store(uri)
print(start_sweep(uri, "shared", spec, name, {}))
"""


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_two_sweeps_starting_at_once_on_a_new_store_both_work(tmp_path):
    """A new mlflow.db is created and migrated by one process at a time (a file lock), and the
    experiment both use is created once."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from tests.conftest import write_space

    root = str(Path(__file__).resolve().parents[2])
    space = write_space(tmp_path, "s", search={"base_lr": {"uniform": [0.1, 1.0]}}, num_samples=1)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    go = time.time() + 8  # after both interpreters have imported MLflow
    env = {**os.environ, "PYTHONPATH": root}
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, uri, str(space), f"sweep-{i}", str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["sweep-0", "sweep-1"]


def test_a_store_that_fails_names_the_real_cause(tmp_path):
    import sqlite3

    path = tmp_path / "mlflow.db"
    con = sqlite3.connect(path)  # an MLflow-looking store whose migration cannot run
    con.execute("create table alembic_version (version_num varchar(32) not null primary key)")
    con.execute("insert into alembic_version values ('no-such-revision')")
    con.execute("create table experiments (experiment_id integer)")
    con.commit()
    con.close()
    with pytest.raises(TrackingError) as err:
        check_store(f"sqlite:///{path}")
    message = str(err.value)
    assert message.startswith(f"MLflow store sqlite:///{path} cannot be opened: ")
    assert "unreachable" not in message and "no-such-revision" in message, message


def _trial(trial_id, seed, epoch=0):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"seed": seed}, last_result={"epoch": epoch}, num_failures=0,
                           path=f"/trials/{trial_id}", checkpoint=None)


def _result(epoch, value):
    return {"epoch": epoch, "loss": 2.0 - value, "knn_acc": value, "epoch_s": 1.0}


def _one_trial_sweep(folder, name: str):
    """A sweep's parent run in a new SQLite store, for driving its callback by hand (no Ray): one
    seed, 6 epochs. Returns (uri, spec, client, experiment id, parent run id)."""
    from mlflow.tracking import MlflowClient

    from sweep.space import load_space
    from sweep.tracking import writers
    from tests.conftest import write_space

    uri = f"sqlite:///{folder}/mlflow.db"
    spec = load_space(str(write_space(folder, name, base={"epochs": 6}, grid={"seed": [0]}, algorithm="grid",
                                      asha=False)))
    client = MlflowClient(uri)
    exp = client.create_experiment(name)
    parent = client.create_run(exp, run_name=name, tags={"byol_sweep.role": "sweep"}).info.run_id
    writers.DRIVER_TRACKING_URI[parent] = uri
    return uri, spec, client, exp, parent


def test_rerun_epochs_are_logged_again_and_the_surviving_attempt_wins(tmp_path):
    """A driver dies after epoch 5 was logged; its trial's newest checkpoint on disk is epoch 3, so
    epochs 4 and 5 run again: MLflow gets them again (newer timestamps), the run is tagged
    rerun_from_epoch, and the report keeps the values of the attempt whose weights went on. The
    resumed driver finds the trial's run and its last epoch from the journal alone."""
    import pickle

    from reports.load import _curves
    from reports.store import open_store
    from sweep.tracking import runs, writers
    from sweep.tuner import mlflow_callback

    uri, spec, client, exp, parent = _one_trial_sweep(tmp_path, "rerun")
    folder = tmp_path / "sweep"
    writers.open_journal(uri, parent, folder, new=True)
    try:
        cb = mlflow_callback.MlflowTracking(uri, exp, parent, spec, {"cpu": 1})
        cb.setup()
        trial = _trial("t1", 0)
        cb.on_trial_start(0, [trial], trial)
        for epoch in range(1, 6):
            cb.on_trial_result(0, [trial], trial, _result(epoch, 0.1 * epoch))
            if epoch == 3:
                stale = pickle.loads(pickle.dumps(cb))  # Tune's copy, saved with the checkpoint of epoch 3
        assert writers.wait_sent(parent, 60) == 0
    finally:
        writers.close_journal(parent, timeout=0)

    writers.open_journal(uri, parent, folder)  # the resumed driver; MLflow is not asked
    try:
        stale._client = "no MLflow reads while the journal knows"
        stale.setup()
        cb_trial = _trial("t1", 0, epoch=6)
        stale.on_trial_start(0, [cb_trial], cb_trial)
        for epoch in (4, 5, 6):  # from the checkpoint of epoch 3: the re-run's values
            stale.on_trial_result(0, [cb_trial], cb_trial, _result(epoch, 0.5 + 0.01 * epoch))
        stale.on_trial_complete(0, [cb_trial], cb_trial)
        runs.end_sweep(uri, parent, "finished")
    finally:
        assert writers.close_journal(parent) == 0
    (run,) = client.search_runs([exp], "tags.`byol_sweep.role` = 'trial'")
    assert run.data.tags["rerun_from_epoch"] == "4" and run.data.tags["status"] == "completed"
    history = client.get_metric_history(run.info.run_id, "knn_acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 4, 5, 5, 6]
    reader = open_store(uri)
    curves = _curves(reader, reader.runs(exp, "byol_sweep.role", "trial"), "rerun")
    assert list(curves["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert list(curves["knn_acc"].round(2)) == [0.1, 0.2, 0.3, 0.54, 0.55, 0.56]
    assert run.data.metrics["knn_acc"] == 0.56
    assert client.get_run(parent).data.tags["byol_sweep.state"] == "finished"


def test_a_trials_run_records_the_nodes_it_ran_on_across_a_retry_and_a_resume(tmp_path):
    """The driver's callback alone (no Ray): node_id is the latest node, nodes the history; a
    restarted trial on the same node adds nothing; a resumed driver continues the history."""
    import pickle
    from types import SimpleNamespace

    from sweep.tracking import writers
    from sweep.tuner import mlflow_callback

    uri, spec, client, exp, parent = _one_trial_sweep(tmp_path, "moves")
    trial = SimpleNamespace(trial_id="t1", config={"seed": 0}, last_result={"epoch": 6}, num_failures=0,
                            path="/trials/t1", checkpoint=None)

    def result(epoch, node):
        return {"epoch": epoch, "loss": 1.0, "knn_acc": 0.5, "epoch_s": 1.0, "node_id": node}

    writers.open_journal(uri, parent, tmp_path / "sweep", new=True)
    try:
        cb = mlflow_callback.MlflowTracking(uri, exp, parent, spec, {"cpu": 1})
        cb.setup()
        cb.on_trial_start(0, [trial], trial)
        cb.on_trial_result(0, [trial], trial, result(1, "node-a"))
        cb.on_trial_result(0, [trial], trial, result(2, "node-a"))
        trial.num_failures = 1
        cb.on_trial_recover(0, [trial], trial)
        cb.on_trial_result(0, [trial], trial, result(3, "node-b"))
        stale = pickle.loads(pickle.dumps(cb))  # Tune's copy, as a resumed driver restores it
    finally:
        writers.close_journal(parent)
    (run,) = client.search_runs([exp], "tags.`byol_sweep.role` = 'trial'")
    assert run.data.tags["node_id"] == "node-b" and json.loads(run.data.tags["nodes"]) == ["node-a", "node-b"]

    writers.open_journal(uri, parent, tmp_path / "sweep")  # the resumed driver
    try:
        stale.setup()
        stale.on_trial_start(0, [trial], trial)
        stale.on_trial_result(0, [trial], trial, result(4, "node-b"))  # the same node again: no new entry
        stale.on_trial_result(0, [trial], trial, result(5, "node-c"))
        stale.on_trial_result(0, [trial], trial, result(6, "node-c"))
        stale.on_trial_complete(0, [trial], trial)
    finally:
        writers.close_journal(parent)
    (run,) = client.search_runs([exp], "tags.`byol_sweep.role` = 'trial'")
    assert run.data.tags["node_id"] == "node-c"
    assert json.loads(run.data.tags["nodes"]) == ["node-a", "node-b", "node-c"]
    assert run.data.tags["status"] == "completed"
