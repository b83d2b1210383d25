"""The byol-sweep command as a user runs it: subprocesses, real files, real stores."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import new_store, truncated_png, write_space

CLI = [sys.executable, "-m", "sweep.cli"]
ROOT = str(Path(__file__).resolve().parents[2])


def byol_sweep(*args, cwd, timeout=600, check=True, env=None):
    # the command from this checkout, not whichever one is installed
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def byol_sweep_in_process(*args, cwd, monkeypatch, capsys):
    """What byol_sweep returns, from sweep.cli.main called here (for user mistakes: nothing starts)."""
    from types import SimpleNamespace

    from sweep.cli import main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


@pytest.mark.parametrize("args, message", [
    (["train", "--base-lr", "-1"], "base_lr is -1.0; allowed: > 0.0"),
    (["train", "--set", "learning_rate=0.1"], "unknown field 'learning_rate'"),
    (["train", "--dataset", "mnist"], "dataset 'mnist' is unknown"),
    (["train", "--dataset", "imagefolder:/no/such/folder", "--epochs", "1"], "/no/such/folder does not exist"),
    (["train", "--config", "missing.yaml"], "config file missing.yaml does not exist"),
    (["validate", "nothing.yaml"], "neither a file nor a shipped space"),
    (["run", "quick", "--tracking-uri", "http://u:pw@127.0.0.1:9", "--storage", "s"], "u:***@127.0.0.1:9 is unreachable"),
    (["resume", "never-ran", "--storage", "s"], "no sweep named 'never-ran'"),
    (["train", "--config", "."], "config file . is a folder"),
    (["train", "--out", "/proc/no-such/out", "--epochs", "1"], "output folder /proc/no-such/out cannot be created"),
    (["run", "quick", "--storage", "/proc/no-such"], "--storage /proc/no-such: cannot create"),
    (["run", "quick", "--cpus-per-trial", "0", "--storage", "s"], "--cpus-per-trial is 0.0; allowed: a number > 0"),
    (["run", "quick", "--gpus-per-trial", "-1", "--storage", "s"], "--gpus-per-trial is -1.0; allowed: a number >= 0"),
    (["run", "quick", "--max-concurrent", "0", "--storage", "s"], "--max-concurrent is 0; allowed: an integer >= 1"),
    (["run", "quick", "--num-samples", "-1", "--storage", "s"], "--num-samples is -1; allowed: an integer >= 1"),
    (["report", "--experiment", "x", "--tracking-uri", "http://u:pw@127.0.0.1:9"], "u:***@127.0.0.1:9"),
])
@pytest.mark.parametrize("how", ["in_process", pytest.param("subprocess", marks=pytest.mark.slow)])
def test_user_mistakes_get_one_sentence_and_no_traceback(tmp_path, args, message, how, monkeypatch, capsys):
    if how == "in_process":  # the fast loop: the same main() the command runs, without starting Python again
        proc = byol_sweep_in_process(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    else:
        proc = byol_sweep(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "pw@" not in proc.stderr + proc.stdout


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_validate_and_spaces(tmp_path):
    assert "valid. 6 trials (optuna)" in byol_sweep("validate", "quick", cwd=tmp_path).stdout
    listing = byol_sweep("spaces", cwd=tmp_path).stdout
    for name in ("default", "policies", "quick"):
        assert name in listing


def test_validate_lists_every_problem_of_a_space_one_line_each(tmp_path, capsys):
    from sweep.cli import main

    space = tmp_path / "bad.yaml"
    space.write_text("base: {batch_size: 1}\nsearch: {lr: {uniform: [0.1, 1]}}\nmetric: accuracy\n")
    assert main(["validate", str(space)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[3] for line in lines] == ["base.batch_size", "search.lr", "metric"], lines
    assert all(line.startswith(f"byol-sweep validate: error: {space}: ") for line in lines)
    space.write_text("search: {base_lr: {uniform: [0.1, 1]}}\nmetric: accuracy\n")  # one problem: as before
    assert main(["validate", str(space)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"byol-sweep validate: error: {space}: metric: 'accuracy' is unknown")


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_gpus_per_trial_on_a_machine_without_a_gpu_is_refused_before_anything_is_made(tmp_path):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    proc = byol_sweep("run", "quick", "--gpus-per-trial", "0.5", "--storage", "s", cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2
    assert "--gpus-per-trial is 0.5 but this machine has no GPU" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "mlflow.db").exists(), sorted(os.listdir(tmp_path))


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_train_writes_metrics_and_checkpoint_and_resumes(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("dataset: digits\nbackbone: small_cnn\ntrain_limit: 256\nbatch_size: 64\n"
                      "projector_hidden: 64\nprojector_out: 32\nknn_bank_size: 256\nknn_queries: 100\n")
    out = tmp_path / "out"
    proc = byol_sweep("train", "--config", str(config), "--epochs", "2", "--set", "base_lr=0.5", "--out", str(out), cwd=tmp_path)
    assert proc.stdout.count("knn_acc") == 2 and "linear_probe_acc" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["final"]) >= {"epoch", "loss", "knn_acc", "z_std", "lr", "tau", "images_per_s", "epoch_s",
                                    "linear_probe_acc"}
    assert (out / "checkpoint.pt").exists()
    # one more epoch on top of the checkpoint
    proc = byol_sweep("train", "--config", str(config), "--epochs", "3", "--set", "base_lr=0.5", "--out", str(out),
                      "--resume", cwd=tmp_path)
    assert "resumed from" in proc.stdout and proc.stdout.count("knn_acc") == 1
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())["history"]] == [1, 2, 3]


def wait_until(condition, timeout_s: float, poll_s: float = 0.2):
    """condition() every poll_s seconds until it is true or timeout_s has passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def statuses(uri: str, experiment: str) -> dict[str, str]:
    from sweep.tracking.store import store_lock

    with store_lock(uri):  # a new store is created and migrated under this lock: never open it half-made
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return {}
        runs = client.search_runs([exp.experiment_id], filter_string="tags.`byol_sweep.role` = 'trial'")
    return {r.data.tags["byol_sweep.trial_id"]: r.data.tags.get("status") for r in runs}


@pytest.mark.slow
def test_a_killed_driver_resumes_and_every_trial_finishes_exactly_once(tmp_path, migrated_store):
    space = write_space(tmp_path, "killme", base={"epochs": 4}, grid={"seed": [0, 1, 2, 3]}, algorithm="grid", asha=False)
    uri = new_store(migrated_store, tmp_path)
    args = ["run", str(space), "--name", "killme", "--storage", "runs", "--tracking-uri", uri, "--no-report"]
    driver = subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": ROOT})
    # kill the driver as soon as one trial has finished (others are under way)
    wait_until(lambda: driver.poll() is not None or "completed" in statuses(uri, "killme").values(), timeout_s=300)
    assert driver.poll() is None, driver.stdout.read()
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    before = statuses(uri, "killme")
    assert 0 < list(before.values()).count("completed") < 4
    assert parent_tags(uri, "killme")["byol_sweep.state"] == "running"  # what a SIGKILL leaves

    # a report finds the journal free (no driver holds it): the sweep and what it left running are interrupted
    reported = byol_sweep("report", "--experiment", "killme", "--tracking-uri", uri, cwd=tmp_path)
    assert "marked interrupted" in reported.stdout, reported.stdout
    assert parent_tags(uri, "killme")["byol_sweep.state"] == "interrupted"
    after = statuses(uri, "killme")
    assert "running" not in after.values()
    ran = {k for k, v in before.items() if v == "running"}
    assert ran and {k for k, v in after.items() if v == "interrupted"} <= ran
    # a trial's end the killed driver had journalled but not yet sent is sent by the report
    assert all(after[k] in ("interrupted", "completed") for k in ran)
    assert "interrupted" in (tmp_path / "byol-reports" / "killme" / "report.md").read_text()

    # `run` on the same name refuses and points to `resume`
    again = byol_sweep(*args, cwd=tmp_path, check=False)
    assert again.returncode == 2 and "byol-sweep resume killme" in again.stderr

    # another store does not hold this sweep: refused, nothing written there
    elsewhere = byol_sweep("resume", "killme", "--storage", "runs", "--tracking-uri", f"sqlite:///{tmp_path}/other.db",
                           "--no-report", cwd=tmp_path, check=False)
    assert elsewhere.returncode == 2 and "does not hold sweep killme's parent run" in elsewhere.stderr

    resumed = byol_sweep("resume", "killme", "--storage", "runs", "--tracking-uri", uri, "--no-report", cwd=tmp_path)
    assert "sweep killme finished" in resumed.stdout
    after = statuses(uri, "killme")
    assert len(after) == 4 and set(after.values()) == {"completed"}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("killme")
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.`byol_sweep.role` = 'sweep'")) == 1
    for run in client.search_runs([exp.experiment_id], filter_string="tags.`byol_sweep.role` = 'trial'"):
        assert_every_epoch_logged(client, run, 4)
    # Tune's records: each trial reported each epoch once across both drivers
    for trial_dir in (tmp_path / "runs" / "killme").glob("train_byol_*"):
        epochs = [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()]
        assert sorted(set(epochs)) == [1, 2, 3, 4]
    # Ray's temp files live under the sweep's storage, even though this path is too long for its sockets
    assert len(str(tmp_path / "runs" / "killme" / "ray")) > 43
    assert len(list((tmp_path / "runs" / "killme" / "ray").glob("session_2*/logs"))) == 2  # run + resume


@pytest.mark.slow
def test_a_sweep_runs_on_an_existing_ray_cluster(tmp_path, migrated_store):
    """`ray start --head` in its own process group, then `byol-sweep run --address` against it."""
    from tests.conftest import free_port

    port = free_port()
    temp = f"/tmp/bsc-{os.getpid()}"  # short: Ray's socket paths live under it
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=false", f"--object-store-memory={150 * 1024 * 1024}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        space = write_space(tmp_path, "oncluster", base={"epochs": 2}, grid={"seed": [0, 1]}, algorithm="grid",
                            asha=False)
        uri = new_store(migrated_store, tmp_path)
        refused = byol_sweep("run", str(space), "--name", "oncluster", "--address", f"127.0.0.1:{port}",
                             "--tracking-uri", uri, cwd=tmp_path, env={"RAY_AUTH_MODE": "disabled"}, check=False)
        assert refused.returncode == 2
        assert f"the Ray cluster at 127.0.0.1:{port} requires its auth token: set RAY_AUTH_MODE=token" in refused.stderr
        assert "Traceback" not in refused.stderr
        result = byol_sweep("run", str(space), "--name", "oncluster", "--address", f"127.0.0.1:{port}",
                            "--storage", str(tmp_path / "shared"), "--tracking-uri", uri, "--no-report",
                            "--max-concurrent", "1", cwd=tmp_path, env={"RAY_AUTH_MODE": "token"})
        assert "sweep oncluster finished: 2 completed" in result.stdout
        assert "1 at a time" in result.stdout
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("oncluster")
        runs = sorted(client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'"),
                      key=lambda r: r.info.start_time)
        assert runs[0].info.end_time <= runs[1].info.start_time  # --max-concurrent 1: one after the other
        assert statuses(uri, "oncluster") and set(statuses(uri, "oncluster").values()) == {"completed"}
        # results and checkpoints went to the given storage, Ray's session files stayed the cluster's
        assert len(list((tmp_path / "shared" / "oncluster").glob("train_byol_*/checkpoint_*"))) >= 2
        assert not (tmp_path / "shared" / "oncluster" / "ray").exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_train_help_lists_every_field(tmp_path):
    from trainer import TrainConfig

    proc = byol_sweep("train", "--help", cwd=tmp_path)
    for name in TrainConfig.fields():
        assert f"--{name.replace('_', '-')}" in proc.stdout


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_report_refuses_a_sqlite_file_that_is_not_an_mlflow_store_and_leaves_it_alone(tmp_path, migrated_store):
    import sqlite3

    other = tmp_path / "optuna.db"
    with sqlite3.connect(other) as db:
        db.execute("create table studies (id integer)")
    proc = byol_sweep("report", "--experiment", "x", "--tracking-uri", f"sqlite:///{other}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and f"{other} is not an MLflow store" in proc.stderr
    with sqlite3.connect(other) as db:
        assert [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")] == ["studies"]
    store = new_store(migrated_store, tmp_path)
    client = MlflowClient(store)
    client.create_run(client.create_experiment("x"), tags={"byol_sweep.role": "sweep", "byol_sweep.sweep_name": "x"})
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    proc = byol_sweep("report", "--experiment", "x", "--tracking-uri", store, "--out", str(a_file / "sub"),
                      cwd=tmp_path, check=False)
    assert proc.returncode == 2 and f"Cannot create the output folder {a_file / 'sub'}" in proc.stderr


@pytest.mark.slow
def test_a_sweep_whose_every_trial_failed_says_so_writes_its_report_and_exits_1(tmp_path, migrated_store):
    broken = tmp_path / "broken"  # two classes of images whose headers pass and that no decoder reads
    for name in ("a", "b"):
        (broken / name).mkdir(parents=True)
        truncated_png(broken / name / "x.png")
    space = write_space(tmp_path, "allfail", base={"epochs": 1, "dataset": f"imagefolder:{broken}"},
                        grid={"seed": [0]}, algorithm="grid", asha=False)
    proc = byol_sweep("run", str(space), "--name", "allfail", "--storage", "runs", "--max-failures", "0",
                      "--tracking-uri", new_store(migrated_store, tmp_path), cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "sweep allfail finished: 1 failed" in proc.stdout
    assert "no trial reported a metric" in proc.stderr
    assert (tmp_path / "byol-reports" / "allfail" / "report.html").exists()


def assert_every_epoch_logged(client: MlflowClient, run, epochs: int) -> None:
    """Every epoch of a resumed trial is in its run; an epoch appears twice only when it really ran
    twice (the trial was restored from a checkpoint older than its last logged epoch: Tune's saved
    state can lag the results it has handed the driver when that driver stops), and then the run
    says from which epoch it re-ran (sweep/callback.py; readers keep the later value of a step)."""
    rerun = int(run.data.tags.get("rerun_from_epoch", epochs + 1))
    for key in ("knn_acc", "loss", "epoch_s"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(set(steps)) == list(range(1, epochs + 1)), (run.info.run_name, key, steps)
        assert all(steps.count(e) == 1 for e in range(1, rerun)), (run.info.run_name, key, steps, rerun)


def parent_tags(uri: str, experiment: str) -> dict[str, str]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`byol_sweep.role` = 'sweep'")
    return runs[0].data.tags if runs else {}


def ray_processes_of(folder: Path) -> list:
    """The pids of live processes whose command line names a path of this sweep's Ray (its temp dir,
    or the short link to it in /tmp)."""
    marks = [str(folder).encode()] + [str(link).encode() for link in Path("/tmp").glob("byol-ray-*")
                                      if link.is_symlink() and link.resolve() == folder.resolve()]
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:  # it ended meanwhile
            continue
        if any(mark in cmdline for mark in marks):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.alone  # its 30 s are the driver's: no other test's sweep beside it (tests/conftest.py, WorkerRoom)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_the_whole_job_leaves_the_sweep_interrupted_within_30_s(tmp_path, signum, request):
    """What a batch scheduler's cancel or preemption, `timeout`, Ctrl-C and a closed terminal do: the
    signal goes to every process of the job's group at once. Ray runs in its own session, so only the
    driver gets it: it stops the trials through Ray and the sweep ends `interrupted`, its running trials
    `interrupted`, within a batch scheduler's usual 30 s grace; SIGTERM's sweep then resumes to the end."""
    space = write_space(tmp_path, "term", base={"epochs": 6}, grid={"seed": [0, 1]}, algorithm="grid", asha=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # a new store: its driver makes it (MLflow's lines stay off the console)
    args = ["run", str(space), "--name", "term", "--storage", "runs", "--tracking-uri", uri, "--no-report"]
    driver = subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": ROOT})
    request.addfinalizer(lambda: driver.poll() is None and os.killpg(driver.pid, signal.SIGKILL))
    client = MlflowClient(uri)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:  # until every trial has logged an epoch
        running = statuses(uri, "term")
        if len(running) == 2 and all(client.get_metric_history(r.info.run_id, "epoch_s") for r in client.search_runs(
                [client.get_experiment_by_name("term").experiment_id], "tags.`byol_sweep.role` = 'trial'")):
            break
        time.sleep(0.5)
    assert driver.poll() is None, driver.stdout.read()
    ray_folder = tmp_path / "runs" / "term" / "ray"
    assert ray_processes_of(ray_folder), "the sweep's Ray processes were not found"
    os.killpg(driver.pid, signum)  # the job's whole process group, as its driver was started in its own
    # in MLflow within a batch scheduler's usual 30 s grace, before it would SIGKILL what is left
    recorded = wait_until(lambda: parent_tags(uri, "term").get("byol_sweep.state") == "interrupted" and set(
        statuses(uri, "term").values()) == {"interrupted"}, timeout_s=30, poll_s=0.5)
    out, _ = driver.communicate(timeout=180)
    assert recorded, out
    assert driver.returncode != 0, out
    assert f"{signum.name} received" in out or signum == signal.SIGINT, out
    assert "Failed to connect to GCS" not in out, out
    # Ray's, Tune's and MLflow's own lines are in the sweep's log, not on the console
    log = (tmp_path / "runs" / "term" / "driver.log").read_text()
    assert "Started a local Ray instance" in log and "Stop signal received" in log
    assert not any(line in out for line in ("Started a local Ray instance", "Stop signal received", "Tuner.restore",
                                            "INFO mlflow")), out
    assert parent_tags(uri, "term")["byol_sweep.state"] == "interrupted", out
    assert set(statuses(uri, "term").values()) == {"interrupted"}, out
    assert "stopped early" not in out and "2 interrupted" in out, out
    runs = client.search_runs([client.get_experiment_by_name("term").experiment_id], "tags.`byol_sweep.role` = 'trial'")
    assert {r.info.status for r in runs} == {"KILLED"}
    wait_until(lambda: not ray_processes_of(ray_folder), timeout_s=30)  # the driver stopped its Ray
    assert not ray_processes_of(ray_folder)
    if signum != signal.SIGTERM:
        return
    # the sweep's folder is the user's alone, and its Ray listened on the loopback address only
    assert os.stat(tmp_path / "runs" / "term").st_mode & 0o777 == 0o700
    raylet = next((tmp_path / "runs" / "term" / "ray").glob("session_2*/logs/raylet.out")).read_text()
    assert "node_manager address: 127.0.0.1:" in raylet and "object_manager address: 127.0.0.1:" in raylet

    resumed = byol_sweep("resume", "term", "--storage", "runs", "--tracking-uri", uri, "--no-report", cwd=tmp_path)
    assert "sweep term finished: 2 completed" in resumed.stdout
    tags = parent_tags(uri, "term")
    assert tags["byol_sweep.state"] == "finished" and tags["byol_sweep.best_trial_id"] in statuses(uri, "term")
    assert set(statuses(uri, "term").values()) == {"completed"}
    for run in client.search_runs([client.get_experiment_by_name("term").experiment_id],
                                  "tags.`byol_sweep.role` = 'trial'"):
        assert run.info.status == "FINISHED"
        assert_every_epoch_logged(client, run, 6)


@pytest.mark.slow
def test_a_final_stage_stopped_by_sigterm_continues_on_resume_and_loses_no_epoch(tmp_path, migrated_store):
    space = write_space(tmp_path, "fterm", base={"epochs": 6}, grid={"seed": [0]}, algorithm="grid", asha=False,
                        final={"top_k": 1, "seeds": 3})  # a one-trial search: the final stage is the point
    uri = new_store(migrated_store, tmp_path)
    args = ["run", str(space), "--name", "fterm", "--storage", "runs", "--tracking-uri", uri, "--no-report"]
    driver = subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": ROOT})
    client = MlflowClient(uri)

    def finals():
        exp = client.get_experiment_by_name("fterm")
        return client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'final'") if exp else []

    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:  # until every final run has logged an epoch
        runs = finals()
        if len(runs) == 3 and all(client.get_metric_history(r.info.run_id, "epoch_s") for r in runs):
            break
        time.sleep(0.5)
    assert driver.poll() is None, driver.stdout.read()
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode != 0, out
    assert parent_tags(uri, "fterm")["byol_sweep.state"] == "interrupted", out
    before = {r.info.run_id: r.data.tags["resources.cpu"] for r in finals()}
    assert len(before) == 3

    resumed = byol_sweep("resume", "fterm", "--storage", "runs", "--tracking-uri", uri, "--no-report", cwd=tmp_path)
    assert "continuing the final stage" in resumed.stdout and "final stage finished: 3 completed" in resumed.stdout
    assert parent_tags(uri, "fterm")["byol_sweep.state"] == "finished"
    runs = finals()
    assert {r.info.run_id: r.data.tags["resources.cpu"] for r in runs} == before  # the same runs, the same share
    for run in runs:  # each continued from its checkpoint: every epoch, none lost
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
        assert_every_epoch_logged(client, run, 6)
        assert "linear_probe_acc" in run.data.metrics


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_a_sweep_that_fails_to_start_leaves_no_folder(tmp_path):
    (tmp_path / "bad.db").write_text("not a database at all " * 100)
    proc = byol_sweep("run", "quick", "--name", "x", "--storage", "runs", "--tracking-uri",
                      f"sqlite:///{tmp_path}/bad.db", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "is not an MLflow store (not an SQLite database)" in proc.stderr, proc.stderr
    assert "unreachable" not in proc.stderr
    assert not (tmp_path / "runs" / "x").exists()


def test_plan_and_status_through_the_command(tmp_path, monkeypatch, capsys):
    proc = byol_sweep_in_process("plan", "quick", "--epoch-seconds", "30", "--cpus", "2", cwd=tmp_path,
                                 monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 0 and "plan of quick: 6 trials" in proc.stdout
    assert "2 trials at once (2 CPUs, 1 CPU per trial)" in proc.stdout
    both = byol_sweep_in_process("plan", "quick", "--epoch-seconds", "30", "--measure", cwd=tmp_path,
                                 monkeypatch=monkeypatch, capsys=capsys)
    assert both.returncode == 2 and "give --epoch-seconds or --measure, not both" in both.stderr
    missing = byol_sweep_in_process("status", "nosuch", "--storage", "runs", cwd=tmp_path,
                                    monkeypatch=monkeypatch, capsys=capsys)
    assert missing.returncode == 2 and "no sweep named 'nosuch'" in missing.stderr
    assert not list(tmp_path.iterdir())  # a reading command creates nothing


@pytest.mark.slow
def test_a_simulated_sweep_runs_the_space_on_the_stand_in_and_status_shows_it(tmp_path, migrated_store):
    """`run --simulate`: the space's scheduler, searcher, MLflow and report, on a synthetic curve."""
    uri = new_store(migrated_store, tmp_path)
    out = byol_sweep("run", "quick", "--simulate", "0.02", "--num-samples", "12", "--name", "sim", "--storage", "runs",
                     "--tracking-uri", uri, cwd=tmp_path).stdout
    assert "a simulation: every trial reports the stand-in's synthetic learning curve" in out
    assert "sweep sim finished" in out and "stopped early" in out and "final stage:" not in out
    assert "could not be saved" not in out and "could not be logged" not in out
    assert (tmp_path / "byol-reports" / "sim" / "report.html").exists()
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("sim").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("byol_sweep.role") == "sweep")
    assert parent.data.params["simulated_epoch_s"] == "0.02" and parent.data.tags["byol_sweep.state"] == "finished"
    assert len([r for r in runs if r.data.tags.get("byol_sweep.role") == "trial"]) == 12
    status = byol_sweep("status", "sim", "--storage", "runs", "--tracking-uri", uri, cwd=tmp_path).stdout
    assert "its driver is not running" in status and "12 of 12 trials ended" in status
    refused = byol_sweep("finalize", "sim", "--storage", "runs", "--tracking-uri", uri, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "is a simulation" in refused.stderr
