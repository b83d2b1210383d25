"""The search algorithm and scheduler: TPE's settings and ASHA's decisions as recorded."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sweep.search import RecordingASHA, build_searcher, startup_trials
from sweep.space import parse_space


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
