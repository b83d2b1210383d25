"""The journal's sender gathers a run's records into one MLflow call (sweep/tracking/sender.py), and
still sends each record exactly once, in its run's order, setting aside only what MLflow refuses."""
from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from sweep.tracking.journal import Journal
from sweep.tracking.sender import batches, replay


class CountingClient:
    """An MlflowClient that counts its calls and, from the `fail_at`-th log_batch, has MLflow take the
    call and then loses its answer (the sender dies or times out)."""

    def __init__(self, uri, fail_at=None):
        self.real = MlflowClient(uri)
        self.fail_at = fail_at
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            result = method(*args, **kwargs)
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == "log_batch" and self.fail_at is not None and self.calls[name] == self.fail_at:
                raise TimeoutError("the answer never came")
            return result
        return call


def epoch(e, key="knn_acc"):
    return {"key": key, "value": e / 100, "timestamp": 1000 + e, "step": e}


def interleaved_sweep(journal: Journal, experiment_id: str, runs: int = 3, epochs: int = 20) -> list[str]:
    """runs trials created, then their epochs interleaved as concurrent trials report, then their ends."""
    names = [f"local-{i}" for i in range(runs)]
    for i, run in enumerate(names):
        journal.append("create_run", experiment_id=experiment_id, run_name=f"trial_{i}", tags={}, placeholder=run)
        journal.append("log_batch", run_id=run, params={"seed": str(i)})
    for e in range(1, epochs + 1):
        for run in names:
            journal.append("log_batch", run_id=run, metrics=[epoch(e), epoch(e, "loss")], tags={"epoch": str(e)})
    for run in names:
        journal.append("log_batch", run_id=run, tags={"status": "completed"})
        journal.append("set_terminated", run_id=run, status="FINISHED")
    return names


def histories(uri: str, experiment_id: str) -> dict[str, list[int]]:
    client = MlflowClient(uri)
    return {r.info.run_name: [m.step for m in client.get_metric_history(r.info.run_id, "knn_acc")]
            for r in client.search_runs([experiment_id])}


def test_concurrent_trials_epochs_go_in_one_call_a_run_and_arrive_once_in_order(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    journal = Journal(tmp_path / "journal.jsonl")
    interleaved_sweep(journal, exp)
    client = CountingClient(uri)
    assert replay(journal, client) == 3 * 2 + 3 * 20 + 3 * 2  # every record, once
    # one call a run for its params and one for its 20 epochs and its end tags: not 20 + 1 calls a run
    assert client.calls["log_batch"] == 3 * 2 and client.calls["create_run"] == 3
    assert histories(uri, exp) == {f"trial_{i}": list(range(1, 21)) for i in range(3)}
    for run in MlflowClient(uri).search_runs([exp]):
        assert run.data.tags["epoch"] == "20" and run.data.tags["status"] == "completed"  # the later value
        assert run.info.status == "FINISHED" and run.data.metrics["loss"] == 0.2
    assert journal.pending_count() == 0 and replay(journal, client) == 0


def test_a_run_s_group_closes_at_its_other_records_so_its_order_holds():
    records = [{"id": i + 1, "op": op, "args": args} for i, (op, args) in enumerate([
        ("log_batch", {"run_id": "a", "metrics": [epoch(1)]}),
        ("log_batch", {"run_id": "b", "metrics": [epoch(1)]}),
        ("set_terminated", {"run_id": "a", "status": "FINISHED"}),
        ("log_batch", {"run_id": "a", "tags": {"status": "completed"}}),
        ("log_batch", {"run_id": "b", "metrics": [epoch(2)]}),
        ("log_batch", {"run_id": "b", "params": {"seed": "0"}}),
        ("log_batch", {"run_id": "b", "metrics": [epoch(3)]}),
    ])]
    assert [[r["id"] for r in g] for g in batches(records)] == [[1], [2, 5], [3], [4], [6], [7]]


def test_a_record_mlflow_refuses_inside_a_group_is_set_aside_alone(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    journal = Journal(tmp_path / "journal.jsonl")
    interleaved_sweep(journal, exp, runs=2, epochs=5)
    bad = journal.append("log_batch", run_id="local-0", tags={"bad*key": "x"})  # MLflow refuses the tag's name
    journal.append("log_batch", run_id="local-0", metrics=[epoch(6)])
    told = []
    assert replay(journal, MlflowClient(uri), lambda record, reason: told.append(record["id"])) == 2 * 2 + 2 * 5 + 2 * 2 + 1
    assert told == [bad["id"]] and [r["id"] for r in journal.refused()] == [bad["id"]]
    assert histories(uri, exp) == {"trial_0": [1, 2, 3, 4, 5, 6], "trial_1": [1, 2, 3, 4, 5]}


def test_a_window_mlflow_took_before_the_sender_died_is_checked_and_nothing_arrives_twice(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    interleaved_sweep(journal, exp)
    try:
        replay(journal, CountingClient(uri, fail_at=4))  # params of 3 runs, then the first run's epochs
    except TimeoutError:
        pass
    assert journal.sent == 0 and journal.sending == journal.last_id  # MLflow has part of the window
    again = Journal(path)  # a new driver
    assert replay(again, MlflowClient(uri)) == again.last_id
    assert histories(uri, exp) == {f"trial_{i}": list(range(1, 21)) for i in range(3)}
    assert len(MlflowClient(uri).search_runs([exp])) == 3


class SlowClient(CountingClient):
    """MLflow that answers every call, each `delay` seconds late."""

    delay = 0.25

    def __getattr__(self, name):
        method = super().__getattr__(name)

        def call(*args, **kwargs):
            time.sleep(self.delay)
            return method(*args, **kwargs)
        return call


def test_a_slow_store_that_takes_records_is_waited_for_to_the_last(tmp_path, monkeypatch, capsys):
    from sweep.tracking import writers

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    client = SlowClient(uri)  # its store opened here, not in the sender's first seconds
    monkeypatch.setattr(writers, "client_for", lambda uri: client)
    monkeypatch.setattr("sweep.tracking.sender.WINDOW", 1)  # what MLflow holds is marked at every record
    writer = writers.open_journal(uri, "parent", tmp_path / "sweep", "byol-sweep sync slow", new=True)
    for i in range(12):  # a run each: 12 calls of 0.25 s, 3 s in all, twice the 1.5 s allowed without progress
        writer.write("create_run", experiment_id=exp, run_name=f"trial_{i}", tags={})
    assert writers.close_journal("parent", timeout=1.5) == 0
    assert len(MlflowClient(uri).search_runs([exp])) == 12
    assert "could not be sent" not in capsys.readouterr().err


def test_a_store_that_takes_nothing_in_the_time_allowed_is_said_to_be_slow_not_away(tmp_path, monkeypatch, capsys):
    from sweep.tracking import writers

    class Slower(SlowClient):
        delay = 1.0

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    monkeypatch.setattr(writers, "client_for", lambda uri: Slower(uri))
    writer = writers.open_journal(uri, "parent", tmp_path / "sweep", "byol-sweep sync slow", new=True)
    for i in range(4):
        writer.write("create_run", experiment_id=exp, run_name=f"trial_{i}", tags={})
    left = writers.close_journal("parent", timeout=0.3)
    err = capsys.readouterr().err
    assert left > 0 and f"{left} MLflow records could not be sent (MLflow answers, but took none of them in the last 0.3 s" in err
    assert "`byol-sweep sync slow`" in err and "does not answer" not in err


def test_the_sender_thread_sends_a_burst_in_one_call(tmp_path):
    from sweep.tracking.sender import JournalledWriter

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    client = CountingClient(uri)
    writer = JournalledWriter(Journal(tmp_path / "journal.jsonl"), lambda: client, background=True, linger_s=1.0)
    try:
        run = writer.write("create_run", experiment_id=exp, run_name="trial_0", tags={})
        assert writer.drain(timeout=10) == 0
        for e in range(1, 21):  # a trial's results, as a buffer of them reaches the driver
            writer.write("log_batch", run_id=run, metrics=[epoch(e), epoch(e, "loss")])
        deadline = time.monotonic() + 10
        while writer.journal.pending_count() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.calls["log_batch"] == 1 and histories(uri, exp) == {"trial_0": list(range(1, 21))}
    finally:
        writer.close()


def test_a_drain_or_a_close_does_not_wait_for_the_sender_s_linger(tmp_path):
    from sweep.tracking.sender import JournalledWriter

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("b")
    writer = JournalledWriter(Journal(tmp_path / "journal.jsonl"), lambda: MlflowClient(uri), background=True,
                              linger_s=60)
    run = writer.write("create_run", experiment_id=exp, run_name="trial_0", tags={})
    assert writer.drain(timeout=20) == 0  # sent when asked: a drain that waited out the linger would leave it
    writer.write("log_batch", run_id=run, tags={"status": "completed"})
    started = time.monotonic()
    writer.close()  # what is pending stays in the journal; the thread ends without waiting out its linger
    assert time.monotonic() - started < 20 and writer.journal.pending_count() == 1
