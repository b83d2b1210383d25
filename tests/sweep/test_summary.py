"""The lines a sweep prints when it ends."""
from __future__ import annotations

from sweep.space import load_space
from sweep.summary import SweepOutcome, print_summary


def outcome(best_config: dict) -> SweepOutcome:
    return SweepOutcome(name="s", path="byol-runs/s", tracking_uri="sqlite:////tmp/x/mlflow.db", experiment="s",
                        parent_run_id="p", best_config=best_config, best_metric=0.4321, best_trial="t_00003",
                        counts={"completed": 10})


def test_a_search_names_its_best_trial(capsys):
    spec = load_space("quick")
    print_summary(outcome({**spec.base, "base_lr": 5.0, "tau_base": 0.99, "aug_strength": 0.7}), spec, "1")
    out = capsys.readouterr().out
    assert "best knn_acc at the last epoch" in out and "0.4321 (trial t_00003)" in out and "base_lr=5.0" in out


def test_a_comparison_names_no_best_trial_but_its_arms(capsys):
    spec = load_space("bootstrap")  # tau_base x seed, nothing sampled, no final stage
    print_summary(outcome({**spec.base, "tau_base": 0.99, "seed": 3}), spec, "1")
    out = capsys.readouterr().out
    assert "t_00003" not in out and "best knn_acc" not in out
    assert "compares tau_base across its seeds" in out and "paired by seed" in out
    assert "report: byol-sweep report --experiment s" in out
