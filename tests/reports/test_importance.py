"""reports.importance on Sweep-like objects with a known dependence of the objective on the parameters."""
from __future__ import annotations

import math
import types

import numpy as np
import pandas as pd
import pytest

from reports.importance import MIN_RANK_TRIALS, Importances, param_importances

SPACE = {"base_lr": {"type": "loguniform", "low": 1e-3, "high": 1.0},
         "aug_strength": {"type": "uniform", "low": 0.0, "high": 1.0}}


def fake_sweep(n: int, effect: float, seed: int = 0, mode: str = "max", status="completed"):
    """n full-budget trials; the objective is effect * log10(base_lr) plus noise (sd 0.01), aug_strength
    does not matter. Only the Sweep fields param_importances reads."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-3, 0, n)
    aug = rng.uniform(0, 1, n)
    y = 0.5 + effect * np.log10(lr) + rng.normal(0, 0.01, n)
    df = pd.DataFrame({"trial": [f"t{i}" for i in range(n)], "status": status, "final_metric": y,
                       "base_lr": lr, "aug_strength": aug, "seed": np.arange(n) % 3})
    raw = {t: {"base_lr": str(a), "aug_strength": str(b)} for t, a, b in zip(df["trial"], lr, aug)}
    return types.SimpleNamespace(full_budget=df, swept=["base_lr", "aug_strength", "seed"], space=SPACE,
                                 raw_params=raw, mode=mode, metric="knn_acc")


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_strong_parameter_ranks_first_with_a_small_permutation_p():
    imp, note = param_importances(fake_sweep(20, effect=0.1), n_boot=20, n_perm=39)
    assert isinstance(imp, Importances)
    assert imp.top == "base_lr" and list(imp) == ["base_lr", "aug_strength"]  # seed is never a parameter
    assert imp["base_lr"] > 0.8 and math.isclose(sum(imp.values()), 1.0, abs_tol=1e-6)
    assert imp.top_p <= 0.05 and imp.n_perm == 39 and imp.n_trials == 20
    row = imp.table.iloc[0]
    assert 0 <= row["low"] <= row["median"] <= row["high"] <= 1 and row["low"] > imp.table.iloc[1]["high"]
    assert list(imp.table.columns) == ["parameter", "importance", "median", "low", "high"]
    assert "permutation p" in note and "stands out" in note and note == imp.note
    one, two = (param_importances(fake_sweep(20, effect=0.1), n_boot=3, n_perm=3)[0] for _ in range(2))
    assert one.table.equals(two.table) and one.top_p == two.top_p  # seeded


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_pure_noise_objective_has_no_small_permutation_p():
    imp, note = param_importances(fake_sweep(20, effect=0.0, seed=3, mode="min"), n_boot=10, n_perm=39)
    assert imp is not None and imp.top_p > 0.1
    assert "does not stand out" in note


def test_too_few_full_budget_trials_give_none_with_the_number():
    imp, note = param_importances(fake_sweep(MIN_RANK_TRIALS - 1, effect=0.1))
    assert imp is None
    assert "Too few full-budget trials to rank parameters" in note and str(MIN_RANK_TRIALS) in note
    assert f"has {MIN_RANK_TRIALS - 1}" in note


def test_equal_objectives_give_none():
    s = fake_sweep(12, effect=0.0)
    s.full_budget["final_metric"] = 0.5
    imp, note = param_importances(s, n_boot=2, n_perm=2)
    assert imp is None and "all equal" in note
