"""A real multi-node Ray cluster on this machine: a head and two worker nodes of 1 CPU each (Ray's
own `ray.cluster_utils.Cluster`, in a process of its own: tests/sweep/multinode.py), with token
authentication, driven through `byol-sweep run --address` as a user would, results on shared
storage (a folder every node of this machine reaches) and MLflow in a SQLite file."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import new_store, write_space
from tests.sweep.test_cli import CLI, ROOT, assert_every_epoch_logged, byol_sweep

WORKERS = 2


class LocalCluster:
    """The helper process that owns the cluster; its commands add and remove worker nodes."""

    def __init__(self, folder: Path):
        self.temp = f"/tmp/bsm-{os.getpid()}"  # short: Ray's socket paths live under it
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.log = folder / "cluster.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sweep.multinode", self.temp, str(WORKERS)], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"), start_new_session=True,
            env={**os.environ, **self.env, "PYTHONPATH": ROOT},
        )
        started = self._answer()
        self.address, self.head, self.workers = started["address"], started["head"], list(started["workers"])

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()  # the helper answers every command, or dies (then: its log)
        assert line, f"the cluster helper exited {self.proc.poll()}: {self.log.read_text()[-3000:]}"
        return json.loads(line)

    def _command(self, text: str) -> dict:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._answer()

    @property
    def nodes(self) -> set[str]:
        return {self.head, *self.workers}

    def add_worker(self) -> str:
        node = self._command("add")["node"]
        self.workers.append(node)
        return node

    def remove_worker(self, node: str) -> None:
        assert node in self.workers, node  # never the head: the drivers are attached to it
        assert self._command(f"remove {node}") == {"removed": node}
        self.workers.remove(node)

    def shutdown(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module: a head and WORKERS worker nodes, 1 CPU each."""
    made = LocalCluster(tmp_path_factory.mktemp("cluster"))
    yield made
    made.shutdown()


@pytest.fixture
def nodes(cluster):
    """The cluster with WORKERS live worker nodes (a test before may have removed one)."""
    while len(cluster.workers) < WORKERS:
        cluster.add_worker()
    return cluster


def trial_runs(uri: str, experiment: str) -> list:
    from sweep.tracking.store import store_lock

    with store_lock(uri):  # the driver creates the store under this lock: never read it half-made
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'")


def steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def reported(storage: Path, name: str) -> dict[str, list[dict]]:
    """Tune's own record of each trial's results (its result.json), by trial id: cheap to poll, where
    MLflow queries every 0.2 s would take much of a 2-core machine from the sweep."""
    out = {}
    for path in storage.glob(f"{name}/train_byol_*/result.json"):
        results = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        if results:
            out[results[0]["trial_id"]] = results
    return out


def start_driver(tmp_path: Path, *args: str, env: dict) -> subprocess.Popen:
    """`byol-sweep` in the background, its output in tmp_path/driver.log (a pipe nobody reads while
    the test waits could fill up and stop it)."""
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, env={**os.environ, "PYTHONPATH": ROOT, **env})
    driver.output = lambda: (tmp_path / "driver.log").read_text()
    return driver


def wait_for(condition, driver: subprocess.Popen, timeout_s: float = 300):
    """condition() every 0.5 s until it returns something, while the driver runs (bounded)."""
    deadline = time.monotonic() + timeout_s
    while driver.poll() is None and time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"the condition never held; driver exit {driver.poll()}: {driver.output()[-3000:]}")


@pytest.mark.slow
def test_trials_run_on_every_node_and_one_whose_node_dies_continues_on_another_from_its_checkpoint(
        nodes, tmp_path, migrated_store):
    """Three 1-CPU trials on three 1-CPU nodes: one on each. A worker node is killed while its trial
    runs; the trial continues on a live node from its last checkpoint, in the same MLflow run."""
    epochs = 6
    space = write_space(tmp_path, "nodeloss", base={"epochs": epochs}, grid={"seed": [0, 1, 2]}, algorithm="grid",
                        asha=False)
    uri = new_store(migrated_store, tmp_path)
    driver = start_driver(tmp_path, "run", str(space), "--name", "nodeloss", "--address", nodes.address, "--storage",
                          str(tmp_path / "shared"), "--tracking-uri", uri, "--no-report", "--max-failures", "1",
                          "--checkpoint-every", "1", env=nodes.env)

    def trial_on_a_worker():  # a running trial on a worker node that has reported 2 epochs
        for trial_id, results in reported(tmp_path / "shared", "nodeloss").items():
            if len(results) >= 2 and results[-1]["node_id"] in nodes.workers and results[-1]["epoch"] < epochs:
                return trial_id, results[-1]["node_id"]
        return None

    victim, lost = wait_for(trial_on_a_worker, driver)
    nodes.remove_worker(lost)  # every process of that node killed at once, the trial's among them
    driver.wait(timeout=600)
    out = driver.output()
    assert driver.returncode == 0, out[-3000:]
    assert "3 at a time with 1 CPU each" in out  # the cluster's 3 CPUs, one per node
    assert "sweep nodeloss finished: 3 completed" in out, out[-3000:]

    runs = trial_runs(uri, "nodeloss")
    assert len(runs) == 3 and len({r.data.tags["byol_sweep.trial_id"] for r in runs}) == 3  # none lost, none twice
    # three trials at a time on three 1-CPU nodes: they started one on each node, the head included
    assert {json.loads(r.data.tags["nodes"])[0] for r in runs} == nodes.nodes | {lost}
    (moved,) = [r for r in runs if r.data.tags["byol_sweep.trial_id"] == victim]  # one MLflow run, continued
    tags = moved.data.tags
    assert tags["status"] == "completed" and moved.info.status == "FINISHED"
    assert tags["restarts"] == "1"  # Tune retried it once (--max-failures 1 allows it)
    history = json.loads(tags["nodes"])
    assert history[0] == lost and len(history) == 2 and history[1] != lost, history
    assert tags["node_id"] == history[1] and history[1] in nodes.nodes  # a live node ran the rest
    # restored from the checkpoint of its last logged epoch: every epoch logged once, none re-run
    assert "rerun_from_epoch" not in tags
    for key in ("knn_acc", "loss", "epoch_s"):
        assert steps(uri, moved.info.run_id, key) == list(range(1, epochs + 1)), key
    for run in runs:
        assert run.data.tags["status"] == "completed" and run.info.status == "FINISHED"
        assert steps(uri, run.info.run_id, "knn_acc") == list(range(1, epochs + 1))
        if run.info.run_id != moved.info.run_id:  # the others never moved
            assert json.loads(run.data.tags["nodes"]) == [run.data.tags["node_id"]]
    # Tune's own record of the trial: each epoch reported once across both nodes
    results = reported(tmp_path / "shared", "nodeloss")[victim]
    assert [r["epoch"] for r in results] == list(range(1, epochs + 1))
    assert [r["node_id"] for r in results] == sorted([r["node_id"] for r in results], key=history.index)
    on_lost = [r["epoch"] for r in results if r["node_id"] == lost]
    assert 2 <= len(on_lost) < epochs  # it died mid-trial
    # continued from the checkpoint of the last epoch the lost node reported (checkpoints every epoch)
    assert next(r["epoch"] for r in results if r["node_id"] != lost) == on_lost[-1] + 1


@pytest.mark.slow
def test_a_killed_driver_resumes_on_the_cluster_and_every_trial_finishes_once(nodes, tmp_path, migrated_store):
    epochs = 4
    space = write_space(tmp_path, "driverdeath", base={"epochs": epochs}, grid={"seed": [0, 1, 2]},
                        algorithm="grid", asha=False)
    uri = new_store(migrated_store, tmp_path)
    storage = str(tmp_path / "shared")
    driver = start_driver(tmp_path, "run", str(space), "--name", "driverdeath", "--address", nodes.address,
                          "--storage", storage, "--tracking-uri", uri, "--no-report", env=nodes.env)

    def every_trial_under_way():  # one on each node, each with an epoch reported
        return len(reported(tmp_path / "shared", "driverdeath")) == 3

    wait_for(every_trial_under_way, driver)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver alone: the cluster lives in another process group
    driver.wait()
    before = {r.data.tags["byol_sweep.trial_id"]: r.data.tags.get("status") for r in trial_runs(uri, "driverdeath")}
    assert list(before.values()).count("running") >= 1, before  # killed mid-trial

    resumed = byol_sweep("resume", "driverdeath", "--address", nodes.address, "--storage", storage,
                         "--tracking-uri", uri, "--no-report", cwd=tmp_path, env=nodes.env)
    assert "sweep driverdeath finished: 3 completed" in resumed.stdout
    runs = trial_runs(uri, "driverdeath")
    assert len(runs) == 3 and {r.data.tags["byol_sweep.trial_id"] for r in runs} == set(before)  # none lost or new
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("driverdeath")
    assert len(client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'sweep'")) == 1
    for run in runs:
        tags = run.data.tags
        assert tags["status"] == "completed" and run.info.status == "FINISHED"
        assert set(json.loads(tags["nodes"])) <= nodes.nodes and tags["node_id"] in nodes.nodes
        assert_every_epoch_logged(client, run, epochs)
    # three trials at a time on three 1-CPU nodes: they started one on each node
    assert {json.loads(r.data.tags["nodes"])[0] for r in runs} == nodes.nodes
