"""A tracking server that goes away loses nothing and stops nothing: a real `mlflow server` is
SIGKILLed while a sweep trains, restarted on the same port and file, and every epoch lands once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import MlflowServer, write_space

pytestmark = pytest.mark.slow

ROOT = str(Path(__file__).resolve().parents[2])
EPOCHS = 6


@pytest.fixture
def server(tmp_path, migrated_store):
    folder = tmp_path / "server"
    folder.mkdir()
    s = MlflowServer(folder, migrated_store)
    s.start()
    yield s
    s.kill()


def wait_for(condition, timeout: float, what: str, driver: subprocess.Popen):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if driver.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; driver exit {driver.poll()}")


def journal_epochs(path: Path) -> list[tuple[int, int]]:
    """(timestamp ms, epoch) of every epoch the journal holds."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                break
            for m in record["args"].get("metrics", []) if record["op"] == "log_batch" else []:
                if m["key"] == "epoch_s":
                    out.append((m["timestamp"], m["step"]))
    return out


def assert_every_epoch_once(uri: str, experiment: str, since_ms: int, until_ms: int, epochs: int = EPOCHS) -> int:
    """Every epoch of every trial in MLflow once, trials completed, the sweep finished; returns how
    many epochs were trained between since_ms and until_ms (by their MLflow timestamps)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'sweep'")
    assert parent.data.tags["byol_sweep.state"] == "finished" and parent.info.status == "FINISHED"
    runs = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'")
    assert len(runs) == 2  # one run per trial: none created twice by a replay
    epochs_between = 0
    for run in runs:
        assert run.data.tags["status"] == "completed" and run.info.status == "FINISHED", run.data.tags
        assert "rerun_from_epoch" not in run.data.tags
        for key in ("epoch_s", "knn_acc", "loss"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), (key, [m.step for m in history])
        history = client.get_metric_history(run.info.run_id, "epoch_s")
        epochs_between += sum(since_ms < m.timestamp < until_ms for m in history)
    return epochs_between


@pytest.mark.alone  # "said once": a sender call slower than its 10-s timeout would be said too (tests/conftest.py, WorkerRoom)
def test_a_server_that_goes_away_loses_nothing_and_stops_nothing(tmp_path, server):
    space = write_space(tmp_path, "loss", base={"epochs": EPOCHS}, grid={"seed": [0, 1]}, algorithm="grid", asha=False)
    journal = tmp_path / "runs" / "loss" / "mlflow-journal.jsonl"
    env = {**os.environ, "PYTHONPATH": ROOT, "BYOL_SWEEP_DRAIN_S": "300"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "run", str(space), "--name", "loss", "--storage", "runs",
         "--tracking-uri", server.uri, "--no-report"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    try:
        client = MlflowClient(server.uri)

        def first_epoch_in_mlflow():
            exp = client.get_experiment_by_name("loss")
            runs = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'") if exp else []
            return any(client.get_metric_history(r.info.run_id, "epoch_s") for r in runs)

        wait_for(first_epoch_in_mlflow, 600, "a first epoch in MLflow", driver)
        server.kill()
        killed_ms = int(time.time() * 1000)
        # the trials go on: an epoch is trained (and journalled) while the server is away
        wait_for(lambda: any(t > killed_ms for t, _ in journal_epochs(journal)), 300,
                 "an epoch trained while the server is down", driver)
        assert not server.healthy()
        server.start()
        restarted_ms = int(time.time() * 1000)
        out, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    assert driver.returncode == 0, out[-4000:]
    assert out.count("MLflow does not answer") == 1, out[-4000:]  # said once, while training went on

    epochs_while_down = assert_every_epoch_once(server.uri, "loss", killed_ms, restarted_ms)
    assert epochs_while_down >= 1  # the trials kept training while the server was away
    sent = int((journal.parent / (journal.name + ".sent")).read_text())
    assert sent == len(journal.read_text().splitlines())  # everything sent


def subprocess_env() -> dict[str, str]:
    """The environment the byol-sweep processes of these tests run in (read at call time: the session's
    fixtures set some of it)."""
    return {**os.environ, "PYTHONPATH": ROOT, "BYOL_SWEEP_DRAIN_S": "2"}

CLI = [sys.executable, "-m", "sweep.cli"]


def sweep_outliving_its_server(tmp_path, server, name: str, epochs: int) -> tuple[str, int]:
    """A 2-trial sweep `name` whose tracking server is killed after its first epoch and stays away:
    the driver ends (exit 0) with records left in its journal. Returns (its output, when the server died, ms)."""
    space = write_space(tmp_path, name, base={"epochs": epochs}, grid={"seed": [0, 1]}, algorithm="grid", asha=False)
    journal = tmp_path / "runs" / name / "mlflow-journal.jsonl"
    driver = subprocess.Popen(
        [*CLI, "run", str(space), "--name", name, "--storage", "runs", "--tracking-uri", server.uri, "--no-report"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=subprocess_env())
    try:
        wait_for(lambda: journal_epochs(journal), 600, "a first epoch", driver)
        server.kill()
        killed_ms = int(time.time() * 1000)
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    assert driver.returncode == 0, out[-4000:]
    return out, killed_ms


def test_records_left_at_the_end_are_sent_by_sync(tmp_path, server):
    """The server is still away when the sweep ends: the driver waits a bounded time, says what is
    left and which command sends it, and exits; `byol-sweep sync` sends it once the server is back."""
    out, killed_ms = sweep_outliving_its_server(tmp_path, server, "loss", epochs=4)
    env, cli = subprocess_env(), CLI
    assert "could not be sent" in out and "byol-sweep sync loss --storage runs" in out, out[-4000:]
    server.start()
    synced = subprocess.run([*cli, "sync", "loss", "--storage", "runs", "--tracking-uri", server.uri], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=300)
    assert synced.returncode == 0 and "sent" in synced.stdout, synced.stdout + synced.stderr
    assert assert_every_epoch_once(server.uri, "loss", killed_ms, int(time.time() * 1000), epochs=4) >= 1
    # the trials' encoders and folders were journalled as they ended: the outage lost neither
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("loss").experiment_id
    trials = client.search_runs([exp], "tags.`byol_sweep.role` = 'trial'")
    assert len(trials) == 2
    for run in trials:
        assert run.data.tags["status"] == "completed" and Path(run.data.tags["byol_sweep.trial_dir"]).is_dir()
        assert "model/encoder.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    again = subprocess.run([*cli, "sync", "loss", "--storage", "runs", "--tracking-uri", server.uri], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "MLflow has every record" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("damage", ["middle"])  # a torn line: tests/sweep/test_journal_damage.py (each costs a sweep)
def test_what_a_damaged_journal_lost_is_rebuilt_from_the_trials_results(tmp_path, server, damage):
    """Records pending (the server went away), then the journal damaged: one epoch's line in the middle
    corrupted, or its last pending line torn. `sync` names the loss and fails; `sync --from-results`
    sends what Ray's own results hold and MLflow lacks: every epoch in MLflow once."""
    sweep_outliving_its_server(tmp_path, server, "dmg", epochs=3)
    env, cli = subprocess_env(), CLI
    journal = tmp_path / "runs" / "dmg" / "mlflow-journal.jsonl"
    sent = int((journal.parent / "mlflow-journal.jsonl.sent").read_text())
    lines = journal.read_text().splitlines(keepends=True)
    epochs = [i for i, line in enumerate(lines) if json.loads(line)["id"] > sent and '"epoch_s"' in line]
    if damage == "middle":
        i = epochs[len(epochs) // 2]
        lines[i] = lines[i].replace('"key": "knn_acc", "value": 0.', '"key": "knn_acc", "value": 9.')
    else:
        lines = lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]
    journal.write_text("".join(lines))
    server.start()
    synced = subprocess.run([*cli, "sync", "dmg", "--storage", "runs", "--tracking-uri", server.uri], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=300)
    assert synced.returncode == 1 and "will never reach MLflow from its journal" in synced.stderr, synced.stderr
    assert f"damaged: {journal}, line" in synced.stderr
    rebuilt = subprocess.run([*cli, "sync", "dmg", "--storage", "runs", "--tracking-uri", server.uri, "--from-results"],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    if damage == "middle":  # a damaged epoch's values come back from Ray's results; the sweep's end was intact
        assert "from the trials' own results: sent " in rebuilt.stdout
        assert_every_epoch_once(server.uri, "dmg", 0, int(time.time() * 1000), epochs=3)
    else:  # the torn last record (the parent's end) cannot come back from a trial's results: epochs do
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("dmg").experiment_id
        for run in client.search_runs([exp], "tags.`byol_sweep.role` = 'trial'"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")) == [1, 2, 3]
