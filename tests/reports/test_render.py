"""reports.build_report on fake sweeps written into a real SQLite MLflow store per docs/mlflow-layout.md."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from reports import ReportError, build_report
from reports.load import load_sweep
from reports.store import MlflowReader, open_store
from tests.reports.test_store import assert_same, read_both_ways

ROOT = Path(__file__).resolve().parents[2]

T0 = 1_700_000_000_000  # ms
EPOCH_S = 10.0
MAX_EPOCHS, GRACE, RF = 9, 1, 3
SECTIONS = ("Result", "Summary", "Best configurations", "Learning curves", "Search", "Sensitivity", "Comparisons",
            "Health")
BASE = {
    "dataset": "digits", "backbone": "small_cnn", "epochs": MAX_EPOCHS, "batch_size": 256, "optimizer": "lars",
    "base_lr": 0.2, "tau_base": 0.996, "aug_strength": 1.0, "policy": "byol", "seed": 0, "linear_probe": True,
    "image_size": 32, "weight_decay": 1e-06,
}
SPACE_A = {
    "base_lr": {"type": "loguniform", "low": 0.05, "high": 2.0},
    "tau_base": {"type": "one_minus_loguniform", "low": 0.9, "high": 0.999},
    "policy": {"type": "grid", "values": ["byol", "simclr", "crop_only"]},
    "seed": {"type": "grid", "values": [0, 1, 2]},
}
# (policy, seed, status, epochs run) of sweep-a's nine trials
TRIALS_A = [
    ("byol", 0, "completed", 9), ("byol", 1, "completed", 9), ("byol", 2, "completed", 9),
    ("simclr", 0, "completed", 9), ("simclr", 1, "stopped_early", 3), ("simclr", 2, "completed", 9),
    ("crop_only", 0, "stopped_early", 1), ("crop_only", 1, "diverged", 4), ("crop_only", 2, "failed", 0),
]
LEVEL = {"byol": 0.80, "simclr": 0.70, "crop_only": 0.45, "no_color": 0.6}
BASELINES = {"baseline.raw_pixels.test": 0.30, "baseline.untrained.test": 0.25, "baseline.untrained_bn.test": 0.35,
             "baseline.queries.test": 1000.0, "baseline.raw_pixels_probe.test": 0.33,
             "baseline.untrained_probe.test": 0.28, "baseline.untrained_bn_probe.test": 0.99,
             "baseline.raw_pixels.val": 0.31, "baseline.untrained.val": 0.26, "baseline.queries.val": 500.0,
             # the final stage's seeds, each with its own init
             **{f"baseline.{what}.test.seed_{10000 + i}": level + step
                for what, level in (("untrained", 0.25), ("untrained_bn", 0.35), ("untrained_probe", 0.28),
                                    ("untrained_bn_probe", 0.98)) for i, step in enumerate((0.0, 0.01, -0.01))}}
# ASHA's decisions as the scheduler would have recorded them: trial index -> rung -> record
DECISIONS_A = {
    0: {1: {"rung": 1, "value": 0.26, "cutoff": None, "decision": "continue"},
        3: {"rung": 3, "value": 0.52, "cutoff": None, "decision": "continue"}},
    4: {1: {"rung": 1, "value": 0.25, "cutoff": 0.24, "decision": "continue"},
        3: {"rung": 3, "value": 0.40, "cutoff": 0.50, "decision": "stop"}},
    6: {1: {"rung": 1, "value": 0.12, "cutoff": 0.25, "decision": "stop"}},
}


def _parent(client, exp_id, name, state, space, start, end, extra_params=None, baselines=None):
    params = {"metric": "knn_acc", "mode": "max", "search": "optuna", "num_samples": 3,
              "asha.grace_period": GRACE, "asha.reduction_factor": RF, "asha.max_epochs": MAX_EPOCHS,
              "space_file": f"{name}.yaml", "swept": ",".join(space)}
    params.update({f"space.{k}": json.dumps(v) for k, v in space.items()})
    params.update({f"base.{k}": v for k, v in BASE.items()})
    params.update(extra_params or {})
    tags = {"byol_sweep.role": "sweep", "byol_sweep.sweep_name": name, "byol_sweep.state": state,
            "byol_sweep.version": "0.1.0", "byol_sweep.git_commit": "abc", "byol_sweep.command": "byol-sweep run",
            "byol_sweep.host": "test", "byol_sweep.ray_version": "2", "byol_sweep.torch_version": "2",
            "byol_sweep.mlflow_version": "3"}
    run = client.create_run(exp_id, start_time=start, tags=tags, run_name=name)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, start, 0) for k, v in (baselines or {}).items()])
    if end is not None:
        client.set_terminated(run.info.run_id, "FINISHED", end_time=end)
    return run.info.run_id


def _trial(client, exp_id, parent_id, index, config, status, epochs, swept, rng, gpu=0.5, collapse=False,
           role="trial", extra_tags=None):
    start = T0 + 1000 * (index + 1)
    tags = {"mlflow.parentRunId": parent_id, "byol_sweep.role": role, "byol_sweep.trial_id": f"t{index:03d}",
            "status": status, "policy": config["policy"], "seed": str(config["seed"]),
            "resources.cpu": "1", "resources.gpu": str(gpu)}
    tags.update({f"swept.{k}": str(config[k]) for k in swept})
    if status == "stopped_early":
        tags["stopped_epoch"] = str(epochs)
    if status == "failed":
        tags["error"] = "RuntimeError: CUDA out of memory"
    if status == "diverged":
        tags["error"] = f"Diverged: loss is nan at epoch {epochs}"
    tags.update(extra_tags or {})
    run = client.create_run(exp_id, start_time=start, tags=tags, run_name=f"{role}_{index:05d}")
    run_id = run.info.run_id
    plateau = LEVEL[config["policy"]] + 0.05 * math.log10(config["base_lr"] / 0.2) + rng.normal(0, 0.01)
    metrics, history = [], []
    for e in range(1, epochs + 1):
        knn = plateau * (1 - math.exp(-e / 2.5))
        z, loss = (0.004 if collapse and e > 5 else 0.06), 1.0 / e
        if status == "diverged" and e == epochs:
            knn, z, loss = 0.1, 0.001, float("nan")
        values = {"loss": loss, "knn_acc": knn, "z_std": z, "lr": 0.1, "tau": 0.99, "images_per_s": 1000.0,
                  "epoch_s": EPOCH_S}
        history.append(values)
        metrics += [Metric(k, v, start + e * 10_000, e) for k, v in values.items()]
    if status == "completed":
        metrics.append(Metric("linear_probe_acc", history[-1]["knn_acc"] + 0.02, start + 100_000, epochs))
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in config.items()])
    if status != "running":
        client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED", end_time=start + 200_000)
    return history


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """sweep-a: finished, 3 policies x 3 seeds; sweep-b: running, 2 policies x 1 seed;
    empty-sweep: a parent with one running and one failed trial; not-a-sweep: a plain run."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    rng = np.random.default_rng(0)
    histories = {}

    exp = client.create_experiment("sweep-a")
    parent = _parent(client, exp, "sweep-a", "finished", SPACE_A, T0, T0 + 3_600_000, baselines=BASELINES)
    configs = {}
    for i, (policy, seed, status, epochs) in enumerate(TRIALS_A):
        config = dict(BASE, policy=policy, seed=seed, base_lr=float(f"{0.1 * (1.3 ** i):.4f}"),
                      tau_base=float(f"{1 - 0.01 / (1.5 ** i):.6f}"))
        configs[i] = config
        decisions = {f"asha.rung_{r}": json.dumps(d) for r, d in DECISIONS_A.get(i, {}).items()}
        histories[f"trial_{i:05d}"] = (status, _trial(client, exp, parent, i, config, status, epochs, SPACE_A, rng,
                                                      extra_tags=decisions))
    # the final stage: trial 2 (the best full-budget trial) re-trained with three new seeds
    finals = []
    for k, seed in enumerate((10000, 10001, 10002)):
        tags = {"final.rank": "1", "final.group": "", "final.source_trial": "t002",
                "final.source_value": str(histories["trial_00002"][1][-1]["knn_acc"])}
        config = dict(configs[2], seed=seed, eval_split="test")
        finals.append(_trial(client, exp, parent, 20 + k, config, "completed", MAX_EPOCHS, SPACE_A, rng,
                             role="final", extra_tags=tags))

    space_b = {"base_lr": SPACE_A["base_lr"], "policy": {"type": "grid", "values": ["byol", "no_color"]}}
    exp = client.create_experiment("sweep-b")
    parent = _parent(client, exp, "sweep-b", "running", space_b, T0, None)
    for i, (policy, status, epochs) in enumerate([("byol", "completed", 9), ("no_color", "completed", 9),
                                                  ("byol", "running", 2)]):
        config = dict(BASE, policy=policy, base_lr=0.1 * (i + 1))
        _trial(client, exp, parent, i, config, status, epochs, space_b, rng, gpu=0, collapse=policy == "no_color")

    exp = client.create_experiment("empty-sweep")
    parent = _parent(client, exp, "empty-sweep", "finished", SPACE_A, T0, T0 + 60_000)
    _trial(client, exp, parent, 0, dict(BASE), "running", 2, SPACE_A, rng)
    _trial(client, exp, parent, 1, dict(BASE, seed=1), "failed", 0, SPACE_A, rng)

    exp = client.create_experiment("not-a-sweep")
    client.create_run(exp, run_name="plain")
    exp = client.create_experiment("grid-policies")  # fixed lr: the policies differ in the policy alone
    space_g = {"policy": SPACE_A["policy"], "seed": {"type": "grid", "values": [0, 1, 2, 3]}}
    parent = _parent(client, exp, "grid-policies", "finished", space_g, T0, T0 + 60_000)
    for i, (policy, seed) in enumerate((p, s) for p in ("byol", "simclr", "crop_only") for s in range(4)):
        _trial(client, exp, parent, i, dict(BASE, policy=policy, seed=seed), "completed", MAX_EPOCHS, space_g, rng)
    exp = client.create_experiment("grid-tau")  # the shipped `bootstrap` space's shape: moving against fixed target
    space_t = {"tau_base": {"type": "grid", "values": [0.99, 1.0]}, "seed": {"type": "grid", "values": [0, 1, 2]}}
    parent = _parent(client, exp, "grid-tau", "finished", space_t, T0, T0 + 60_000, baselines=BASELINES)
    for i, (tau, seed) in enumerate((t, s) for t in (0.99, 1.0) for s in range(3)):
        _trial(client, exp, parent, i, dict(BASE, tau_base=tau, seed=seed), "completed", MAX_EPOCHS, space_t, rng)
    exp = client.create_experiment("grid-tau-test")  # the same, measured on the test split (as `bootstrap` is)
    parent = _parent(client, exp, "grid-tau-test", "finished", space_t, T0, T0 + 60_000,
                     extra_params={"base.eval_split": "test"}, baselines=BASELINES)
    for i, (tau, seed) in enumerate((t, s) for t in (0.99, 1.0) for s in range(3)):
        _trial(client, exp, parent, i, dict(BASE, tau_base=tau, seed=seed, eval_split="test"), "completed",
               MAX_EPOCHS, space_t, rng)
    exp = client.create_experiment("grid-tau-started")  # the same, two epochs in: nothing to compare yet
    parent = _parent(client, exp, "grid-tau-started", "running", space_t, T0, None, baselines=BASELINES)
    for i, tau in enumerate((0.99, 1.0)):
        _trial(client, exp, parent, i, dict(BASE, tau_base=tau, seed=0), "running", 2, space_t, rng)
    return {"uri": uri, "client": client, "histories": histories, "finals": finals}


@pytest.fixture(scope="module")
def report_a(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-a")
    html = build_report(["sweep-a"], store["uri"], out)
    return out, html


def _summary_value(md: str, label: str) -> str:
    m = re.search(rf"^\| {re.escape(label)} \| (.*?) \|$", md, re.M)
    assert m, f"summary row {label!r} missing"
    return m.group(1)


def test_report_files_and_sections(report_a):
    out, html_path = report_a
    assert html_path == out / "report.html"
    md = (out / "report.md").read_text()
    html = html_path.read_text()
    for title in SECTIONS:
        assert f"## {title}" in md
        assert f"<h2>{title}</h2>" in html
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert {"curves.png", "history.png", "z_std.png"} <= set(pngs)
    # 5 full-budget trials, below MIN_TRIALS_FOR_EFFECT_PLOTS: no effect plots (tests/reports/test_small_n_figures.py)
    assert not {"parallel.png", "interaction.png", "sensitivity.png"} & set(pngs)
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'(src|href)="(?!data:)', html), "the HTML must not load anything from outside"


def test_numbers_match_csv_and_mlflow(report_a, store):
    out, _ = report_a
    md = (out / "report.md").read_text()
    trials = pd.read_csv(out / "trials.csv")
    curves = pd.read_csv(out / "curves.csv")
    assert len(trials) == len(TRIALS_A)
    for status in ("completed", "stopped_early", "diverged", "failed", "running"):
        expected = sum(1 for t in TRIALS_A if t[2] == status)
        assert int(_summary_value(md, status)) == expected == (trials["status"] == status).sum()
    # the best search value: the last epoch's value, over the trials that ran the full budget only
    client = store["client"]
    exp = client.get_experiment_by_name("sweep-a")
    best = -1.0
    for run in client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'"):
        history = sorted(client.get_metric_history(run.info.run_id, "knn_acc"), key=lambda m: m.step)
        if run.data.tags["status"] == "completed":
            best = max(best, history[-1].value)
    completed = trials[trials["status"] == "completed"]
    assert completed["final_metric"].max() == pytest.approx(best, abs=1e-12)
    best_row = completed.loc[completed["final_metric"].idxmax()]
    assert _summary_value(md, "Best search value (full budget)") == f"{best:.4f} ({best_row['trial']})"
    assert best_row["trial"] == "trial_00002"
    # compute: sum of epoch_s; GPU-hours: x 0.5 GPU
    epochs = sum(t[3] for t in TRIALS_A)
    assert trials["compute_s"].sum() == pytest.approx(epochs * EPOCH_S)
    # compute counts the search and the final stage's three full-budget runs
    assert _summary_value(md, "Compute (trial-hours)") == f"{(epochs + 3 * MAX_EPOCHS) * EPOCH_S / 3600:.2f}"
    assert _summary_value(md, "GPU-hours") == f"{epochs * EPOCH_S * 0.5 / 3600:.2f}"
    assert _summary_value(md, "Wall time") == "1 h 00 min"
    assert len(curves) == epochs and (curves.groupby("trial")["epoch"].max() <= MAX_EPOCHS).all()
    # final = last knn_acc value, epochs run per trial
    for trial, (status, history) in store["histories"].items():
        row = trials.set_index("trial").loc[trial]
        assert row["epochs_run"] == len(history) and row["status"] == status
        if history:
            assert row["final_metric"] == pytest.approx(history[-1]["knn_acc"])
    # the reproduce command lists every param of the best trial's run
    run = client.get_run(best_row["run_id"])
    for k, v in run.data.params.items():
        assert f"--set {k}={v}" in md


def test_asha_decisions_stopped_trials_comparisons_and_health(report_a):
    out, _ = report_a
    md = (out / "report.md").read_text()
    # the rung table is ASHA's record, not a recomputation
    assert "| 1 | 3 | 2 | 1 | 0.2400 – 0.2500 | 1 |" in md
    assert "| 3 | 2 | 1 | 1 | 0.5000 – 0.5000 | 1 |" in md
    # stopped trials apart, with the rung where they stopped and the cut-off they faced
    assert re.search(r"^\| trial_00004 \| 3 \| [0-9.]+ \| 0\.5000 \|$", md, re.M)
    assert re.search(r"^\| trial_00006 \| 1 \| [0-9.]+ \| 0\.2500 \|$", md, re.M)
    leaderboard = md[md.index("## Best configurations"):md.index("Reproduce the best trial")]
    assert "trial_00004" not in leaderboard.split("Stopped early")[0] and "trial_00006" not in leaderboard
    # the policies also differ in lr and momentum: refused, saying what else differs
    comparisons = md[md.index("## Comparisons"):md.index("## Health")]
    assert "Not compared: the policy arms differ in more than policy" in comparisons
    assert "base_lr takes" in comparisons and "tau_base takes" in comparisons
    assert "CUDA out of memory" in md and "Diverged: loss is nan at epoch 4" in md
    assert "below 0.01" in md and "Collapsed: 1 trial" not in md  # the diverged one is listed once
    assert "1 - tau_base" not in md  # an axis label, inside the PNG only


def test_the_headline_is_the_final_stage_beside_the_baselines(report_a, store):
    from scipy import stats

    out, _ = report_a
    md = (out / "report.md").read_text()
    values = np.array([h[-1]["knn_acc"] for h in store["finals"]])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    result = md[md.index("## Result"):md.index("## Summary")]
    assert ("Selected configuration (trial t002, " in result
            and f"test knn_acc {values.mean():.4f} [{values.mean() - half:.4f}, {values.mean() + half:.4f}] (n = 3)"
            in result)
    assert "10000, 10001, 10002" in result and "optimistic" in result
    # raw pixels with their binomial interval over 1000 queries, the untrained encoder from each seed's
    # own init; the trained model is far above all, compared paired by seed where the seed has a baseline
    assert "| kNN on raw pixels | 0.3000 [0.2717, 0.3295] (95% Clopper-Pearson over the queries) |" in result
    assert ("| kNN on the untrained encoder | 0.2500 (mean of 3 inits, seeds 10000, 10001, 10002: 0.2500, 0.2600, "
            "0.2400, SD 0.0100) |") in result
    untrained = values - np.array([0.25, 0.26, 0.24])
    paired = stats.ttest_1samp(untrained, 0.0).confidence_interval(0.95)
    assert (f"| kNN on the untrained encoder | {untrained.mean():.4f} [{paired.low:.4f}, {paired.high:.4f}] | "
            "paired by seed (n 3) |") in result
    assert re.search(r"^\| kNN on raw pixels \| 0\.\d+ \[0\.\d+, 0\.\d+\] \| against one value \(n 3\) \| 0\.\d+ \| yes \|$",
                     result, re.M)
    assert "Training helped: on knn_acc it beat every baseline" in result
    # each seed's values beside its own untrained encoder, and their SD
    assert re.search(r"^\| 10001 \| 0\.\d{4} \| 0\.\d{4} \| 0\.2600 \| 0\.3600 \|$", result, re.M)
    assert f"| SD over the seeds | {values.std(ddof=1):.4f} | {values.std(ddof=1):.4f} | 0.0100 | 0.0100 |" in result
    # the linear probe beside its own baselines, measured the same way on the same queries
    probes = values + 0.02  # the fixture's probe of each final run
    probe_half = stats.t.ppf(0.975, 2) * probes.std(ddof=1) / math.sqrt(3)
    assert f"{probes.mean():.4f} [{probes.mean() - probe_half:.4f}, {probes.mean() + probe_half:.4f}] (n = 3)" in result
    assert "| linear probe on raw pixels | 0.3300 [" in result
    assert re.search(r"^\| linear probe on raw pixels \| 0\.\d+ \[0\.\d+, 0\.\d+\] \| against one value \(n 3\) \| "
                     r"0\.\d+ \| yes \|$", result, re.M)
    assert re.search(r"^\| linear probe on the untrained encoder, BatchNorm statistics calibrated \| -0\.\d+ .* \| "
                     r"paired by seed \(n 3\) \| .* \| no \|$", result, re.M)
    assert "Training did not clearly beat: linear probe on the untrained encoder, BatchNorm statistics calibrated (" in result
    assert _summary_value(md, "Final-stage runs") == "3 completed of 3"
    protocol = _summary_value(md, "kNN protocol")
    assert protocol.startswith("weighted kNN (Wu et al. 2018) on L2-normalised encoder features: k ")
    assert protocol.endswith("; queries 500 on val, 1000 on test") and "temperature " in protocol


def test_the_console_gets_the_final_result_and_its_verdicts_in_short(store, tmp_path):
    lines = []
    build_report(["sweep-a"], store["uri"], tmp_path / "a", echo=lines.append)
    values = np.array([h[-1]["knn_acc"] for h in store["finals"]])
    assert len(lines) == 3
    assert lines[0].startswith(f"result on the test split, 3 new seed(s): knn_acc {values.mean():.4f} [")
    assert f"linear probe {values.mean() + 0.02:.4f} [" in lines[0]
    assert re.search(r"knn_acc minus baselines: raw pixels \+0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] beaten;", lines[1])
    assert "BatchNorm statistics calibrated -0." in lines[2] and lines[2].endswith("NOT beaten")
    # a comparison sweep's result is its comparison, on kNN and on the probe, each paired by seed
    compared = []
    build_report(["grid-tau"], store["uri"], tmp_path / "tau", echo=compared.append)
    assert len(compared) == 2
    for line, what in zip(compared, ("knn_acc", "linear probe")):
        assert line.startswith(f"result on the val split, {what} by tau_base: ")
        assert re.search(r"(0\.99 − 1\.0|1\.0 − 0\.99) = -?0\.\d{4} \[.*\] over 3 common seeds, (not )?significant \(Holm p [=<] ",
                         line)
    quiet = []  # a sweep with no full-budget trial and no final stage: its report says what there is
    build_report(["empty-sweep"], store["uri"], tmp_path / "empty", echo=quiet.append)
    assert quiet == []


def test_policies_that_differ_in_the_policy_alone_are_compared_paired_and_corrected(store, tmp_path):
    build_report(["grid-policies"], store["uri"], tmp_path)
    md = (tmp_path / "report.md").read_text()
    comparisons = md[md.index("## Comparisons"):md.index("## Health")]
    ranks = re.findall(r"^\| (\d) \| (byol|simclr|crop_only) \| (\d) \|", comparisons, re.M)
    assert ranks == [("1", "byol", "4"), ("2", "simclr", "4"), ("3", "crop_only", "4")]
    assert re.search(r"^\| byol − simclr \| 4 \| .* \| yes \|$", comparisons, re.M)
    assert "Holm" in comparisons and "cannot be told from noise" in comparisons
    assert "Not compared" not in comparisons


def test_a_comparison_sweep_leads_with_its_comparison_and_names_a_fixed_target(store, tmp_path):
    """A sweep that samples nothing and compares grid arms on shared seeds (the shipped `policies` and
    `bootstrap` spaces) opens with that comparison, not with a 'best trial' to re-train."""
    build_report(["grid-tau"], store["uri"], tmp_path / "tau")
    md = (tmp_path / "tau" / "report.md").read_text()
    result = md.split("## Result")[1].split("## Summary")[0]
    comparisons = md.split("## Comparisons")[1].split("## Health")[0]
    assert "it compares tau_base at one configuration on the same seeds" in result
    for arm in ("0.99", "1.0"):  # each arm's mean and interval, best first
        assert re.search(rf"{re.escape(arm)}: 0\.\d{{4}} \[0\.\d{{4}}, 0\.\d{{4}}\] \(n = 3\)", result)
    assert re.search(r"(0\.99 − 1\.0|1\.0 − 0\.99) = -?0\.\d{4} \[.*\] over 3 common seeds, (not )?significant \(Holm p [=<] ", result)
    assert "Best search value:" not in result and "finalize" not in result
    assert "Baselines on the val split" in result
    assert "linear probe on raw pixels" not in result  # no probe baselines were measured on val here
    assert re.findall(r"^\| \d \| (0\.99|1\.0) \| 3 \|", comparisons, re.M)
    assert "fixed random target" in result and "fixed random target" in comparisons
    assert re.search(r"The same comparison on the linear probe .*: (0\.99|1\.0): 0\.\d{4} \[.*Paired by seed: "
                     r"(0\.99 − 1\.0|1\.0 − 0\.99) = ", result)

    # trials measured on the test split are compared with the test split's baselines, and say so
    build_report(["grid-tau-test"], store["uri"], tmp_path / "tau-test")
    md = (tmp_path / "tau-test" / "report.md").read_text()
    result = md.split("## Result")[1].split("## Summary")[0]
    assert "on the test split. Mean knn_acc" in result and "Baselines on the test split, on the same kNN bank and 1000 queries" in result
    assert "Baselines on the val split" not in result and "linear probe on raw pixels" in result
    assert _summary_value(md, "Search evaluated on") == "test split"

    build_report(["grid-tau-started"], store["uri"], tmp_path / "started")
    result = (tmp_path / "started" / "report.md").read_text().split("## Result")[1].split("## Summary")[0]
    assert "No trial ran the full budget" in result and "it compares" not in result

    build_report(["grid-policies"], store["uri"], tmp_path / "policies")
    md = (tmp_path / "policies" / "report.md").read_text()
    result = md.split("## Result")[1].split("## Summary")[0]
    assert "it compares policy at one configuration" in result and re.search(r"byol − simclr = .* significant", result)
    assert "fixed random target" not in md


def test_unknown_experiment_lists_existing(store, tmp_path):
    with pytest.raises(ReportError) as err:
        build_report(["nope"], store["uri"], tmp_path)
    message = str(err.value)
    for name in ("sweep-a", "sweep-b", "empty-sweep"):
        assert name in message
    assert "nope" in message and "\n" not in message
    with pytest.raises(ReportError, match="no sweep"):
        build_report(["not-a-sweep"], store["uri"], tmp_path)
    with pytest.raises(ReportError, match="No MLflow store"):
        build_report(["sweep-a"], f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "out")
    assert not (tmp_path / "missing.db").exists()


def test_no_finished_trial_still_reports(store, tmp_path):
    build_report(["empty-sweep"], store["uri"], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "No trial has finished (none completed" in md and "No trial ran the full budget: nothing to rank" in md
    assert "| Best search value (full budget) | none |" in md  # the sweep ended: not "none yet"
    assert "there is no result" in md
    for title in SECTIONS:
        assert f"## {title}" in md
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 2


def test_running_sweep_and_comparison(store, tmp_path):
    build_report(["sweep-a", "sweep-b"], store["uri"], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Sweep comparison: sweep-a vs sweep-b (still running)")
    assert "## Comparison" in md and "### Best of each" in md and "### Policies side by side" in md
    assert "| State | finished | still running |" in md
    assert re.search(r"^\| byol \| 1\. .* \| 1\. .* \|$", md, re.M)  # aligned on policy name
    assert re.search(r"^\| no_color \| – \| 2\. .* \|$", md, re.M)
    assert "Collapsed: 1 trial." in md and "| trial_00001 | completed | 9 | 0.1111 | 0.0040 | – |" in md
    for exp in ("sweep-a", "sweep-b"):
        assert f"## {exp}" in md
        for title in SECTIONS:
            assert f"### {title}" in md
        assert (tmp_path / f"{exp}_curves.png").exists()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert trials.groupby("experiment").size().to_dict() == {"sweep-a": 9, "sweep-b": 3}
    # the comparison (overlaid curves on shared axes) first, then each sweep at full width
    assert md.index("## Comparison") < md.index("## sweep-a") < md.index("## sweep-b")
    assert (tmp_path / "comparison_curves.png").exists()


CHROMIUM = Path("/usr/bin/chromium")
CHECK_SCRIPT = """<script>
var __errors = 0;
window.addEventListener('error', function () { __errors++; }, true);
(function () { var e = console.error; console.error = function () { __errors++; e.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken++;
  document.title = 'CHECK images=' + imgs.length + ' broken=' + broken + ' errors=' + __errors;
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_html_renders_in_headless_chromium(report_a, tmp_path):
    from PIL import Image

    _, html_path = report_a
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", html_path.as_uri())
    assert shot.exists(), "chromium wrote no screenshot"
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is blank"

    checked = tmp_path / "checked.html"
    checked.write_text(html_path.read_text().replace("<head>", "<head>" + CHECK_SCRIPT, 1))
    dom = _chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", checked.as_uri()).stdout
    m = re.search(r"<title>CHECK images=(\d+) broken=(\d+) errors=(\d+)</title>", dom)
    assert m, f"the check script did not run: {dom[:300]!r}"
    images, broken, errors = map(int, m.groups())
    assert images >= 3 and broken == 0 and errors == 0  # curves, history, health: no effect plots below 8 trials


OVERFLOW_SCRIPT = """<script>
window.addEventListener('load', function () {
  var over = 0, all = document.querySelectorAll('.tbl, pre, img, body');
  for (var i = 0; i < all.length; i++) if (all[i].scrollWidth > all[i].clientWidth + 1) over++;
  document.title = 'CHECK overflow=' + over + ' width=' + document.documentElement.scrollWidth;
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_a_two_sweep_comparison_clips_nothing_at_1280_px(store, tmp_path):
    html_path = build_report(["sweep-a", "sweep-b"], store["uri"], tmp_path / "both")
    checked = tmp_path / "checked.html"
    checked.write_text(html_path.read_text().replace("<head>", "<head>" + OVERFLOW_SCRIPT, 1))
    dom = _chromium(tmp_path, "--dump-dom", "--window-size=1280,2000", "--virtual-time-budget=5000",
                    checked.as_uri()).stdout
    m = re.search(r"<title>CHECK overflow=(\d+) width=(\d+)</title>", dom)
    assert m, f"the check script did not run: {dom[:300]!r}"
    assert int(m.group(1)) == 0 and int(m.group(2)) <= 1280


def test_a_completed_trial_without_a_finite_metric_is_named_not_silently_dropped(store, tmp_path):
    client = store["client"]
    exp = client.create_experiment("nan-sweep")
    parent = _parent(client, exp, "nan-sweep", "finished", SPACE_A, T0, T0 + 60_000)
    rng = np.random.default_rng(1)
    _trial(client, exp, parent, 0, dict(BASE), "completed", MAX_EPOCHS, SPACE_A, rng)
    run = client.create_run(exp, start_time=T0 + 5000, run_name="trial_00001", tags={
        "mlflow.parentRunId": parent, "byol_sweep.role": "trial", "byol_sweep.trial_id": "t001",
        "status": "completed", "policy": BASE["policy"], "seed": "1"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in dict(BASE, seed=1).items()],
                     metrics=[Metric("knn_acc", float("nan"), T0 + 6000 + e, e) for e in range(1, MAX_EPOCHS + 1)])
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 9000)
    build_report(["nan-sweep"], store["uri"], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "1 trial(s) ended without a finite knn_acc and are not ranked: trial_00001." in md
    assert "Top 1 of the 1 trials that ran the full budget" in md


def test_every_fake_sweep_reads_the_same_both_ways(store, monkeypatch):
    path = Path(store["uri"][len("sqlite:///"):])
    for experiment in ("sweep-a", "sweep-b", "empty-sweep", "grid-policies", "grid-tau"):
        direct, through_mlflow = read_both_ways(path, experiment, monkeypatch)
        assert_same(direct, through_mlflow)
        assert len(direct.trials) >= 2
    sweep_a = read_both_ways(path, "sweep-a", monkeypatch)[0]
    diverged = sweep_a.curves[sweep_a.curves["trial"] == "trial_00007"]
    assert math.isnan(diverged["loss"].iloc[-1])  # a NaN logged by MLflow (stored as 0, is_nan set) reads as NaN
    for experiment in ("not-a-sweep", "no-such-experiment"):
        errors = []
        for reader in (open_store(store["uri"]), MlflowReader(store["uri"])):
            with pytest.raises(ReportError) as err:
                load_sweep(reader, experiment)
            errors.append(str(err.value))
        assert errors[0] == errors[1]


def test_a_sqlite_report_never_imports_mlflow(store, tmp_path):
    code = ("import sys; from sweep.cli import main; "
            f"rc = main(['report', '--experiment', 'sweep-a', '--tracking-uri', {store['uri']!r}, '--out', {str(tmp_path)!r}]); "
            "print('mlflow imported' if 'mlflow' in sys.modules else 'no mlflow'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no mlflow" in done.stdout and (tmp_path / "report.html").exists()


def test_a_p_value_too_small_for_three_decimals_reads_below_0_001_not_zero():
    from reports.numbers import p_relation, p_value
    assert p_value(0.00043) == "< 0.001" and p_relation(0.00043) == "< 0.001"
    assert p_value(0.0891) == "0.089" and p_relation(0.0891) == "= 0.089"
    assert p_value(float("nan")) == "–"
