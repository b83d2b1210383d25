"""reports.stats on constructed data with known answers, and simulations of its comparisons."""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from reports.stats import (
    NO_INTERVAL,
    binomial_interval,
    compare_arms,
    detectable_difference,
    holm,
    paired_t,
    rank_trials,
    t_interval,
    within_noise,
)

CONFIG = ["base_lr", "tau_base", "aug_strength", "epochs", "policy", "seed"]


def _sweep(values: np.ndarray, arms: list[str], base_lr=0.1) -> pd.DataFrame:
    """values (k arms, n seeds) -> a trials table with constant other config fields."""
    k, n = values.shape
    return pd.DataFrame({
        "policy": np.repeat(arms, n), "seed": np.tile(np.arange(n), k), "final_metric": values.ravel(),
        "status": "completed", "base_lr": base_lr, "tau_base": 0.99, "aug_strength": 1.0, "epochs": 10,
    })


def _simulate(rng, sims: int, k: int, n: int, effects=None, seed_sd=0.03, noise_sd=0.01) -> np.ndarray:
    """(sims, k, n) metrics: arm effect + a seed effect shared by the arms (same data order, init) + noise."""
    effects = np.zeros(k) if effects is None else np.asarray(effects, float)
    seed_effect = rng.normal(0, seed_sd, (sims, 1, n))
    return 0.8 + effects[None, :, None] + seed_effect + rng.normal(0, noise_sd, (sims, k, n))


def test_paired_t_interval_covers_at_nominal_level_with_five_seeds():
    rng = np.random.default_rng(2024)
    sims, n, delta = 4000, 5, 0.02
    y = _simulate(rng, sims, 2, n, effects=[delta, 0.0])
    r = paired_t(y[:, 0] - y[:, 1], level=0.95)
    coverage = np.mean((r["low"] <= delta) & (delta <= r["high"]))
    se = math.sqrt(0.95 * 0.05 / sims)
    assert coverage >= 0.93 and abs(coverage - 0.95) < 3 * se + 0.005  # nominal, not just "enough"
    # heavy-tailed noise (t with 4 df): still close to nominal
    y = 0.8 + rng.normal(0, 0.03, (sims, 1, n)) + 0.01 * rng.standard_t(4, (sims, 2, n))
    r = paired_t(y[:, 0] - y[:, 1])
    assert np.mean((r["low"] <= 0) & (0 <= r["high"])) >= 0.93


def test_per_arm_t_interval_covers():
    rng = np.random.default_rng(5)
    x = 0.7 + rng.normal(0, 0.02, (4000, 3))
    low_high = np.array([t_interval(row)[1:] for row in x[:1000]])
    assert np.mean((low_high[:, 0] <= 0.7) & (0.7 <= low_high[:, 1])) >= 0.93


def _all_pairs_p(y: np.ndarray) -> np.ndarray:
    """(sims, k, n) -> paired t p of every pair (sims, k(k-1)/2), in compare_arms' core."""
    k = y.shape[1]
    diffs = np.stack([y[:, a] - y[:, b] for a, b in combinations(range(k), 2)], axis=1)
    return paired_t(diffs, 0.95, family=diffs.shape[1])


def test_family_wise_false_positives_with_five_identical_arms():
    rng = np.random.default_rng(7)
    sims = 4000
    y = _simulate(rng, sims, 5, 5)
    r = _all_pairs_p(y)
    any_holm = np.any(holm(r["p"]) < 0.05, axis=1)
    any_interval = np.any((r["adj_low"] > 0) | (r["adj_high"] < 0), axis=1)  # Bonferroni intervals
    slack = 2 * math.sqrt(0.05 * 0.95 / sims)
    assert any_holm.mean() <= 0.05 + slack
    assert any_interval.mean() <= any_holm.mean() + 1e-12  # the intervals are more conservative than Holm
    # uncorrected, the same tests would flag something in about a quarter of the sweeps
    assert np.any(r["p"] < 0.05, axis=1).mean() > 0.15


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
def test_compare_arms_uses_the_same_tests_and_controls_the_family():
    rng = np.random.default_rng(11)
    arms = list("abcde")
    y = _simulate(rng, 120, 5, 5)
    core = holm(_all_pairs_p(y)["p"])
    flagged = 0
    for i in range(len(y)):
        c = compare_arms(_sweep(y[i], arms), "policy", config_columns=CONFIG)
        assert c.comparable and c.family == 10 and len(c.pairs) == 10
        by_pair = {frozenset((r["a"], r["b"])): r["p_holm"] for _, r in c.pairs.iterrows()}
        expected = [core[i, j] for j, _ in enumerate(combinations(arms, 2))]
        got = [by_pair[frozenset(p)] for p in combinations(arms, 2)]
        assert got == pytest.approx(expected, rel=1e-9)
        flagged += bool(c.pairs["significant"].any())
    assert flagged / len(y) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / len(y))


def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, math.nan, 0.01, 0.2])  # untested hypotheses leave the family
    assert out[[0, 2, 3]] == pytest.approx([0.5, 0.03, 0.4]) and math.isnan(out[1])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 * 0.8 capped at 1; monotone
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])


def test_detectable_difference_matches_power():
    # large n: the normal approximation (z_{1-a/2} + z_{power}) * sd / sqrt(n) is close
    assert detectable_difference(1.0, 200, 0.05) == pytest.approx((1.959964 + 0.841621) / math.sqrt(200), rel=0.01)
    rng = np.random.default_rng(3)
    delta = detectable_difference(0.01, 5, 0.05 / 10)
    d = delta + rng.normal(0, 0.01, (20000, 5))
    assert np.mean(paired_t(d)["p"] < 0.005) == pytest.approx(0.8, abs=0.015)
    assert math.isnan(detectable_difference(0.01, 1, 0.05))


def test_compare_arms_known_answer_and_best_vs_each_other():
    df = pd.DataFrame({
        "policy": ["simclr"] * 3 + ["byol"] * 3 + ["crop_only"] * 3,
        "seed": [0, 1, 2] * 3,
        "final_metric": [0.70, 0.71, 0.69, 0.80, 0.82, 0.81, 0.40, 0.45, 0.42],
        "base_lr": 0.1,
    })
    c = compare_arms(df, "policy", config_columns=["base_lr", "policy", "seed"])
    assert c.comparable and c.best == "byol" and c.family == 3
    assert list(c.arms["arm"]) == ["byol", "simclr", "crop_only"] and list(c.arms["rank"]) == [1, 2, 3]
    assert c.arms.loc[0, "mean"] == pytest.approx(0.81)
    # t interval of byol's mean: 0.81 ± t_{2,0.975} * 0.01 / sqrt(3)
    assert c.arms.loc[0, "ci_high"] - 0.81 == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert list(c.vs_best["b"]) == ["simclr", "crop_only"] and (c.vs_best["a"] == "byol").all()
    row = c.vs_best.iloc[0]
    d = np.array([0.80 - 0.70, 0.82 - 0.71, 0.81 - 0.69])
    assert row["diff"] == pytest.approx(d.mean()) and row["n"] == 3
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-5)
    assert row["adj_high"] - row["adj_low"] > row["ci_high"] - row["ci_low"]  # Bonferroni-widened
    assert row["p_holm"] >= row["p"] and bool(row["significant"])
    assert "3 pairs" in c.note and "Holm" in c.note and "Bonferroni" in c.note
    low_first = compare_arms(df.assign(final_metric=-df["final_metric"]), "policy", mode="min")
    assert list(low_first.arms["arm"]) == ["byol", "simclr", "crop_only"] and low_first.best == "byol"
    assert "not checked" in low_first.note


def test_pairs_only_common_seeds():
    df = pd.DataFrame({"policy": ["a"] * 4 + ["b"] * 3, "seed": [0, 1, 2, 3, 1, 2, 3],
                       "final_metric": [0.9, 0.5, 0.6, 0.7, 0.4, 0.5, 0.6]})
    c = compare_arms(df, "policy")
    assert c.pairs.loc[0, "n"] == 3 and c.pairs.loc[0, "diff"] == pytest.approx(0.1)  # seed 0 unpaired
    assert c.arms.set_index("arm").loc["a", "n"] == 4


def test_refuses_when_base_lr_differs_between_arms():
    rng = np.random.default_rng(0)
    df = _sweep(_simulate(rng, 1, 2, 4)[0], ["byol", "simclr"])
    df.loc[df["policy"] == "simclr", "base_lr"] = 0.3
    c = compare_arms(df, "policy", config_columns=CONFIG)
    assert not c.comparable and c.best is None and c.pairs.empty and c.vs_best.empty
    assert "base_lr takes 2 values (0.1, 0.3)" in c.note and "differing between arms" in c.note
    assert "tau_base" not in c.note
    df["base_lr"] = np.tile([0.1, 0.2, 0.3, 0.1], 2)  # varies within each arm
    c = compare_arms(df, "policy", config_columns=CONFIG)
    assert not c.comparable and "base_lr takes 3 values" in c.note and "varying within" in c.note
    assert len(c.arms) == 2  # each arm is still described


def test_detectability_note():
    rng = np.random.default_rng(1)
    c = compare_arms(_sweep(_simulate(rng, 1, 3, 5)[0], ["a", "b", "c"]), "policy", config_columns=CONFIG)
    assert c.comparable and np.isfinite(c.detectable) and c.detectable > 0
    assert f"With 5 seeds, differences smaller than {c.detectable:.4g} cannot be told from noise" in c.note
    assert c.pairs["detectable"].notna().all()


def test_one_seed_gives_no_interval_and_says_so():
    df = pd.DataFrame({"policy": ["a", "b"], "seed": [0, 0], "final_metric": [0.6, 0.5]})
    c = compare_arms(df, "policy")
    assert all(NO_INTERVAL in t for t in c.arms["interval"]) and c.arms["ci_low"].isna().all()
    assert c.family == 0 and c.pairs.loc[0, "diff"] == pytest.approx(0.1)
    assert math.isnan(c.pairs.loc[0, "p"]) and c.pairs.loc[0, "significant"] is None
    assert NO_INTERVAL in c.pairs.loc[0, "interval"]
    assert "too few to compare" in c.note and math.isnan(c.detectable)
    # different seeds per arm: nothing in common to pair
    c = compare_arms(df.assign(seed=[0, 1]), "policy")
    assert c.pairs.loc[0, "n"] == 0 and "too few to compare" in c.note
    assert "nothing to compare" in compare_arms(df.iloc[:1], "policy").note


def test_nan_metrics_are_left_out():
    df = pd.DataFrame({"policy": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                       "final_metric": [0.5, math.nan, 0.6, 0.4, 0.45, 0.5]})
    c = compare_arms(df, "policy")
    assert c.arms.set_index("arm").loc["a", "n"] == 2 and c.pairs.loc[0, "n"] == 2
    assert "1 trial(s) without a finite" in c.note


def test_binomial_interval_and_within_noise():
    low, high = binomial_interval(0.5, 100)
    assert (low, high) == pytest.approx((0.3983, 0.6017), abs=5e-4)  # Clopper-Pearson
    assert binomial_interval(0.9, 1000)[1] - binomial_interval(0.9, 1000)[0] < 0.04
    assert all(math.isnan(v) for v in binomial_interval(0.5, 0))
    marks = within_noise([0.5, 0.40, 0.35, 0.62, math.nan], 0.5, 100, mode="max")  # noise of a difference: ~0.14
    assert marks.tolist() == [True, True, False, True, False]
    assert within_noise([0.62, 0.66], 0.5, 100, mode="min").tolist() == [True, False]


def test_rank_trials():
    df = pd.DataFrame({"trial": range(4), "final_metric": [0.5, 0.9, math.nan, 0.9]})
    assert list(rank_trials(df, mode="max")["trial"]) == [1, 3, 0]
    assert list(rank_trials(df, mode="min")["trial"]) == [0, 1, 3]


def test_beating_a_seedless_baseline_has_at_most_its_nominal_false_positive_rate():
    """Simulated: trained accuracies (3 or 5 seeds, with or without a seed spread) whose true mean
    equals the raw-pixel baseline's true accuracy, measured once on 1000 queries: 'beaten' (low > 0)
    must come up in at most 2.5% of sweeps (+ 3 Monte Carlo SEs), where Welch-Satterthwaite's degrees
    of freedom gave 3-4%; with a real gain of 5 points on 10,000 queries (the size of CIFAR-10's test
    split) it must come up most of the time."""
    from reports.stats import beats_baseline

    rng = np.random.default_rng(0)
    n_queries, p, sims = 10000, 0.35, 6000
    slack = 3 * math.sqrt(0.025 * 0.975 / sims)
    for seeds, spread in ((3, 0.0), (3, 0.005), (3, 0.01), (5, 0.005)):
        for gain, check in ((0.0, lambda rate: rate <= 0.025 + slack), (0.05, lambda rate: rate >= 0.6)):
            trained = rng.binomial(n_queries, np.clip(p + gain + rng.normal(0, spread, (sims, seeds)), 0, 1)) / n_queries
            baseline = rng.binomial(n_queries, p, sims) / n_queries
            rate = np.mean([beats_baseline(t, b, n_queries).beaten for t, b in zip(trained, baseline)])
            assert check(rate), (seeds, spread, gain, rate)
    single = beats_baseline([0.5], 0.4, 1000)
    assert single.diff == pytest.approx(0.1) and single.beaten  # 10 points on 1000 queries: beyond the noise


@pytest.mark.parametrize("seeds", [3, 5])
def test_beating_the_untrained_encoder_paired_by_seed_holds_its_level_with_an_init_spread(seeds):
    """Simulated: each seed's trained and untrained encoders differ by an init effect (SD 0.01, the
    spread measured over 8 inits of cifar10_mini's untrained encoder) and by their queries' noise;
    with no true gain, the paired-by-seed decision says 'beaten' at its nominal 2.5% (within 3 Monte
    Carlo SEs)."""
    from reports.stats import beats_paired_baseline

    rng = np.random.default_rng(seeds)
    n_queries, p, sims = 10000, 0.32, 6000
    slack = 3 * math.sqrt(0.025 * 0.975 / sims)

    def accuracies():
        return rng.binomial(n_queries, p + rng.normal(0, 0.01, (sims, seeds))) / n_queries

    trained, untrained = accuracies(), accuracies()
    paired = np.mean([beats_paired_baseline(dict(enumerate(t)), dict(enumerate(u))).beaten
                      for t, u in zip(trained, untrained)])
    assert abs(paired - 0.025) <= slack, paired
    gained = np.mean([beats_paired_baseline(dict(enumerate(t + 0.05)), dict(enumerate(u))).beaten
                      for t, u in zip(trained[:500], untrained[:500])])
    assert gained >= 0.6, gained
    common = beats_paired_baseline({10000: 0.41, 10001: 0.40, 10002: 0.39}, {10000: 0.30, 10001: 0.33, 7: 0.1})
    assert common.n == 2 and common.diff == pytest.approx(0.09) and common.paired


def test_within_noise_of_the_best_flags_an_equal_trial_at_most_at_its_level():
    """Two trials with the same true accuracy, each measured on 1000 queries: the worse is flagged out
    of the best's noise at most 5% of the time (+ 3 Monte Carlo SEs); 8 points apart, nearly always."""
    rng = np.random.default_rng(5)
    sims, n_queries = 20000, 1000
    slack = 3 * math.sqrt(0.05 * 0.95 / sims)
    a, b = rng.binomial(n_queries, 0.4, (2, sims)) / n_queries
    best, other = np.maximum(a, b), np.minimum(a, b)
    flagged = np.mean([not within_noise([o], x, n_queries)[0] for x, o in zip(best, other)])
    assert flagged <= 0.05 + slack, flagged
    far = rng.binomial(n_queries, 0.32, 2000) / n_queries
    assert np.mean([not within_noise([o], x, n_queries)[0] for x, o in zip(best[:2000], far)]) > 0.95


def test_each_distribution_gives_scipy_stats_own_answer():
    """reports/stats.py evaluates its distributions with scipy.special (importing scipy.stats is slow):
    every quantity it reports equals what scipy.stats computes, over the sizes a report meets."""
    from scipy import stats

    from reports.stats import beats_baseline, beats_paired_baseline, t_quantile

    rng = np.random.default_rng(3)
    for df in (1, 2, 4, 9, 30, 1e6):
        for q in (0.6, 0.975, 0.995, 0.99975):
            assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-12)
    assert t_quantile(0.975, math.inf) == pytest.approx(stats.norm.ppf(0.975), rel=1e-14)
    for n in (2, 3, 5, 12):
        d = rng.normal(0.01, 0.02, size=(50, n))
        d[0] = 0.25  # zero spread: p 0, zero-width interval
        ours = paired_t(d, 0.95, family=6)
        res = stats.ttest_1samp(d[1:], 0.0, axis=-1)
        ci, adj = res.confidence_interval(0.95), res.confidence_interval(1 - 0.05 / 6)
        for key, theirs in (("p", res.pvalue), ("low", ci.low), ("high", ci.high), ("adj_low", adj.low),
                            ("adj_high", adj.high)):
            assert ours[key][1:] == pytest.approx(theirs, rel=1e-10, abs=1e-15), key
        assert ours["p"][0] == 0.0 and ours["low"][0] == ours["high"][0] == 0.25
    for n, acc in ((100, 0.5), (1000, 0.393), (1000, 0.0), (1000, 1.0), (37, 0.03), (5000, 0.9)):
        k = round(acc * n)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95)
        assert binomial_interval(acc, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    for sd, n, alpha in ((1.0, 200, 0.05), (0.01, 5, 0.005), (0.03, 3, 0.05 / 3), (0.2, 2, 0.05)):
        nc = detectable_difference(sd, n, alpha) * math.sqrt(n) / sd
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        power = stats.nct.sf(crit, n - 1, nc) + np.nan_to_num(stats.nct.cdf(-crit, n - 1, nc))  # NaN: ~0
        assert power == pytest.approx(0.8, abs=1e-8)
    d = beats_baseline([0.40, 0.41, 0.37], 0.383, 1000)
    var_t, var_b = np.var([0.40, 0.41, 0.37], ddof=1) / 3, 0.383 * 0.617 / 1000
    assert d.high - d.diff == pytest.approx(stats.t.ppf(0.975, 2) * math.sqrt(var_t + var_b), rel=1e-12)
    trained, untrained = {1: 0.40, 2: 0.41, 3: 0.37}, {1: 0.31, 2: 0.33, 3: 0.30}
    paired = beats_paired_baseline(trained, untrained)
    ci = stats.ttest_rel(list(trained.values()), list(untrained.values())).confidence_interval(0.95)
    assert (paired.low, paired.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
