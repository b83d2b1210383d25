"""reports.stats on constructed data with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports.stats import (
    NO_INTERVAL,
    asha_cutoff,
    asha_rungs,
    bootstrap_ci,
    bootstrap_diff_ci,
    policy_table,
    rank_trials,
    rung_table,
)


def test_bootstrap_diff_interval_contains_the_true_difference():
    rng = np.random.default_rng(1)
    a = 0.70 + rng.normal(0, 0.02, 40)
    b = 0.60 + rng.normal(0, 0.02, 40)
    d = bootstrap_diff_ci(a, b, n_boot=4000, seed=0)
    assert d.low < 0.10 < d.high
    assert d.low < d.estimate < d.high and d.estimate == pytest.approx(a.mean() - b.mean())
    assert d.excludes_zero is True
    same = bootstrap_diff_ci(a, a + rng.normal(0, 0.02, 40), n_boot=4000, seed=0)
    assert same.low < 0 < same.high and same.excludes_zero is False


def test_bootstrap_ci_contains_the_mean_and_is_reproducible():
    x = [0.5, 0.52, 0.55, 0.61, 0.58]
    ci = bootstrap_ci(x, n_boot=2000, seed=3)
    assert ci.low <= np.mean(x) <= ci.high and ci.n == 5
    assert ci == bootstrap_ci(x, n_boot=2000, seed=3)
    assert bootstrap_ci([0.4, 0.4, 0.4]).low == pytest.approx(0.4)  # no spread, no width
    assert bootstrap_ci([0.1, float("nan"), 0.3]).n == 2  # NaNs (diverged) do not count


def test_one_seed_gives_no_interval():
    one = bootstrap_ci([0.5])
    assert not one.available and one.estimate == 0.5 and NO_INTERVAL in one.text()
    assert not bootstrap_diff_ci([0.5], [0.4, 0.45]).available
    table = policy_table(pd.DataFrame({"policy": ["a", "b"], "seed": [0, 0], "best_metric": [0.6, 0.5]}))
    assert all(NO_INTERVAL in t for t in table["interval"])
    assert NO_INTERVAL in table.loc[1, "diff_interval"] and table.loc[1, "excludes_zero"] is None
    assert table.loc[1, "diff"] == pytest.approx(0.1)


def test_policy_ranking_order_and_differences():
    df = pd.DataFrame({
        "policy": ["simclr"] * 3 + ["byol"] * 3 + ["crop_only"] * 3,
        "seed": [0, 1, 2] * 3,
        "best_metric": [0.70, 0.71, 0.69, 0.80, 0.82, 0.81, 0.40, 0.45, 0.42],
    })
    table = policy_table(df, n_boot=2000)
    assert list(table["policy"]) == ["byol", "simclr", "crop_only"]
    assert list(table["rank"]) == [1, 2, 3] and list(table["n"]) == [3, 3, 3] and list(table["seeds"]) == [3, 3, 3]
    assert table.loc[0, "mean"] == pytest.approx(0.81)
    assert math.isnan(table.loc[0, "diff"])  # the best is not compared with itself
    assert table.loc[1, "diff"] == pytest.approx(0.11) and table.loc[1, "excludes_zero"]
    assert table.loc[2, "diff"] == pytest.approx(0.81 - 0.42333333)
    low_first = policy_table(df.assign(best_metric=-df["best_metric"]), mode="min", n_boot=500)
    assert list(low_first["policy"]) == ["byol", "simclr", "crop_only"]  # smallest (most negative) first
    ranked = rank_trials(df.assign(trial=range(9)), mode="max")
    assert list(ranked["trial"][:2]) == [4, 5]


def test_asha_rungs():
    assert asha_rungs(1, 3, 9) == [1, 3, 9]
    assert asha_rungs(1, 2, 10) == [1, 2, 4, 8, 10]
    assert asha_rungs(2, 3, 20) == [2, 6, 18, 20]
    assert asha_rungs(5, 2, 5) == [5]


def test_rung_counts_and_cutoffs():
    # nine trials reach epoch 1 with 0.1 .. 0.9; three reach epoch 3; one reaches 9
    rows = [{"trial": f"t{i}", "epoch": 1, "knn_acc": (i + 1) / 10} for i in range(9)]
    rows += [{"trial": t, "epoch": e, "knn_acc": v} for t, v in (("t6", 0.5), ("t7", 0.7), ("t8", 0.8))
             for e in (2, 3)]
    rows += [{"trial": "t8", "epoch": e, "knn_acc": 0.85} for e in range(4, 10)]
    curves = pd.DataFrame(rows)
    table = rung_table(curves, "knn_acc", grace=1, rf=3, max_t=9, mode="max")
    assert list(table["rung"]) == [1, 3, 9]
    assert list(table["reached"]) == [9, 3, 1]
    assert list(table["final"]) == [False, False, True]
    # (1 - 1/3) quantile, linear interpolation: position 8 * 2/3 = 5.33 in 0.1..0.9 -> 0.6 + 0.0333
    assert table.loc[0, "cutoff"] == pytest.approx(0.6 + 0.1 / 3)
    # position 2 * 2/3 = 1.33 in (0.5, 0.7, 0.8) -> 0.7 + 0.0333
    assert table.loc[1, "cutoff"] == pytest.approx(0.7 + 0.1 / 3)
    assert table.loc[2, "cutoff"] == pytest.approx(0.85)
    low = rung_table(curves, "knn_acc", grace=1, rf=3, max_t=9, mode="min")
    # 1/3 quantile: position 8/3 = 2.67 -> 0.3 + 0.0667
    assert low.loc[0, "cutoff"] == pytest.approx(0.3 + 0.2 / 3)
    empty = rung_table(curves[curves["epoch"] < 3], "knn_acc", 1, 3, 9)
    assert list(empty["reached"]) == [9, 0, 0] and math.isnan(empty.loc[1, "cutoff"])
    assert asha_cutoff([0.2, float("nan"), 0.4], rf=2) == pytest.approx(0.3)
