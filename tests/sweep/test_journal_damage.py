"""A journal that survives damage and refusals: a damaged or torn line is named and never stops the
records after it, no id is reused, and a record MLflow refuses is set aside while the rest flow on."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from sweep.tracking.journal import Journal
from sweep.tracking.sender import JournalledWriter, replay
from sweep.tracking.writers import journal_path, sync_journal
from tests.conftest import new_store


def metric(epoch, key="knn_acc"):
    return {"key": key, "value": 0.1 * epoch, "timestamp": 1000 + epoch, "step": epoch}


def journal_two_trials(folder, exp):
    """A journal (nothing sent yet) of two trials of 3 epochs each, and their placeholders."""
    journal = Journal(journal_path(folder))
    runs = []
    for name in ("trial_a", "trial_b"):
        placeholder = f"local-{name}"
        journal.append("create_run", experiment_id=exp, run_name=name, placeholder=placeholder,
                       tags={"byol_sweep.trial_id": name})
        runs.append(placeholder)
    for epoch in (1, 2, 3):
        for run in runs:
            journal.append("log_batch", run_id=run, metrics=[metric(epoch)])
    for run in runs:
        journal.append("set_terminated", run_id=run, status="FINISHED")
    return journal, runs


def epochs_in_mlflow(uri, exp):
    client = MlflowClient(uri)
    return {r.info.run_name: sorted(m.step for m in client.get_metric_history(r.info.run_id, "knn_acc"))
            for r in client.search_runs([exp])}


def rewrite_line(path, number, change):
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = change(lines[number - 1])
    path.write_text("".join(lines))


def store(where: str, tmp_path, request) -> tuple[str, str]:
    """(tracking URI, a new experiment's id): a SQLite file, or the module's real `mlflow server`."""
    uri = (request.getfixturevalue("mlflow_server") if where == "server"
           else new_store(request.getfixturevalue("migrated_store"), tmp_path))
    return uri, MlflowClient(uri).create_experiment(f"j-{tmp_path.name}")


STORES = ["sqlite", pytest.param("server", marks=pytest.mark.slow)]


@pytest.mark.parametrize("where", STORES)
@pytest.mark.parametrize("damage, reason", [
    (lambda line: line.replace('"value": 0.2', '"value": 0.9'), "its checksum does not match its content"),
    (lambda line: line[:25] + "\x00\x00garbage\n", "not valid JSON"),
])
def test_a_damaged_middle_line_is_named_and_every_other_record_is_sent(tmp_path, damage, reason, where, request):
    uri, exp = store(where, tmp_path, request)
    journal, _ = journal_two_trials(tmp_path, exp)
    rewrite_line(journal.path, 5, damage)  # trial_a's epoch 2, pending
    sent, left, unsent = sync_journal(uri, tmp_path)
    assert (sent, left) == (9, 0)
    assert epochs_in_mlflow(uri, exp) == {"trial_a": [1, 3], "trial_b": [1, 2, 3]}
    (line,) = unsent
    assert line.startswith(f"damaged: {journal.path}, line 5 (record 5") and line.endswith(reason)
    if "checksum" in reason:
        assert "run local-trial_a, epochs 2)" in line
    # named once, and again by every later sync (it never reached MLflow): sync keeps failing on it
    assert sync_journal(uri, tmp_path) == (0, 0, unsent)
    assert len(Journal(journal.path).damaged()) == 1


@pytest.mark.parametrize("where", STORES)
def test_a_torn_last_line_after_it_was_sent_never_gives_its_id_to_a_new_record(tmp_path, where, request):
    uri, exp = store(where, tmp_path, request)
    journal, runs = journal_two_trials(tmp_path, exp)
    assert replay(journal, MlflowClient(uri)) == 10 and journal.sent == 10
    data = journal.path.read_bytes()
    journal.path.write_bytes(data[:-20])  # the last line (sent) torn
    resumed = Journal(journal.path)
    assert resumed.last_id == 10 and len(resumed.damage) == 1 and resumed.damage[0].sent
    # a resumed sweep's new trial: a new id, sent and found by every later record
    new = resumed.append("create_run", experiment_id=exp, run_name="trial_c", placeholder="local-c", tags={})
    assert new["id"] == 11
    resumed.append("log_batch", run_id="local-c", metrics=[metric(1)])
    assert replay(resumed, MlflowClient(uri)) == 2
    assert epochs_in_mlflow(uri, exp) == {"trial_a": [1, 2, 3], "trial_b": [1, 2, 3], "trial_c": [1]}
    assert resumed.unsent() == []  # what was torn had reached MLflow


@pytest.mark.parametrize("where", STORES)
def test_a_torn_pending_line_is_named_as_never_sent(tmp_path, where, request):
    uri, exp = store(where, tmp_path, request)
    journal, _ = journal_two_trials(tmp_path, exp)
    with open(journal.path, "a") as f:
        f.write('{"id": 11, "op": "log_batch", "args": {"run_id": "local-trial_a", "metrics": [{"step": 4')
    sent, left, unsent = sync_journal(uri, tmp_path)
    assert (sent, left) == (10, 0)
    assert len(unsent) == 1 and "line 11 (record 11, run local-trial_a, epochs 4): torn" in unsent[0]
    assert Journal(journal.path).append("set_tag", run_id="x", key="k", value="v")["id"] == 12


@pytest.mark.parametrize("where", STORES)
def test_a_record_mlflow_refuses_is_set_aside_and_the_rest_flow_on(tmp_path, where, request):
    uri, exp = store(where, tmp_path, request)
    client = MlflowClient(uri)
    told = []
    writer = JournalledWriter(Journal(tmp_path / "journal.jsonl"), lambda: client, told.append)
    parent = writer.write("create_run", experiment_id=exp, run_name="sweep", tags={})
    trials = {name: writer.write("create_run", experiment_id=exp, run_name=name,
                                 tags={"mlflow.parentRunId": parent, "byol_sweep.trial_id": name})
              for name in ("trial_a", "trial_b")}
    writer.write("log_batch", run_id=trials["trial_a"], metrics=[metric(1)])
    writer.write("log_batch", run_id=trials["trial_b"], metrics=[metric(1)])
    client.delete_run(trials["trial_b"])  # deleted in the MLflow UI mid-sweep
    for epoch in (2, 3):
        for name in ("trial_a", "trial_b"):
            writer.write("log_batch", run_id=trials[name], metrics=[metric(epoch)])
    writer.write("log_batch", run_id=trials["trial_a"], params={"seed": "0"})
    writer.write("log_batch", run_id=trials["trial_a"], params={"seed": "1"})  # a param logged again, changed
    writer.write("set_terminated", run_id=trials["trial_a"], status="FINISHED")
    writer.write("set_terminated", run_id=parent, status="FINISHED")
    assert not writer.offline and writer.journal.pending_count() == 0
    a = client.get_run(trials["trial_a"])
    assert a.info.status == "FINISHED" and client.get_run(parent).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(a.info.run_id, "knn_acc")) == [1, 2, 3]
    assert a.data.params == {"seed": "0"}
    refused = writer.journal.refused()
    assert [(r["op"], r["run_id"]) for r in refused] == [("log_batch", trials["trial_b"])] * 2 + [
        ("log_batch", trials["trial_a"])]
    # named once per run on the console, never as "MLflow does not answer"
    assert len(told) == 2 and all("MLflow refused a record of run" in t for t in told)
    unsent = writer.journal.unsent()
    assert len(unsent) == 3 and "(trial_b), epochs 2) refused by MLflow: " in unsent[0]
    writer.close()
    assert Journal(tmp_path / "journal.jsonl").unsent() == unsent  # and so `sync` fails on them, naming each
    lines = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(1, len(lines) + 1)) and all("crc" in r for r in lines)


@pytest.mark.parametrize("where", STORES)
def test_a_deleted_parent_run_refuses_its_own_records_and_the_trials_flow_on(tmp_path, where, request):
    uri, exp = store(where, tmp_path, request)
    client = MlflowClient(uri)
    told = []
    writer = JournalledWriter(Journal(tmp_path / "journal.jsonl"), lambda: client, told.append)
    parent = writer.write("create_run", experiment_id=exp, run_name="sweep", tags={})
    trial = writer.write("create_run", experiment_id=exp, run_name="trial_a",
                         tags={"mlflow.parentRunId": parent, "byol_sweep.trial_id": "trial_a"})
    writer.write("log_batch", run_id=trial, metrics=[metric(1)])
    client.delete_run(parent)  # the sweep's run deleted in the MLflow UI mid-sweep
    writer.write("set_tag", run_id=parent, key="byol_sweep.best_metric", value="0.5")
    later = writer.write("create_run", experiment_id=exp, run_name="trial_b",
                         tags={"mlflow.parentRunId": parent, "byol_sweep.trial_id": "trial_b"})
    for epoch in (2, 3):
        writer.write("log_batch", run_id=trial, metrics=[metric(epoch)])
        writer.write("log_batch", run_id=later, metrics=[metric(epoch)])
    writer.write("set_terminated", run_id=trial, status="FINISHED")
    writer.write("set_terminated", run_id=parent, status="FINISHED")
    assert not writer.offline and writer.journal.pending_count() == 0
    assert sorted(m.step for m in client.get_metric_history(trial, "knn_acc")) == [1, 2, 3]
    assert client.get_run(trial).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(later, "knn_acc")) == [2, 3]
    refused = writer.journal.refused()
    assert [(r["op"], r["run_id"]) for r in refused] == [("set_tag", parent), ("set_terminated", parent)]
    assert len(told) == 1 and "MLflow refused a record of run" in told[0]  # named once for the run
    writer.close()
