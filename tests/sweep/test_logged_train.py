"""`byol-sweep train --tracking-uri`: a standalone run in MLflow as a sweep's trial is, with its
encoder; resumed into the same run; a server that goes away loses nothing (`byol-sweep sync`)."""
from __future__ import annotations

import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_BASE, MlflowServer, new_store
from tests.sweep.test_cli import CLI, ROOT, byol_sweep

pytestmark = pytest.mark.slow  # trains and spawns byol-sweep

EPOCH_KEYS = ("loss", "knn_acc", "z_spread", "eff_rank", "lr", "tau")


def tiny_config(folder) -> str:
    path = folder / "train.yaml"
    path.write_text("".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in TINY_BASE.items()))
    return str(path)


def the_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_train_logs_a_run_with_its_encoder_and_resume_continues_it(tmp_path, migrated_store):
    import torch

    from sweep.tracking.encoders import encoder_from_run

    config, uri, out = tiny_config(tmp_path), new_store(migrated_store, tmp_path), tmp_path / "out"
    proc = byol_sweep("train", "--config", config, "--epochs", "2", "--out", str(out), "--tracking-uri", uri,
                      "--experiment", "solo", cwd=tmp_path)
    assert "encoder logged to MLflow run" in proc.stdout, proc.stdout
    client, run = the_run(uri, "solo")
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert run.data.tags["byol_sweep.role"] == "train" and run.data.tags["byol_sweep.trial_dir"] == str(out)
    assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "2"
    for key in EPOCH_KEYS:
        assert steps(client, run.info.run_id, key) == [1, 2], key
    assert "linear_probe_acc" in run.data.metrics
    assert run.data.metrics["knn_acc"] == json.loads((out / "metrics.json").read_text())["final"]["knn_acc"]

    encoder = encoder_from_run(run.info.run_id, uri)
    assert encoder.config.epochs == 2
    with torch.no_grad():
        assert encoder(torch.rand(4, 3, 32, 32)).shape[0] == 4

    # one more epoch on top of the checkpoint: the same run, each epoch once
    byol_sweep("train", "--config", config, "--epochs", "3", "--out", str(out), "--tracking-uri", uri, "--resume",
               cwd=tmp_path)
    client, run = the_run(uri, "solo")
    for key in EPOCH_KEYS:
        assert steps(client, run.info.run_id, key) == [1, 2, 3], key
    assert run.data.tags["status"] == "completed" and run.info.status == "FINISHED"

    exported = byol_sweep("export", run.info.run_id, "--tracking-uri", uri, "--out", str(tmp_path / "enc.pt"),
                          cwd=tmp_path)
    assert (tmp_path / "enc.pt").stat().st_size > 0, exported.stdout
    assert "MLflow has every record" in byol_sweep("sync", str(out), "--tracking-uri", uri, cwd=tmp_path).stdout
    # a record torn before it was sent: `sync` names it (file, line, run, epoch) and fails until dealt with
    journal = out / "mlflow-journal.jsonl"
    lines = journal.read_text().count("\n")
    with open(journal, "a") as f:
        f.write(f'{{"id": 999, "op": "log_batch", "args": {{"run_id": "{run.info.run_id}", "metrics": [{{"step": 4')
    for _ in range(2):
        torn = byol_sweep("sync", str(out), "--tracking-uri", uri, cwd=tmp_path, check=False)
        assert torn.returncode == 1 and "1 will never reach MLflow from its journal" in torn.stderr, torn.stderr
        assert f"damaged: {journal}, line {lines + 1} (record 999, run {run.info.run_id}, epochs 4): torn" in torn.stderr


def test_an_unreachable_server_is_one_sentence_before_training(tmp_path):
    from tests.conftest import free_port

    proc = byol_sweep("train", "--config", tiny_config(tmp_path), "--epochs", "1", "--out", str(tmp_path / "out"),
                      "--tracking-uri", f"http://127.0.0.1:{free_port()}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unreachable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def train_losing_its_server(server, cwd, out, uri: str, experiment: str, epochs: int, drain_s: int) -> tuple[int, str]:
    """`byol-sweep train --tracking-uri uri` whose server is killed once its first epoch is printed:
    (exit code, all it printed)."""
    import os  # only the tests that start a train use the environment

    env = {**os.environ, "PYTHONPATH": ROOT, "BYOL_SWEEP_DRAIN_S": str(drain_s)}
    train = subprocess.Popen([*CLI, "train", "--config", tiny_config(cwd), "--epochs", str(epochs), "--out", str(out),
                              "--tracking-uri", uri, "--experiment", experiment], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in train.stdout:
            lines.append(line)
            if line.startswith("epoch   1"):
                server.kill()
                break
        rest, _ = train.communicate(timeout=600)
        return train.returncode, "".join(lines) + rest
    finally:
        if train.poll() is None:
            train.kill()


def test_a_server_that_goes_away_mid_training_loses_nothing_after_sync(tmp_path, migrated_store):
    folder = tmp_path / "server"
    folder.mkdir()
    server = MlflowServer(folder, migrated_store).start()
    try:
        out = tmp_path / "out"
        code, output = train_losing_its_server(server, tmp_path, out, server.uri, "away", epochs=4, drain_s=5)
        assert code == 0, output
        assert "could not be sent" in output and f"byol-sweep sync {out}" in output, output
        assert "epoch   4" in output
        server.start()
        synced = byol_sweep("sync", str(out), "--tracking-uri", server.uri, cwd=tmp_path)
        assert "sent" in synced.stdout
        client, run = the_run(server.uri, "away")
        for key in EPOCH_KEYS:
            assert steps(client, run.info.run_id, key) == [1, 2, 3, 4], key
        assert run.data.tags["status"] == "completed" and run.info.status == "FINISHED"
        assert "model" in {a.path for a in client.list_artifacts(run.info.run_id)}
        again = byol_sweep("sync", str(out), "--tracking-uri", server.uri, cwd=tmp_path)
        assert "MLflow has every record" in again.stdout
    finally:
        server.kill()
