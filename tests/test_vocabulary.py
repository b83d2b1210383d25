"""The shared vocabulary: one definition of outcomes, better, objective and ASHA's rungs."""
from __future__ import annotations

import math
import subprocess
import sys

import vocabulary as v


def test_importable_without_torch_or_ray():
    code = "import sys, vocabulary; assert 'torch' not in sys.modules and 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_outcomes():
    assert v.outcome(8, 8) == v.COMPLETED
    assert v.outcome(4, 8) == v.STOPPED_EARLY
    assert v.outcome(4, 8, ended=False) == v.INTERRUPTED  # a driver that stopped is not a scheduler's decision
    assert v.outcome(4, 8, diverged=True) == v.DIVERGED
    assert v.outcome(0, 8, errored=True) == v.FAILED
    assert v.outcome(8, 8, diverged=True, errored=True) == v.FAILED


def test_better_and_best_index():
    assert v.better("max", 0.5, 0.4) and not v.better("max", 0.4, 0.5) and not v.better("max", 0.5, 0.5)
    assert v.better("min", 0.4, 0.5)
    assert v.better("max", 0.1, None) and not v.better("max", math.nan, 0.1) and v.better("min", 0.1, math.nan)
    assert v.best_index([0.2, math.nan, 0.9, 0.9], "max") == 2
    assert v.best_index([0.2, math.nan, 0.1], "min") == 2
    assert v.best_index([math.nan], "max") is None


def test_the_objective_is_the_last_epochs_value():
    assert v.objective([0.5, 0.9, 0.7]) == 0.7  # not the best epoch
    assert math.isnan(v.objective([0.5, math.nan]))  # an earlier epoch does not stand in
    assert math.isnan(v.objective([]))


def test_asha_rungs_stop_below_the_full_budget():
    assert v.asha_rungs(1, 3, 9) == [1, 3]
    assert v.asha_rungs(1, 2, 10) == [1, 2, 4, 8]
    assert v.asha_rungs(2, 2, 8) == [2, 4]
    assert v.asha_rungs(5, 2, 5) == []


def test_every_metric_the_trainer_reports_is_named():
    from dataclasses import fields

    from trainer.loop import EpochResult

    reported = {f.name for f in fields(EpochResult)} - {"epoch"}
    assert reported <= set(v.EPOCH_METRICS) | set(v.FINAL_METRICS)
    assert set(v.OBJECTIVES) <= set(v.EPOCH_METRICS)
