"""A tracking URI's token never leaves the command line: not on the console (our lines, quoted
exceptions, MLflow's own "View run at" lines), not in any file of the sweep's folder (Ray's logs
included), the report's folder or a `train` output folder, not anywhere in MLflow."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import MlflowServer, write_space
from tests.sweep.test_cli import byol_sweep
from tests.sweep.test_logged_train import train_losing_its_server

pytestmark = pytest.mark.slow  # a real mlflow server, a real sweep on Ray, training in subprocesses

TOKEN = "SECRETTOKEN"


def files_holding(folder, secret: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]


def mlflow_holding(uri: str, secret: str) -> list[str]:
    """Every experiment's runs: the params, tags, metric keys and artifact paths holding the secret."""
    client = MlflowClient(uri)
    found = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            values = [*run.data.params.items(), *run.data.tags.items(), *((k, "") for k in run.data.metrics)]
            found += [f"{run.info.run_name}: {k}={v}" for k, v in values if secret in k or secret in v]
            paths = [a.path for a in client.list_artifacts(run.info.run_id)]
            while paths:
                path = paths.pop()
                found += [f"{run.info.run_name}: artifact {path}"] if secret in path else []
                paths += [a.path for a in client.list_artifacts(run.info.run_id, path)]
    return found


def test_a_token_in_the_tracking_uri_is_nowhere_after_a_sweep_a_train_a_lost_server_and_a_report(
        tmp_path, migrated_store):
    server_folder = tmp_path / "server"
    server_folder.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    server = MlflowServer(server_folder, migrated_store).start()
    secret_uri = server.uri.replace("http://", f"http://user:{TOKEN}@")  # the server ignores basic auth
    printed = []
    try:
        space = write_space(work, "leak", base={"epochs": 2}, grid={"seed": [0, 1]}, algorithm="grid", asha=False)
        swept = byol_sweep("run", str(space), "--name", "leak", "--storage", "runs", "--tracking-uri", secret_uri,
                           "--max-failures", "0", cwd=work)
        printed += [swept.stdout, swept.stderr]
        assert "user:***@" in swept.stdout, swept.stdout

        # train, its server lost after the first epoch: MLflow's failure is quoted on the console
        printed.append(train_losing_its_server(server, work, work / "solo", secret_uri, "solo", epochs=3, drain_s=3)[1])
        assert "MLflow does not answer" in printed[-1] and "could not be sent" in printed[-1], printed[-1]
        server.start()
        synced = byol_sweep("sync", str(work / "solo"), "--tracking-uri", secret_uri, cwd=work)
        reported = byol_sweep("report", "--experiment", "leak", "--tracking-uri", secret_uri, cwd=work)
        printed += [synced.stdout, synced.stderr, reported.stdout, reported.stderr]
        assert "report written" in reported.stdout

        console = "\n".join(printed)
        assert TOKEN not in console, [line for line in console.splitlines() if TOKEN in line]
        assert "View run" not in console
        assert files_holding(work, TOKEN.encode()) == []  # sweep folder (Ray's logs), report, train folder
        assert files_holding(server_folder, TOKEN.encode()) == []  # MLflow's database and artifacts
        assert mlflow_holding(server.uri, TOKEN) == []
        client = MlflowClient(server.uri)
        solo = client.search_runs([client.get_experiment_by_name("solo").experiment_id])
        assert [r.data.tags["status"] for r in solo] == ["completed"]
        assert sorted(m.step for m in client.get_metric_history(solo[0].info.run_id, "loss")) == [1, 2, 3]
    finally:
        server.kill()
