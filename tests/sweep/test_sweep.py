"""Real sweeps on a real local Ray instance (one per module) with a real SQLite MLflow store."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from sweep.runner import SweepOptions, run_sweep
from sweep.space import load_space
from tests.conftest import new_store, truncated_png, write_space

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def child_runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`byol_sweep.role` = 'trial'")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`byol_sweep.role` = 'sweep'")
    return parents, runs


def epochs_logged(client: MlflowClient, run_id: str, key: str = "knn_acc") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def asha_sweep(tmp_path_factory, migrated_store):
    """Six Optuna trials, ASHA with rungs at epochs 1 and 2 of 4."""
    folder = tmp_path_factory.mktemp("asha")
    space = write_space(
        folder, "asha",
        base={"epochs": 4},
        search={"base_lr": {"loguniform": [0.05, 2.0]}, "tau_base": {"one_minus_loguniform": [0.9, 0.999]},
                "aug_strength": {"uniform": [0.2, 1.5]}},
        algorithm="optuna", num_samples=6,
        asha={"grace_period": 1, "reduction_factor": 2, "max_epochs": 4},
    )
    uri = new_store(migrated_store, folder)
    outcome = run_sweep(str(space), SweepOptions(name="asha", storage=str(folder / "runs"), tracking_uri=uri,
                                                 max_failures=0))
    return outcome, folder, uri


def test_asha_stops_trials_early_and_every_epoch_is_recorded(asha_sweep):
    outcome, folder, uri = asha_sweep
    client = MlflowClient(uri)
    parents, runs = child_runs(client, "asha")
    assert len(parents) == 1 and len(runs) == 6
    statuses = [r.data.tags["status"] for r in runs]
    assert statuses.count("stopped_early") >= 1
    assert set(statuses) <= {"completed", "stopped_early"}
    assert outcome.counts.get("stopped_early", 0) == statuses.count("stopped_early")
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        epochs = epochs_logged(client, run.info.run_id)
        last = int(run.data.tags.get("stopped_epoch", 4))
        assert epochs == list(range(1, last + 1)), (run.info.run_name, epochs)
        for key in ("loss", "z_std", "lr", "tau", "images_per_s", "epoch_s"):
            assert epochs_logged(client, run.info.run_id, key) == epochs
        if run.data.tags["status"] == "stopped_early":
            assert last in (1, 2)  # ASHA's rungs
        else:
            assert "linear_probe_acc" in run.data.metrics
        # the trial's full config as params, swept values as tags
        assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "4"
        assert float(run.data.tags["swept.base_lr"]) == pytest.approx(float(run.data.params["base_lr"]))
        assert 0.9 <= float(run.data.params["tau_base"]) <= 0.999
        assert run.data.tags["policy"] == "byol" and run.data.tags["seed"] == "0"


def test_the_best_trial_is_the_full_budget_trial_with_the_best_last_epoch(asha_sweep):
    outcome, folder, uri = asha_sweep
    client = MlflowClient(uri)
    parents, runs = child_runs(client, "asha")
    last_value = {  # the objective: the value at the last epoch, of trials that ran all 4
        r.data.tags["byol_sweep.trial_id"]: sorted(client.get_metric_history(r.info.run_id, "knn_acc"),
                                                   key=lambda m: m.step)[-1].value
        for r in runs if r.data.tags["status"] == "completed"
    }
    best_id = max(last_value, key=last_value.get)
    assert outcome.best_trial == best_id and outcome.best_metric == pytest.approx(last_value[best_id])
    tags = parents[0].data.tags
    assert float(tags["byol_sweep.best_metric"]) == pytest.approx(last_value[best_id])
    assert parents[0].data.metrics["best_knn_acc"] == pytest.approx(last_value[best_id])  # sweeps sort by it
    assert json.loads(tags["byol_sweep.best_config"]) == outcome.best_config
    assert tags["byol_sweep.state"] == "finished" and tags["byol_sweep.search_state"] == "finished"
    # the baselines, measured once on the same bank and queries as the trials
    metrics = parents[0].data.metrics
    assert 0 < metrics["baseline.raw_pixels.val"] <= 1 and 0 < metrics["baseline.untrained.val"] <= 1
    assert metrics["baseline.queries.val"] == 200
    params = parents[0].data.params
    assert params["asha.grace_period"] == "1" and params["search"] == "optuna"
    assert json.loads(params["space.tau_base"]) == {"type": "one_minus_loguniform", "low": 0.9, "high": 0.999}
    assert params["optuna.n_startup_trials"] == "2"


def test_asha_decisions_are_recorded_as_made(asha_sweep):
    _, _, uri = asha_sweep
    _, runs = child_runs(MlflowClient(uri), "asha")
    for run in runs:
        decisions = {int(k.split("_")[-1]): json.loads(v) for k, v in run.data.tags.items() if k.startswith("asha.rung_")}
        assert set(decisions) <= {1, 2} and 1 in decisions  # every trial was judged at the first rung
        if run.data.tags["status"] == "stopped_early":
            stop = decisions[int(run.data.tags["stopped_epoch"])]
            assert stop["decision"] == "stop" and stop["value"] < stop["cutoff"]
        else:
            assert all(d["decision"] == "continue" for d in decisions.values())


def test_optuna_sees_stopped_trials_as_pruned(asha_sweep):
    outcome, folder, uri = asha_sweep
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{folder}/runs/asha/optuna.db")
    states = [t.state for t in study.trials]
    client = MlflowClient(uri)
    _, runs = child_runs(client, "asha")
    n_stopped = sum(r.data.tags["status"] == "stopped_early" for r in runs)
    assert states.count(optuna.trial.TrialState.PRUNED) == n_stopped >= 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(runs) - n_stopped
    for t in study.trials:
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == t.intermediate_values[4]


def test_failed_and_diverged_trials_get_their_status(tmp_path, migrated_store):
    # a tree that passes the driver's checks (2 classes, image headers) but whose images cannot be read
    broken = tmp_path / "broken"
    for c in ("a", "b"):
        (broken / c).mkdir(parents=True)
        truncated_png(broken / c / "0.png")
    space = write_space(
        tmp_path, "health",
        base={"epochs": 2, "optimizer": "sgd", "cache_dir": str(tmp_path / "cache")},
        grid={"dataset": ["digits", f"imagefolder:{broken}"], "base_lr": [0.5, 1.0e12]},
        algorithm="grid", asha=False,
    )
    uri = new_store(migrated_store, tmp_path)
    outcome = run_sweep(str(space), SweepOptions(name="health", storage=str(tmp_path / "runs"), tracking_uri=uri,
                                                 max_failures=0))
    client = MlflowClient(uri)
    _, runs = child_runs(client, "health")
    by_config = {(r.data.params["dataset"], float(r.data.params["base_lr"])): r for r in runs}
    assert len(by_config) == 4
    assert by_config[("digits", 0.5)].data.tags["status"] == "completed"
    diverged = by_config[("digits", 1e12)]
    assert diverged.data.tags["status"] == "diverged" and "nan" in diverged.data.tags["error"]
    for lr in (0.5, 1e12):
        failed = by_config[(f"imagefolder:{broken}", lr)]
        assert failed.data.tags["status"] == "failed"
        assert "cannot read image" in failed.data.tags["error"] and "0.png" in failed.data.tags["error"]
        assert failed.info.status == "FAILED"
    assert outcome.counts == {"completed": 1, "diverged": 1, "failed": 2}


class KillWorkerOnce(tune.Callback):
    """Kills the trial's worker process (SIGKILL) once, as soon as Tune holds its epoch-2 checkpoint.

    Killing at the epoch-2 *result* would race Tune's fetch of that checkpoint from the worker."""

    def __init__(self):
        self.killed = False

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not self.killed and trial.last_result.get("epoch") == 2:
            self.killed = True
            os.kill(trial.last_result["pid"], signal.SIGKILL)


def test_a_killed_trial_resumes_from_its_checkpoint(tmp_path, monkeypatch, migrated_store):
    import sweep.runner as runner

    space = write_space(tmp_path, "crash", base={"epochs": 4}, grid={"seed": [0]}, algorithm="grid", asha=False)
    killer = KillWorkerOnce()
    original = runner.callbacks
    monkeypatch.setattr(runner, "callbacks", lambda *a: [*original(*a), killer])
    uri = new_store(migrated_store, tmp_path)
    outcome = run_sweep(str(space), SweepOptions(name="crash", storage=str(tmp_path / "runs"), tracking_uri=uri,
                                                 max_failures=2))
    assert killer.killed
    assert outcome.counts == {"completed": 1}
    client = MlflowClient(uri)
    _, runs = child_runs(client, "crash")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["status"] == "completed" and run.data.tags["restarts"] == "1"
    assert epochs_logged(client, run.info.run_id) == [1, 2, 3, 4]
    # Tune's own record of the trial: epochs 3 and 4 came from the restored worker, none repeated
    # (Ray's result.json may lose the line of the epoch whose checkpoint the killed worker had just
    # reported; progress.csv and MLflow, checked above, keep it)
    trial_dir = next((tmp_path / "runs" / "crash").glob("train_byol_*"))
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    reported = [r["epoch"] for r in results]
    assert reported == sorted(set(reported)) and reported[0] == 1 and reported[-2:] == [3, 4]
    assert results[-1]["pid"] == results[-2]["pid"] != results[0]["pid"]
    assert pd.read_csv(trial_dir / "progress.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert not list(trial_dir.glob("events.out.tfevents*"))  # no TensorBoard files: MLflow holds the curves


def test_the_same_sweep_lands_on_a_real_mlflow_server(tmp_path, mlflow_server, capsys):
    space = write_space(tmp_path, "remote", base={"epochs": 2}, grid={"seed": [0, 1]}, algorithm="grid", asha=False)
    with_password = mlflow_server.replace("http://", "http://alice:s3cret@")  # the server ignores it
    outcome = run_sweep(str(space), SweepOptions(name="remote", storage=str(tmp_path / "runs"),
                                                 tracking_uri=with_password, max_failures=0))
    printed = capsys.readouterr()
    assert "alice:***@" in printed.out
    assert "s3cret" not in printed.out + printed.err
    stored = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]
    assert stored == []  # not in sweep.json, not in Tune's pickled callbacks (tuner.pkl), nowhere
    client = MlflowClient(mlflow_server)
    parents, runs = child_runs(client, "remote")
    assert len(parents) == 1 and len(runs) == 2
    assert {r.data.tags["status"] for r in runs} == {"completed"}
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    for run in runs:
        assert epochs_logged(client, run.info.run_id) == [1, 2]
    assert parents[0].data.tags["byol_sweep.best_trial_id"] == outcome.best_trial
    assert not any("s3cret" in v for v in parents[0].data.tags.values())
    # the report reads the server's histories in bulk; every epoch of every metric arrives
    from reports import build_report

    out = build_report(["remote"], mlflow_server, tmp_path / "report").parent
    curves = pd.read_csv(out / "curves.csv")
    for run in runs:
        mine = curves[curves["trial"] == run.info.run_name]
        for key in ("knn_acc", "loss", "epoch_s"):
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            assert list(mine[key]) == pytest.approx([m.value for m in history])
    # the MLflow UI opens on the sweep's trials, flat and best first (checked in a real browser)
    import subprocess
    from pathlib import Path

    from sweep.summary import ui_link

    if Path("/usr/bin/chromium").exists():
        link = ui_link(mlflow_server, parents[0].info.experiment_id, "knn_acc", "max")
        dom = subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom",
                              link], capture_output=True, text=True, timeout=120).stdout
        shown = list(dict.fromkeys(re.findall(r"trial_[0-9a-f]+(?:_[0-9]+)?", dom)))
        best_first = sorted(runs, key=lambda r: -r.data.metrics["knn_acc"])
        assert shown == [r.info.run_name for r in best_first]


def test_the_quick_space_is_what_the_readme_promises():
    spec = load_space("quick")
    assert spec.base["dataset"] == "cifar10_mini" and spec.base["backbone"] == "small_cnn_half"
    assert spec.algorithm == "optuna" and spec.asha is not None
    assert spec.final is not None and spec.final.seeds == 3
    assert set(spec.swept) == {"base_lr", "tau_base", "aug_strength"}


# -- the report, end to end, from real sweeps ---------------------------------------------------

REPORT_SECTIONS = ("Result", "Summary", "Best configurations", "Learning curves", "Search", "Sensitivity", "Health")


def summary_value(md: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| (.*?) \|$", md, re.M)
    assert match, f"summary row {label!r} missing"
    return match.group(1)


@pytest.fixture(scope="module")
def policy_sweep(asha_sweep):
    """Two policies x two seeds, in the same MLflow store as the ASHA sweep."""
    _, folder, uri = asha_sweep
    space = write_space(folder, "policies", base={"epochs": 2},
                        grid={"policy": ["byol", "crop_only"], "seed": [0, 1]}, algorithm="grid", asha=False)
    outcome = run_sweep(str(space), SweepOptions(name="policies", storage=str(folder / "runs"), tracking_uri=uri,
                                                 max_failures=0))
    return outcome, folder, uri


def test_report_of_a_real_sweep_matches_mlflow(asha_sweep, tmp_path):
    from reports import build_report

    outcome, _, uri = asha_sweep
    html = build_report(["asha"], uri, tmp_path / "report")
    out = html.parent
    md = (out / "report.md").read_text()
    for title in REPORT_SECTIONS:
        assert f"## {title}" in md and f"<h2>{title}</h2>" in html.read_text()
    trials = pd.read_csv(out / "trials.csv").set_index("run_id")
    curves = pd.read_csv(out / "curves.csv")
    client = MlflowClient(uri)
    _, runs = child_runs(client, "asha")
    assert len(trials) == len(runs) == 6
    for run in runs:
        row = trials.loc[run.info.run_id]
        history = sorted(client.get_metric_history(run.info.run_id, "knn_acc"), key=lambda m: m.step)
        assert row["status"] == run.data.tags["status"]
        assert row["epochs_run"] == len(history)
        assert row["final_metric"] == pytest.approx(history[-1].value)
        assert row["best_metric"] == pytest.approx(max(m.value for m in history))
        mine = curves[curves["trial"] == row["trial"]]
        assert list(mine["epoch"]) == [m.step for m in history]
        assert list(mine["knn_acc"]) == pytest.approx([m.value for m in history])
    counts = trials["status"].value_counts()
    for status in ("completed", "stopped_early"):
        assert int(summary_value(md, status)) == counts.get(status, 0) == outcome.counts.get(status, 0)
    assert summary_value(md, "Best search value (full budget)").startswith(f"{outcome.best_metric:.4f}")
    assert summary_value(md, "Dataset") == "digits" and summary_value(md, "Backbone") == "small_cnn"
    assert summary_value(md, "Search evaluated on") == "val split (held out of training)"
    # ASHA's record: all six judged at epoch 1; at epoch 2 those it let through
    assert re.search(r"^\| 1 \| 6 \| \d \| \d \|", md, re.M)
    assert re.search(rf"^\| 2 \| {(trials['epochs_run'] >= 2).sum()} \| \d \| \d \|", md, re.M)
    # no final stage in this space: the report says the search's best is optimistic
    assert "this sweep ran no final stage" in md and "byol-sweep finalize asha" in md
    # the command that reproduces the best trial holds every param of its run
    completed = trials[trials["status"] == "completed"]
    best = completed[completed["final_metric"] == completed["final_metric"].max()].index[0]
    command = re.search(r"^byol-sweep train.*?(?=^```)", md, re.M | re.S).group(0)
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:2] == ["byol-sweep", "train"] and words[2::2] == ["--set"] * (len(words) // 2 - 1)
    assert dict(w.split("=", 1) for w in words[3::2]) == client.get_run(best).data.params


def test_report_compares_policies_and_sweeps(policy_sweep, tmp_path):
    from reports import build_report

    outcome, _, uri = policy_sweep
    assert outcome.counts == {"completed": 4}
    out = build_report(["policies", "asha"], uri, tmp_path / "both").parent
    md = (out / "report.md").read_text()
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["experiment"].value_counts().items()) == [("asha", 6), ("policies", 4)]
    mine = trials[trials["experiment"] == "policies"]
    means = mine.groupby("policy")["final_metric"].mean().sort_values(ascending=False)
    ranked = re.findall(r"^\| (\d) \| (byol|crop_only) \| (\d) \|", md, re.M)
    assert [(r[1], r[2]) for r in ranked[:2]] == [(p, "2") for p in means.index]
    assert "## Comparison" in md and "### policy" in md and "paired by seed" in md
    # a comparison sweep's untrained-encoder baseline is measured on each of its seeds' inits
    parent = MlflowClient(uri).get_run(outcome.parent_run_id).data.metrics
    for seed in (0, 1):
        assert 0 < parent[f"baseline.untrained.val.seed_{seed}"] <= 1
    assert "| kNN on the untrained encoder | " in md and "mean of 2 inits, seeds 0, 1" in md
