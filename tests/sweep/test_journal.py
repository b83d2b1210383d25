"""The local MLflow journal: written first, replayed exactly once, placeholders mapped."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from sweep.tracking.journal import Journal
from sweep.tracking.sender import JournalledWriter, replay
from tests.conftest import new_store


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


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_records_are_journalled_sent_once_and_wait_while_mlflow_is_down(tmp_path, migrated_store):
    uri = new_store(migrated_store, tmp_path)
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


def test_a_new_driver_replays_what_the_last_one_left(tmp_path, migrated_store):
    uri = new_store(migrated_store, tmp_path)
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
    assert replay(again, MlflowClient(uri)) == 2 and replay(again, MlflowClient(uri)) == 0
    (r,) = MlflowClient(uri).search_runs([exp])
    assert r.data.params == {"seed": "0"} and len(MlflowClient(uri).get_metric_history(r.info.run_id, "loss")) == 2


class AcceptsThenDies:
    """An MlflowClient whose `fail_after`-th write reaches MLflow, then the sender dies (or its answer
    times out) before it can mark the record sent."""

    WRITES = {"create_run", "log_batch", "set_tag", "set_terminated", "update_run"}

    def __init__(self, uri, fail_after):
        self.real = MlflowClient(uri)
        self.fail_after = fail_after
        self.writes = 0

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            result = method(*args, **kwargs)
            if name in self.WRITES:
                self.writes += 1
                if self.writes == self.fail_after:
                    raise TimeoutError("the answer never came")
            return result
        return call


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_a_record_mlflow_accepted_before_the_sender_died_is_not_sent_twice(tmp_path, migrated_store):
    uri = new_store(migrated_store, tmp_path)
    exp = MlflowClient(uri).create_experiment("j")
    for fail_after in (1, 2, 3):  # after the run's creation, after its first epoch, after its second
        path = tmp_path / f"journal-{fail_after}.jsonl"
        journal = Journal(path)
        journal.append("create_run", experiment_id=exp, run_name=f"r{fail_after}", tags={}, placeholder="local-%d" % fail_after)
        journal.append("log_batch", run_id=f"local-{fail_after}", metrics=[metric(1)], params={"seed": "0"})
        journal.append("log_batch", run_id=f"local-{fail_after}", metrics=[metric(2)], tags={"status": "completed"})
        try:
            replay(journal, AcceptsThenDies(uri, fail_after))
        except TimeoutError:
            pass
        # MLflow has the window's first fail_after records; the journal knows only that it was sending them
        assert journal.sent == 0 and journal.sending == 3
        assert replay(Journal(path), MlflowClient(uri)) == 3  # a new driver: the window checked, the rest sent once
        (run,) = MlflowClient(uri).search_runs([exp], filter_string=f"attributes.run_name = 'r{fail_after}'")
        assert [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run.info.run_id, "loss")] == [
            (1, 1.0), (2, 0.5)]
        assert run.data.params == {"seed": "0"} and run.data.tags["status"] == "completed"
        assert run.data.tags["byol_sweep.record_id"] == f"local-{fail_after}"
    assert len(MlflowClient(uri).search_runs([exp])) == 3


def test_in_the_background_a_write_never_waits_for_mlflow(tmp_path, migrated_store):
    import threading

    uri = new_store(migrated_store, tmp_path)
    exp = MlflowClient(uri).create_experiment("j")
    client = Flaky(uri)
    gate = threading.Event()
    real_log_batch = client.real.log_batch

    def slow_log_batch(*args, **kwargs):  # a server that hangs until released
        gate.wait(timeout=60)
        return real_log_batch(*args, **kwargs)

    client.real.log_batch = slow_log_batch
    told = []
    writer = JournalledWriter(Journal(tmp_path / "journal.jsonl"), lambda: client, told.append, background=True,
                              retry_s=0.05)
    try:
        run = writer.write("create_run", experiment_id=exp, run_name="r", tags={"byol_sweep.trial_id": "t1"})
        assert run.startswith("local-")  # the placeholder, at once
        for epoch in (1, 2, 3):  # the sender is stuck in the first: the writes still return
            writer.write("log_batch", run_id=run, metrics=[metric(epoch)])
        assert writer.state.runs(**{"byol_sweep.trial_id": "t1"}) == [run] and writer.state.last_step[run] == 3
        assert writer.drain(0.1) > 0
        client.down = True  # now it refuses: the sender says so once and keeps trying
        gate.set()
        writer.write("set_tag", run_id=run, key="status", value="completed")
        client.down = False
        assert writer.drain(60) == 0
    finally:
        writer.close()
    (r,) = MlflowClient(uri).search_runs([exp])
    assert [m.step for m in MlflowClient(uri).get_metric_history(r.info.run_id, "loss")] == [1, 2, 3]
    assert r.data.tags["status"] == "completed"


def test_records_are_fsynced_in_groups_before_they_are_sent(tmp_path, monkeypatch, migrated_store):
    """A group commit: appends reach the operating system at once (a process that dies loses none)
    and the disk with one fsync for all of them, before the sender sends any of them."""
    import os

    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    uri = new_store(migrated_store, tmp_path)
    exp = MlflowClient(uri).create_experiment("group")
    journal = Journal(tmp_path / "j.jsonl")
    journal.append("create_run", experiment_id=exp, run_name="r", tags={}, placeholder="local-r")
    for epoch in range(1, 51):
        journal.append("log_batch", run_id="local-r", metrics=[metric(epoch)])
    assert calls == []
    assert [r["id"] for r in Journal(tmp_path / "j.jsonl").pending()] == list(range(1, 52))  # readable at once
    assert JournalledWriter(journal, lambda: MlflowClient(uri), print).flush()
    assert len(calls) == 1
    run = MlflowClient(uri).search_runs([exp])[0]
    assert [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "loss")] == list(range(1, 51))
