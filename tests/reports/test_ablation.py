"""An ablation's contributions: each variant against the full policy, paired by seed, as one
Holm-corrected family; checked against scipy and by simulation (false positives, coverage)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.ablation import contributions

OPS = ["crop", "flip", "color_jitter", "grayscale", "solarize"]


def trials(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"policy": arm, "seed": seed, "final_metric": v}
                         for arm, vs in values.items() for seed, v in enumerate(vs)])


def test_one_contribution_is_scipys_paired_t_test_and_positive_when_the_op_helps():
    full = [0.40, 0.41, 0.39, 0.42, 0.40]
    without = [0.30, 0.33, 0.31, 0.30, 0.32]
    table = contributions(trials({"p": full, "p-no_crop": without}), "p")
    row = table.iloc[0]
    assert row["op"] == "crop" and row["n"] == 5
    assert row["diff"] == pytest.approx(np.mean(np.subtract(full, without)))
    assert row["p"] == pytest.approx(stats.ttest_rel(full, without).pvalue)
    assert row["significant"] and row["p_holm"] == pytest.approx(row["p"])  # a family of one
    lower = contributions(trials({"p": full, "p-no_crop": without}), "p", mode="min")
    assert lower.iloc[0]["diff"] == pytest.approx(-row["diff"])  # for a loss, an op helps when it lowers it


def test_holm_runs_over_the_variants_against_the_full_policy_only():
    rng = np.random.default_rng(0)
    base = rng.normal(0.4, 0.01, 6)
    arms = {"p": list(base), **{f"p-no_{op}": list(base - 0.002 * i + rng.normal(0, 0.003, 6))
                                 for i, op in enumerate(OPS)}}
    arms["other"] = list(base + 0.05)  # not a variant of p: not in the family
    table = contributions(trials(arms), "p")
    assert list(table["op"]) == sorted(OPS, key=lambda op: f"p-no_{op}")
    p = table["p"].to_numpy()
    order = np.argsort(p)
    expected = np.maximum.accumulate(np.minimum(1, (len(p) - np.arange(len(p))) * p[order]))
    assert np.allclose(table["p_holm"].to_numpy()[order], expected)


@pytest.mark.slow  # 600 simulated ablations
@pytest.mark.parametrize("seeds", [3, 6])
def test_by_simulation_no_effect_gives_at_most_5_percent_family_wise_false_positives(seeds):
    rng = np.random.default_rng(seeds)
    false = 0
    runs = 300
    for _ in range(runs):
        per_seed = rng.normal(0.4, 0.02, seeds)  # seeds differ; the ops do nothing
        arms = {"p": list(per_seed + rng.normal(0, 0.005, seeds))}
        arms.update({f"p-no_{op}": list(per_seed + rng.normal(0, 0.005, seeds)) for op in OPS})
        false += bool(contributions(trials(arms), "p")["significant"].any())
    assert false / runs <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / runs)


@pytest.mark.slow  # 300 simulated ablations
def test_by_simulation_the_simultaneous_intervals_cover_every_true_contribution_together():
    rng = np.random.default_rng(11)
    truth = dict(zip(OPS, [0.05, 0.0, 0.02, 0.0, -0.01]))
    runs, covered = 300, 0
    for _ in range(runs):
        per_seed = rng.normal(0.4, 0.02, 4)
        arms = {"p": list(per_seed + rng.normal(0, 0.006, 4))}
        arms.update({f"p-no_{op}": list(per_seed - effect + rng.normal(0, 0.006, 4)) for op, effect in truth.items()})
        table = contributions(trials(arms), "p").set_index("op")
        covered += all(table.loc[op, "adj_low"] <= effect <= table.loc[op, "adj_high"] for op, effect in truth.items())
    assert covered / runs >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / runs)


def test_nothing_to_compare_gives_an_empty_table():
    assert contributions(trials({"p": [0.4, 0.41]}), "p").empty
    assert contributions(trials({"q": [0.4], "q-no_flip": [0.3]}), "p").empty
