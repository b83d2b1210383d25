"""`byol-sweep plan` (sweep/plan.py) on every shipped space, the stand-in trainable
(sweep/tuner/standin.py) under real Ray Tune schedulers, and `run --simulate`'s resources."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from sweep.errors import SweepError
from sweep.plan import Span, format_plan, plan_space
from sweep.runner import SweepOptions, run_sweep
from sweep.space import load_space, shipped_spaces
from sweep.tuner.ray_setup import simulated_trial_resources, trial_resources
from sweep.tuner.standin import standin_trainable
from tests.conftest import write_space
from vocabulary import EPOCH_METRICS, HYPERPARAMETER_METRICS

SEARCHED = {"base_lr": {"loguniform": [0.05, 5.0]}, "tau_base": {"one_minus_loguniform": [0.9, 0.9999]},
            "aug_strength": {"uniform": [0.2, 1.5]}}


def ordered(span: Span) -> bool:
    return span.lowest <= span.expected <= span.highest


@pytest.mark.parametrize("name", sorted(shipped_spaces()))
def test_plan_of_every_shipped_space_is_consistent(name):
    spec = load_space(name)
    one, four = (plan_space(spec, 30.0, False, None, cpus) for cpus in (1, 4))
    assert one.trials == spec.total_trials and one.concurrency == 1 and four.concurrency == 4
    for span in (one.search_epochs, one.final_epochs, one.epochs, one.trial_hours, one.wall_hours, four.wall_hours):
        assert ordered(span) and span.lowest > 0 or span == Span(0, 0, 0)
    assert one.search_epochs.highest == spec.total_trials * spec.max_epochs
    assert one.trial_hours.expected == pytest.approx(one.epochs.expected * 30 / 3600)
    assert one.gpu_hours == Span(0, 0, 0)
    assert one.wall_hours.expected == pytest.approx(one.trial_hours.expected)  # one trial at a time
    assert four.wall_hours.lowest < one.wall_hours.lowest and four.wall_hours.highest < one.wall_hours.highest

    on_gpus = [plan_space(spec, 30.0, False, gpus, None) for gpus in (1, 8)]
    assert [p.gpus_per_trial for p in on_gpus] == [1, 1]
    assert on_gpus[0].gpu_hours == on_gpus[0].trial_hours
    assert on_gpus[1].wall_hours.expected < on_gpus[0].wall_hours.expected

    text = format_plan(four)
    assert f"{spec.total_trials} trial" in text and "4 trials at once (4 CPUs, 1 CPU per trial)" in text
    assert "one epoch: 30 s (given)" in text
    for line in ("search epochs", "trial-hours", "GPU-hours", "wall hours"):
        assert re.search(rf"^  {line}\s+[\d.,]+\s+[\d.,]+\s+[\d.,]+$", text, re.M), (line, text)
    for number in re.findall(r"\d[\d,]*(?:\.\d+)?", text.split("\n", 3)[3]):  # the table's numbers
        assert len(number.replace(",", "").replace(".", "").strip("0")) <= 4, (number, text)


def test_without_an_epoch_time_the_plan_gives_counts_and_says_what_the_hours_need():
    plan = plan_space(load_space("quick"), None, False, 8, None)
    assert plan.trial_hours is None and plan.wall_hours is None
    text = format_plan(plan)
    assert "search epochs" in text and "final-stage epochs" in text and "hours  " not in text
    assert "the hours need --epoch-seconds S" in text and "--measure" in text
    # quick: 6 trials, ASHA rungs 10, 20, 40 of 45 epochs; 3 final runs of 45 epochs
    assert plan.search_epochs == Span(5 * 10 + 45, 6 * 10 + 3 * 10 + 1.5 * 20 + 1 * 5, 6 * 45)
    assert (plan.final_runs, plan.final_epochs) == (3, Span(135, 135, 135))


def test_asha_and_hyperband_epochs_by_hand(tmp_path):
    asha = load_space(str(write_space(tmp_path, "asha", base={"epochs": 4}, search=SEARCHED, algorithm="random",
                                      num_samples=8, asha={"grace_period": 1, "reduction_factor": 2, "max_epochs": 4})))
    plan = plan_space(asha, 60.0, False, None, 2)
    # rungs 1 and 2 of 4. Lowest: 7 trials stop at 1, the first to reach each rung goes on to 4.
    # Expected: 8 train 1 epoch, 4 go on to 2, 2 go on to 4.
    assert plan.search_epochs == Span(7 * 1 + 4, 8 * 1 + 4 * 1 + 2 * 2, 8 * 4)
    assert plan.wall_hours == Span(11 / 60 / 2, 16 / 60 / 2, 32 / 60 / 2)
    # Ray's HyperBand, max 9, rf 3: brackets of 3 trials at 9 epochs; 5 at 3, 2 of them on to 9;
    # 9 at 1, 3 on to 3, 1 on to 9; then again from the first bracket
    for trials, epochs in ((17, 27 + 27 + 21), (20, 27 + 27 + 21 + 27), (4, 27 + 3 + 6)):
        hyperband = load_space(str(write_space(tmp_path, f"hb{trials}", base={"epochs": 9}, search=SEARCHED,
                                               algorithm="random", num_samples=trials,
                                               scheduler={"name": "hyperband", "reduction_factor": 3})))
        assert plan_space(hyperband, 60.0, False, None, 2).search_epochs == Span(epochs, epochs, epochs)


def test_a_final_stage_per_field_trains_each_groups_top_k(tmp_path):
    spec = load_space(str(write_space(tmp_path, "per", base={"epochs": 4}, grid={"policy": ["byol", "crop_only"]},
                                      search={"base_lr": {"loguniform": [0.1, 1.0]}}, algorithm="random",
                                      num_samples=3, asha=False, final={"top_k": 2, "seeds": 2, "per": "policy"})))
    plan = plan_space(spec, 36.0, False, None, 3)
    assert plan.search_epochs == Span(24, 24, 24)  # 6 trials of 4 epochs
    assert plan.final_runs == 8 and plan.final_epochs == Span(32, 32, 32)  # 2 policies x top 2 x 2 seeds
    assert plan.wall_hours.expected == pytest.approx((24 / 3 + 3 * 4) / 100)  # then 3 waves of 3, 3, 2 runs
    assert "final stage: 8 runs of the full budget (the top 2 per policy x 2 seeds)" in format_plan(plan)


@pytest.mark.parametrize("args, message", [
    ((30.0, True, None, None), "give --epoch-seconds or --measure, not both"),
    ((-1.0, False, None, None), "--epoch-seconds is -1; allowed: a number of seconds above 0"),
    ((float("nan"), False, None, None), "--epoch-seconds is nan; allowed: a number of seconds above 0"),
    ((30.0, False, -2, None), "--gpus is -2; allowed: a whole number from 0"),
    ((30.0, False, None, 0), "--cpus is 0; allowed: a whole number from 1"),
])
def test_a_mistake_is_one_sentence(args, message):
    with pytest.raises(SweepError) as err:
        plan_space(load_space("quick"), *args)
    assert str(err.value) == message


@pytest.mark.slow  # trains real steps for seconds
def test_measure_times_real_steps_of_the_base_configuration_here():
    plan = plan_space(load_space("quick"), None, True, None, 2)
    assert 0 < plan.epoch_seconds < 3600
    assert plan.measured_on.startswith("measured on this machine (cpu): 4 steps of the base configuration")
    assert "x 78 steps per epoch (batch 64)" in plan.measured_on  # 5,000 images of cifar10_mini
    assert plan.trial_hours.expected == pytest.approx(260 * plan.epoch_seconds / 3600)
    assert "one epoch: " in format_plan(plan) and "measured on this machine" in format_plan(plan)


# -- the stand-in trainable under real Ray Tune --------------------------------------------------
def run_standin(tmp_path: Path, spec, trials: int) -> list:
    decisions: dict[str, list[dict]] = {}
    tuner = tune.Tuner(
        tune.with_parameters(standin_trainable, spec=spec, epoch_seconds=0.02), param_space=spec.param_space(),
        tune_config=tune.TuneConfig(metric="knn_acc", mode="max", num_samples=trials,
                                    scheduler=spec.scheduler.build(spec, decisions),
                                    search_alg=BasicVariantGenerator(random_state=0)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=spec.name, verbose=0))
    results = list(tuner.fit())
    assert len(results) == trials and not [r.error for r in results if r.error]
    return results


@pytest.mark.slow  # starts Ray
@pytest.mark.usefixtures("ray_local")
def test_the_standin_reports_its_curve_and_asha_stops_trials_at_rungs(tmp_path):
    spec = load_space(str(write_space(tmp_path, "standin-asha", base={"epochs": 4}, search=SEARCHED, algorithm="random",
                                      num_samples=8, asha={"grace_period": 1, "reduction_factor": 2, "max_epochs": 4})))
    results = run_standin(tmp_path, spec, 8)
    lasts = []
    for result in results:
        history = result.metrics_dataframe
        epochs = history["epoch"].tolist()
        assert epochs == list(range(1, epochs[-1] + 1))
        lasts.append(epochs[-1])
        assert set(EPOCH_METRICS) - set(HYPERPARAMETER_METRICS) <= set(history.columns)
        assert history["knn_acc"].between(0, 1).all() and history["epoch_s"].gt(0).all()
        assert json.loads((Path(result.checkpoint.path) / "standin.json").read_text()) == {"epoch": epochs[-1]}
        if epochs[-1] == 4:
            assert history["knn_acc"].iloc[-1] > history["knn_acc"].iloc[0]
            assert "linear_probe_acc" in result.metrics
    assert set(lasts) <= {1, 2, 4} and min(lasts) < 4 and 4 in lasts  # stopped at rungs 1 and 2, or the full budget
    planned = plan_space(spec, 1.0, False, None, 2).search_epochs
    assert planned.lowest <= sum(lasts) <= planned.highest


@pytest.mark.slow  # starts Ray
@pytest.mark.usefixtures("ray_local")
def test_hyperband_pauses_and_resumes_standin_trials_from_their_checkpoints_as_planned(tmp_path):
    spec = load_space(str(write_space(tmp_path, "standin-hb", base={"epochs": 9}, search=SEARCHED, algorithm="random",
                                      num_samples=4, scheduler={"name": "hyperband", "reduction_factor": 3})))
    results = run_standin(tmp_path, spec, 4)
    epochs = [r.metrics_dataframe["epoch"].tolist() for r in results]
    for reported in epochs:  # a paused trial continues from its checkpoint's epoch, not from the start
        assert reported == list(range(1, reported[-1] + 1))
    assert sum(len(reported) for reported in epochs) == plan_space(spec, 1.0, False, None, 2).search_epochs.expected


# -- what a trial reserves: a real sweep's, and a simulation's -----------------------------------
@pytest.mark.parametrize("cluster, options, expected", [
    ({"CPU": 2}, {}, ({"cpu": 1.0, "gpu": 0.0}, 2)),
    ({"CPU": 2}, {"max_concurrent": 1}, ({"cpu": 1.0, "gpu": 0.0}, 1)),
    ({"CPU": 2}, {"max_concurrent": 32}, ({"cpu": 1.0, "gpu": 0.0}, 2)),  # at most what fits
    ({"CPU": 16, "GPU": 4}, {}, ({"cpu": 4.0, "gpu": 1.0}, 4)),
    ({"CPU": 16, "GPU": 4}, {"gpus_per_trial": 0.5, "cpus_per_trial": 2}, ({"cpu": 2, "gpu": 0.5}, 8)),
    ({"CPU": 16, "GPU": 4}, {"gpus_per_trial": 0}, ({"cpu": 1.0, "gpu": 0}, 16)),
])
def test_a_real_trial_reserves_what_it_did_before(monkeypatch, cluster, options, expected):
    monkeypatch.setattr("ray.cluster_resources", lambda: cluster)
    assert trial_resources(SweepOptions(**options)) == expected


@pytest.mark.parametrize("cluster, options, expected", [
    ({"CPU": 2}, {}, ({"cpu": 1.0, "gpu": 0.0}, 2)),  # by default what the real sweep would run here
    ({"CPU": 2}, {"max_concurrent": 32}, ({"cpu": 0.0625, "gpu": 0.0}, 32)),
    ({"CPU": 2}, {"max_concurrent": 3}, ({"cpu": 0.6666, "gpu": 0.0}, 3)),  # rounded down to Ray's 1/10,000
    ({"CPU": 2}, {"max_concurrent": 1000, "gpus_per_trial": 1, "cpus_per_trial": 8}, ({"cpu": 0.002, "gpu": 0.0}, 1000)),
    ({"CPU": 16, "GPU": 4}, {}, ({"cpu": 1.0, "gpu": 0.0}, 4)),  # a GPU machine's 4 trials, on no GPU
])
def test_a_simulated_trial_reserves_a_share_of_a_cpu_and_no_gpu(monkeypatch, cluster, options, expected):
    monkeypatch.setattr("ray.cluster_resources", lambda: cluster)
    resources, concurrency = simulated_trial_resources(SweepOptions(**options))
    assert (resources, concurrency) == expected
    assert resources["cpu"] * concurrency <= cluster["CPU"]


def test_a_simulation_that_cannot_fit_or_cannot_guess_its_concurrency_says_so(monkeypatch):
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 2})
    with pytest.raises(SweepError) as err:
        simulated_trial_resources(SweepOptions(gpus_per_trial=1))
    assert str(err.value) == ("--gpus-per-trial 1 is more than the cluster's 0 GPUs; to simulate that sweep here, "
                              "give --max-concurrent N, the trials the cluster you plan for runs at once")
    with pytest.raises(SweepError) as err:
        simulated_trial_resources(SweepOptions(max_concurrent=20_001))
    assert str(err.value) == ("--max-concurrent 20,001 is more trials than a simulation fits on this cluster's 2 CPUs; "
                              "allowed: up to 20,000")


@pytest.mark.slow  # starts Ray, runs a sweep
@pytest.mark.usefixtures("ray_local")
def test_a_gpu_sweep_is_simulated_here_on_a_share_of_a_cpu_all_trials_at_once_in_reused_workers(tmp_path, capsys):
    """A space that asks for CUDA and a GPU per trial, simulated on this CPU-only Ray of 2 CPUs: 6 trials
    at once on a third of a CPU each, and 9 trials in at most 6 worker processes, each curve whole."""
    space = write_space(tmp_path, "simgpu", base={"epochs": 30, "device": "cuda"}, search=SEARCHED,
                        algorithm="random", num_samples=9, asha=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_sweep(str(space), SweepOptions(name="simgpu", storage=str(tmp_path / "runs"), tracking_uri=uri,
                                       gpus_per_trial=1, max_concurrent=6, simulate_epoch_s=0.5))
    out = capsys.readouterr().out
    assert "9 trials of space simgpu" in out and "6 at a time with 0.3333 CPU each" in out
    assert "reserving 0.3333 CPU and no GPU so that 6 run at once here" in out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("simgpu").experiment_id])
    parent = next(r for r in runs if r.data.tags["byol_sweep.role"] == "sweep")
    assert {k: parent.data.params[k] for k in ("cpus_per_trial", "gpus_per_trial", "max_concurrent", "simulated_epoch_s")
            } == {"cpus_per_trial": "0.3333", "gpus_per_trial": "0.0", "max_concurrent": "6", "simulated_epoch_s": "0.5"}
    trials = [r for r in runs if r.data.tags["byol_sweep.role"] == "trial"]
    assert len(trials) == 9 and {r.data.tags["status"] for r in trials} == {"completed"}
    for run in trials:  # a reused worker starts each trial's curve at its first epoch
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")) == list(range(1, 31))
    edges = sorted([(r.info.start_time, 1) for r in trials] + [(r.info.end_time, -1) for r in trials])
    at_once = [sum(step for _, step in edges[:i + 1]) for i in range(len(edges))]
    assert max(at_once) == 6  # 3 times what the 2 CPUs hold at 1 CPU a trial; never more than asked
    workers = {json.loads((Path(r.data.tags["byol_sweep.trial_dir"]) / "result.json").read_text().splitlines()[0])["pid"]
               for r in trials}
    assert len(workers) <= 6  # Tune reused its actors: 9 trials, at most 6 processes
    trial_dir = Path(trials[0].data.tags["byol_sweep.trial_dir"])
    assert (trial_dir / "progress.csv").exists()  # Ray's own results files, as before
    assert not list(trial_dir.glob("events.out.tfevents*"))  # but no TensorBoard files: MLflow holds the curves

