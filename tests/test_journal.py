"""The local MLflow journal: written first, replayed exactly once, placeholders mapped."""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from sweep.journal import Journal, JournalledWriter


class Flaky:
    """An MlflowClient that refuses while `down` is set."""

    def __init__(self, uri):
        self.real = MlflowClient(uri)
        self.down = False

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError("connection refused")
            return method(*args, **kwargs)
        return call


def metric(epoch):
    return {"key": "loss", "value": 1.0 / epoch, "timestamp": 1000 + epoch, "step": epoch}


def test_records_are_journalled_sent_once_and_wait_while_mlflow_is_down(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("j")
    client = Flaky(uri)
    told = []
    writer = JournalledWriter(Journal(tmp_path / "sweep" / "journal.jsonl"), lambda: client, told.append)
    run_id = writer.write("create_run", experiment_id=exp, run_name="trial_a", tags={"status": "running"})
    assert not run_id.startswith("local-")
    writer.write("log_batch", run_id=run_id, metrics=[metric(1)])

    client.down = True  # the server goes away: a new run and two epochs wait in the journal
    offline_run = writer.write("create_run", experiment_id=exp, run_name="trial_b", tags={"status": "running"})
    assert offline_run.startswith("local-")
    writer.write("log_batch", run_id=run_id, metrics=[metric(2)])
    writer.write("log_batch", run_id=offline_run, metrics=[metric(1)])
    writer.write("set_tag", run_id=offline_run, key="status", value="completed")
    assert writer.offline and len(told) == 1 and "training goes on" in told[0]

    client.down = False  # back: everything pending goes, in order, once
    assert writer.flush()
    assert writer.flush()  # nothing left: nothing sent twice
    real = MlflowClient(uri)
    runs = {r.info.run_name: r for r in real.search_runs([exp])}
    assert set(runs) == {"trial_a", "trial_b"}
    assert [m.step for m in real.get_metric_history(runs["trial_a"].info.run_id, "loss")] == [1, 2]
    assert [m.step for m in real.get_metric_history(runs["trial_b"].info.run_id, "loss")] == [1]
    assert runs["trial_b"].data.tags["status"] == "completed"
    lines = [json.loads(line) for line in (tmp_path / "sweep" / "journal.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(1, 7))


def test_a_new_driver_replays_what_the_last_one_left(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("j")
    client = Flaky(uri)
    client.down = True
    path = tmp_path / "journal.jsonl"
    writer = JournalledWriter(Journal(path), lambda: client, lambda message: None)
    run = writer.write("create_run", experiment_id=exp, run_name="r", tags={})
    writer.write("log_batch", run_id=run, metrics=[metric(1), metric(2)], params={"seed": "0"})
    with open(path, "a") as f:
        f.write('{"id": 3, "op": "set_t')  # the driver died mid-write: a torn last line
    # resume: a fresh journal object on the same file sends what is pending, once
    again = Journal(path)
    assert again.replay(MlflowClient(uri)) == 2 and again.replay(MlflowClient(uri)) == 0
    (r,) = MlflowClient(uri).search_runs([exp])
    assert r.data.params == {"seed": "0"} and len(MlflowClient(uri).get_metric_history(r.info.run_id, "loss")) == 2
