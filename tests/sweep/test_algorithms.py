"""The search algorithm and scheduler: TPE's settings and ASHA's decisions as recorded."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sweep.space import parse_space
from sweep.tuner.algorithms import RecordingASHA
from sweep.tuner.parts import build_searcher, startup_trials


def _spec(**extra):
    data = {"name": "s", "base": {"epochs": 8}, "search": {"base_lr": {"loguniform": [0.1, 1.0]}}, "num_samples": 12,
            "asha": {"grace_period": 1, "reduction_factor": 2, "max_epochs": 8}, **extra}
    return parse_space(data, "s.yaml")


def test_tpe_is_multivariate_with_a_constant_liar():
    searcher = build_searcher(_spec(), max_concurrent=2)
    sampler = searcher._sampler
    assert sampler._multivariate and sampler._constant_liar
    assert sampler._n_startup_trials == startup_trials(_spec()) == 4


@pytest.mark.parametrize("mode", ["max", "min"])
def test_asha_decisions_are_recorded_with_the_cutoff_ray_applied(mode):
    decisions = {}
    asha = RecordingASHA(time_attr="epoch", metric="knn_acc", mode=mode, max_t=8, grace_period=1,
                         reduction_factor=2, decisions=decisions)
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
    for t in trials:
        asha.on_trial_add(None, t)
    sign = 1 if mode == "max" else -1
    values = [0.5, 0.7, 0.4, 0.65]
    actions = [asha.on_trial_result(None, t, {"epoch": 1, "knn_acc": sign * x}) for t, x in zip(trials, values)]
    first = decisions["t0"][0]
    assert first == {"rung": 1, "value": sign * 0.5, "cutoff": None, "decision": "continue"}
    # t2 faced the median of the two values recorded before it (Ray's (1 - 1/rf) quantile) and stopped
    t2 = decisions["t2"][0]
    assert t2["cutoff"] == pytest.approx(sign * 0.6) and t2["decision"] == "stop" and actions[2] == asha.STOP
    t3 = decisions["t3"][0]
    assert t3["cutoff"] == pytest.approx(sign * 0.5) and t3["decision"] == "continue"
    # epoch 2 is the next rung; epoch 8 is the full budget, not a rung
    asha.on_trial_result(None, trials[1], {"epoch": 2, "knn_acc": sign * 0.8})
    assert [d["rung"] for d in decisions["t1"]] == [1, 2]
    asha.on_trial_result(None, trials[1], {"epoch": 8, "knn_acc": sign * 0.9})
    assert len(decisions["t1"]) == 2


# -- the registries: each scheduler and searcher is one entry ------------------------------------

from sweep.space.schedulers import SCHEDULERS  # noqa: E402
from sweep.space.searchers import SEARCHERS  # noqa: E402
from sweep.tuner.algorithms import Clip, RecordingPBT  # noqa: E402
from sweep.tuner.parts import tune_parts  # noqa: E402

PBT_SEARCH = {"base_lr": {"loguniform": [0.1, 1.0]}, "tau_base": {"one_minus_loguniform": [0.9, 0.999]},
              "aug_strength": {"uniform": [0.5, 1.5]}}


def _space(**data):
    return parse_space({"name": "s", "base": {"epochs": 8}, "search": {"base_lr": {"loguniform": [0.1, 1.0]}},
                        **data}, "s.yaml")


def test_the_registries_ship_these_entries():
    assert list(SCHEDULERS) == ["fifo", "asha", "hyperband", "pbt"]
    assert list(SEARCHERS) == ["optuna", "random", "grid"]


@pytest.mark.parametrize("data, scheduler", [
    ({}, "asha"), ({"asha": False}, "fifo"), ({"asha": {"grace_period": 2}}, "asha"),
    ({"scheduler": "fifo"}, "fifo"), ({"scheduler": {"name": "asha", "reduction_factor": 3}}, "asha"),
    ({"scheduler": {"name": "hyperband"}}, "hyperband"),
])
def test_old_and_general_scheduler_forms(data, scheduler):
    spec = _space(**data)
    assert spec.scheduler.name == scheduler
    assert (spec.asha is not None) == (scheduler == "asha")
    params = spec.tracking_params()
    assert params["scheduler"] == scheduler and params["search"] == "optuna"
    if scheduler == "asha":  # the report reads asha.*; scheduler.* records the same settings
        assert params["asha.max_epochs"] == params["scheduler.max_epochs"] == 8


def test_hyperband_has_several_brackets_and_checkpoints_at_each_milestone():
    from ray.tune.schedulers import HyperBandScheduler

    from sweep.tuner.trainable import checkpoint_epochs

    spec = _space(scheduler={"name": "hyperband", "reduction_factor": 3}, num_samples=9)
    hb = spec.scheduler
    assert hb.brackets() == 3 and hb.bracket_sizes() == [3, 5, 9]
    ray_hb = hb.build(spec, {})
    assert isinstance(ray_hb, HyperBandScheduler) and ray_hb._s_max_1 == hb.brackets()
    assert [ray_hb._get_r0(s) for s in range(3)] == [8, 2, 0] and hb.milestones() == {2, 6}
    assert {2, 6, 8} <= checkpoint_epochs(spec, every=100)
    parts = tune_parts(spec, concurrency=2)
    # a bracket is judged when all its trials wait paused: the limit lets the largest fill
    assert parts.max_concurrent_trials == 9 and "largest bracket" in parts.note


def test_concurrency_goes_where_each_searcher_takes_it():
    optuna_parts = tune_parts(_space(), concurrency=2)
    assert optuna_parts.max_concurrent_trials == 2  # Tune wraps the Optuna searcher in its limiter
    random_parts = tune_parts(_space(algorithm="random"), concurrency=2)
    assert random_parts.max_concurrent_trials is None and random_parts.search_alg.max_concurrent == 2
    grid_parts = tune_parts(_space(algorithm={"name": "grid"}, search=None, grid={"seed": [0, 1]}), concurrency=3)
    assert grid_parts.search_alg.max_concurrent == 3 and grid_parts.num_to_keep == 2


def test_optuna_settings_in_the_general_form():
    spec = _space(algorithm={"name": "optuna", "n_startup_trials": 3}, num_samples=12)
    assert spec.tracking_params()["optuna.n_startup_trials"] == 3
    assert build_searcher(spec, 2)._sampler._n_startup_trials == 3


def _pbt(**scheduler):
    return parse_space({"name": "p", "base": {"epochs": 6}, "search": PBT_SEARCH, "num_samples": 4,
                        "scheduler": {"name": "pbt", **scheduler}}, "p.yaml")


def test_pbt_defaults_rules_and_ray_object():
    from ray.tune.schedulers import PopulationBasedTraining

    from sweep.tuner.trainable import checkpoint_epochs

    spec = _pbt(perturbation_interval=2)
    assert spec.algorithm == "random" and spec.final is None  # a PBT result has no one configuration to re-train
    assert spec.scheduler.perturbation_epochs(6) == {2, 4}
    assert checkpoint_epochs(spec, every=100) == {2, 4, 6}
    params = spec.tracking_params()
    assert params["scheduler"] == "pbt" and params["scheduler.perturbation_interval"] == 2
    parts = tune_parts(spec, concurrency=2)
    # the whole population must be live: no limit anywhere; members take turns on 2 slots
    assert parts.max_concurrent_trials is None and parts.search_alg.max_concurrent == 0
    assert "population of 4 on 2 slot(s)" in parts.note and parts.num_to_keep == 4
    pbt = parts.scheduler
    assert isinstance(pbt, PopulationBasedTraining) and pbt._synch
    assert set(pbt._hyperparam_mutations) == {"base_lr", "one_minus_tau_base", "aug_strength"}
    assert tune_parts(spec, concurrency=4).note is None


@pytest.mark.parametrize("data, key, allowed", [
    ({"search": {**PBT_SEARCH, "weight_decay": {"uniform": [0.0, 0.1]}}}, "search.weight_decay",
     "allowed: base_lr, tau_base, aug_strength"),
    ({"search": {"aug_strength": {"choice": [0.5, 1.0]}}}, "search.aug_strength", "continuous"),
    ({"grid": {"seed": [0, 1]}}, "grid", "search only"),
    ({"algorithm": "optuna"}, "algorithm", "cannot drive pbt; allowed: random"),
    ({"final": {"top_k": 1}}, "final", "allowed with scheduler pbt: false"),
    ({"num_samples": 1}, "num_samples", "at least 2"),
    ({"scheduler": {"name": "pbt", "perturbation_interval": 2, "burn_in_period": 3}}, "scheduler.burn_in_period",
     "multiple of perturbation_interval"),
    ({"scheduler": {"name": "pbt", "perturbation_interval": 6}}, "scheduler.perturbation_interval", "below the budget"),
    ({"scheduler": {"name": "pbt", "quantile_fraction": 0.75}}, "scheduler.quantile_fraction", "(0, 0.5]"),
    ({"scheduler": {"name": "pbt", "interval": 1}}, "scheduler.interval", "allowed: perturbation_interval"),
    ({"scheduler": {"name": "bohb"}}, "scheduler.name", "allowed: fifo, asha, hyperband, pbt"),
    ({"scheduler": 3}, "scheduler", "allowed names: fifo, asha"),
    ({"scheduler": "fifo", "asha": False}, "asha", "give the scheduler once"),
    ({"scheduler": {"name": "hyperband", "reduction_factor": 9}, "base": {"epochs": 2}}, "scheduler.reduction_factor",
     "single bracket"),
    ({"algorithm": {"name": "random", "seed": 1}, "scheduler": "fifo"}, "algorithm.seed",
     "allowed: none (it takes no settings)"),
])
def test_each_entry_refuses_what_it_cannot_do_naming_the_key(data, key, allowed):
    from sweep.space import SpaceError

    raw = {"name": "p", "base": {"epochs": 6}, "search": PBT_SEARCH, "num_samples": 4,
           "scheduler": {"name": "pbt"}, **data}
    with pytest.raises(SpaceError) as err:
        parse_space({k: v for k, v in raw.items() if v is not None}, "p.yaml")
    assert str(err.value).startswith(f"p.yaml: {key}: "), str(err.value)
    assert allowed in str(err.value), str(err.value)


def test_pbt_records_each_exploit_and_keeps_values_in_range():
    spec = _pbt(perturbation_interval=1, quantile_fraction=0.5, resample_probability=0.0,
                perturbation_factors=[2.0])
    decisions = {}
    pbt = spec.scheduler.build(spec, decisions)
    assert isinstance(pbt, RecordingPBT) and isinstance(pbt._custom_explore_fn, Clip)
    clip = Clip(spec.scheduler.bounds(spec))
    out = clip({"base_lr": 0.8 * 2, "one_minus_tau_base": 0.05 * 2, "aug_strength": 0.6 * 2})
    assert out == {"base_lr": 1.0, "one_minus_tau_base": pytest.approx(0.1), "aug_strength": pytest.approx(1.2)}
    assert pbt._fields({"base_lr": 0.5, "one_minus_tau_base": 0.01, "aug_strength": 1.0}) == {
        "base_lr": 0.5, "tau_base": pytest.approx(0.99), "aug_strength": 1.0}


@pytest.mark.slow
def test_a_real_hyperband_sweep_runs_its_brackets(ray_local, tmp_path, migrated_store):
    """Ray's HyperBand on function trials, end to end: trials wait paused until their bracket is judged
    (4 trials fill brackets of 3 and 1 here, so none is stopped), every epoch is logged once, a trial's
    status follows its epochs, and the parent records the scheduler."""
    from mlflow.tracking import MlflowClient

    from sweep.runner import SweepOptions, run_sweep
    from tests.conftest import new_store, write_space

    space = write_space(tmp_path, "hb", base={"epochs": 4, "linear_probe": False},
                        search={"base_lr": {"loguniform": [0.05, 2.0]}}, algorithm="random", num_samples=4,
                        scheduler={"name": "hyperband", "reduction_factor": 2})
    uri = new_store(migrated_store, tmp_path)
    outcome = run_sweep(str(space), SweepOptions(name="hb", storage=str(tmp_path / "runs"), tracking_uri=uri,
                                                 max_failures=0))
    assert not outcome.interrupted and set(outcome.counts) <= {"completed", "stopped_early"}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("hb")
    parent = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'sweep'")[0]
    assert parent.data.params["scheduler"] == "hyperband" and parent.data.params["scheduler.reduction_factor"] == "2"
    runs = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'")
    assert len(runs) == 4
    for run in runs:
        epochs = sorted(m.step for m in client.get_metric_history(run.info.run_id, "knn_acc"))
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
        assert run.data.tags["status"] == ("completed" if epochs[-1] == 4 else "stopped_early")


def test_optunas_study_is_written_to_its_file_at_checkpoints_not_at_each_epoch(tmp_path):
    """The study lives in memory while trials report; each of Tune's checkpoints of the searcher adds
    the trials finished since the last to <state>/optuna.db, once each, also after a restore."""
    import optuna

    spec = _spec()
    searcher = build_searcher(spec, max_concurrent=2, state_dir=tmp_path)
    searcher.set_search_properties("knn_acc", "max", spec.param_space())
    study_file = tmp_path / "optuna.db"
    for i in range(3):
        searcher.suggest(f"t{i}")
        for epoch in (1, 2):
            searcher.on_trial_result(f"t{i}", {"epoch": epoch, "knn_acc": 0.1 * i + 0.01 * epoch})
    assert not study_file.exists()  # three trials, six epochs: not one SQLite write
    searcher.on_trial_complete("t0", {"epoch": 8, "knn_acc": 0.5})
    searcher.on_trial_complete("t1", {"epoch": 2, "knn_acc": 0.3})
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.save(str(tmp_path / "searcher.pkl"))  # nothing new: nothing added twice
    states = [t.state for t in optuna.load_study(study_name="s", storage=f"sqlite:///{study_file}").trials]
    assert sorted(s.name for s in states) == ["COMPLETE", "PRUNED"]

    restored = build_searcher(spec, max_concurrent=2, state_dir=tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))  # a resumed driver: what the last checkpoint held
    restored._in_file = set()  # ...written by a driver that died before its next checkpoint of the searcher
    restored.on_trial_complete("t2", {"epoch": 8, "knn_acc": 0.6})
    restored.save(str(tmp_path / "searcher.pkl"))
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{study_file}").trials
    assert sorted(t.user_attrs["byol_sweep.number"] for t in trials) == [0, 1, 2]
    assert max(t.value or 0 for t in trials) == 0.6


def test_an_older_sweeps_study_kept_in_its_file_is_not_copied_into_itself(tmp_path):
    """A sweep started before the study moved to memory resumes with its study in optuna.db itself."""
    import optuna

    from sweep.tuner.algorithms import PruningOptunaSearch

    spec = _spec()
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher = PruningOptunaSearch(storage=storage, study_name="s", max_epochs=8, study_file=tmp_path / "optuna.db")
    searcher.set_search_properties("knn_acc", "max", spec.param_space())
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"epoch": 8, "knn_acc": 0.5})
    searcher.save(str(tmp_path / "searcher.pkl"))
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 1
