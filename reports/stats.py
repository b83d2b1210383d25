"""The report's statistics as pure functions of arrays and DataFrames (no MLflow, no plotting).

Comparisons of arms (the values of one field, e.g. policy) follow design.md, "What a sweep may
conclude": paired by seed, Student-t intervals (they cover at their nominal level for small n; the
percentile bootstrap does not), every pair of arms in one Holm-corrected family, and refused when
the arms differ in anything but the compared field.

The distributions come from scipy.special, the functions scipy.stats itself evaluates (t: stdtr,
stdtrit; noncentral t: nctdtr; normal: ndtri; beta: betaincinv): importing scipy.stats took about
0.7 s of a 4-s report. tests/reports/test_stats.py holds each to scipy.stats' own answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import special

from reports.numbers import NO_INTERVAL, arm_interval

POWER = 0.8  # the power at which compare_arms reports the smallest detectable difference


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def t_quantile(q, df):
    """scipy.stats.t.ppf(q, df); df may be infinite (the normal's quantile)."""
    return special.ndtri(q) if np.isinf(df) else special.stdtrit(df, q)


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values: the Student-t interval mean ± t_{n-1, (1+level)/2} * sd / sqrt(n)
    (scipy.stats.t). low/high are NaN when fewer than 2 values; mean is NaN when none."""
    x = _clean(values)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(t_quantile(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def paired_t(diffs, level: float = 0.95, family: int = 1) -> dict[str, np.ndarray]:
    """The one-sample (= paired) t analysis of differences, vectorised over all leading axes.

    diffs: array (..., n) of paired differences a - b (finite). Returns arrays of shape (...):
    mean, sd (ddof 1), n, low/high (the level t interval, scipy.stats.ttest_1samp's confidence_interval),
    adj_low/adj_high (Bonferroni-simultaneous t interval at level 1 - (1 - level)/family), and p
    (two-sided paired t-test of mean 0). With n < 2 everything but mean is NaN. Differences with
    zero spread give a zero-width interval and p = 0 (mean != 0) or 1 (mean == 0)."""
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    shape = d.shape[:-1]
    mean = d.mean(axis=-1) if n else np.full(shape, math.nan)
    out = {"mean": mean, "n": np.full(shape, n)}
    if n < 2:
        nan = np.full(shape, math.nan)
        return out | {"sd": nan, "low": nan, "high": nan, "adj_low": nan, "adj_high": nan, "p": nan}
    sd = d.std(axis=-1, ddof=1)
    se = sd / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero spread: handled below
        p = 2 * special.stdtr(n - 1, -np.abs(mean / se))
    half = t_quantile(0.5 + level / 2, n - 1) * se
    adj_half = t_quantile(1 - (1 - level) / family / 2, n - 1) * se
    flat = sd == 0
    p = np.where(flat, np.where(mean == 0, 1.0, 0.0), p)
    return out | {"sd": sd, "low": mean - half, "high": mean + half, "adj_low": mean - adj_half,
                  "adj_high": mean + adj_half, "p": p}


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values along the last axis (vectorised over leading axes).

    Sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting
    where adjusted p < alpha controls the family-wise error rate at alpha under any dependence.
    NaN p-values (untested hypotheses) are left out of the family and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, axis=-1)  # NaN last
    sorted_p = np.take_along_axis(p, order, axis=-1)
    m = np.isfinite(p).sum(axis=-1, keepdims=True)
    steps = m - np.arange(p.shape[-1])
    adjusted = np.minimum(1.0, np.maximum.accumulate(np.where(np.isfinite(sorted_p), steps * sorted_p, -np.inf),
                                                      axis=-1))
    adjusted = np.where(np.isfinite(sorted_p), adjusted, math.nan)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def detectable_difference(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test at alpha detects with the
    given power, for n pairs whose differences have standard deviation sd. Exact for normal
    differences: power(nc) = P(|T| > t_{n-1, 1-alpha/2}) with T noncentral t (scipy.stats.nct),
    nc = delta * sqrt(n) / sd, solved for nc. NaN when n < 2 or sd is not finite."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = t_quantile(1 - alpha / 2, df)

    def gap(nc: float) -> float:
        lower = float(np.nan_to_num(special.nctdtr(df, nc, -crit)))  # far tail: scipy may give NaN for ~0
        return float(1 - special.nctdtr(df, nc, crit)) + lower - power

    high = crit + 10.0
    while gap(high) < 0:
        high *= 2
    from scipy.optimize import brentq  # here: importing scipy.optimize costs about 0.35 s

    nc = brentq(gap, 0.0, high, xtol=1e-10)
    return float(nc * sd / math.sqrt(n))


@dataclass
class Comparison:
    """What compare_arms concludes. Tables (empty when nothing can be compared):

    arms: one row per arm, best first: rank, arm, n (trials), seeds, mean, sd, ci_low, ci_high (Student-t
        interval of the mean at level; NaN when n < 2), interval (text).
    pairs: every pair of arms (a ranks before b): a, b, n (common seeds), diff (mean of a - b over the
        common seeds), sd (of those differences), ci_low, ci_high (per-comparison paired t interval),
        adj_low, adj_high (Bonferroni-simultaneous paired t interval, level 1 - alpha/family: all of them
        cover together), p (paired t-test), p_holm (Holm-adjusted over the family), significant
        (p_holm < alpha; None when untestable), detectable (smallest difference found with 80% power at
        alpha/family), interval (text of the adjusted interval).
    vs_best: the rows of pairs with a == best (best - each other arm), for display; same columns.
    """

    field: str
    mode: str
    level: float
    comparable: bool
    arms: pd.DataFrame
    pairs: pd.DataFrame
    vs_best: pd.DataFrame
    best: object | None
    family: int  # pairs tested (with >= 2 common seeds): the m of Holm and Bonferroni
    detectable: float  # the note's smallest detectable difference (NaN when none can be given)
    notes: list[str] = dc_field(default_factory=list)

    @property
    def note(self) -> str:
        return " ".join(self.notes)


ARM_COLUMNS = ["rank", "arm", "n", "seeds", "mean", "sd", "ci_low", "ci_high", "interval"]
PAIR_COLUMNS = ["a", "b", "n", "diff", "sd", "ci_low", "ci_high", "adj_low", "adj_high", "p", "p_holm",
                "significant", "detectable", "interval"]


def _what_differs(data: pd.DataFrame, field: str, columns: list[str]) -> list[str]:
    """'base_lr takes 3 values (0.001, 0.003, 0.01), differing between arms' for each column that is
    not constant over the compared trials."""
    out = []
    for c in columns:
        text = data[c].astype(str)
        values = sorted(text.unique())
        if len(values) < 2:
            continue
        within = [a for a, g in text.groupby(data[field], sort=True) if g.nunique() > 1]
        where = (f"varying within {field} {', '.join(map(str, within))}" if within
                 else "differing between arms")
        shown = ", ".join(values[:4]) + (", ..." if len(values) > 4 else "")
        out.append(f"{c} takes {len(values)} values ({shown}), {where}")
    return out


def compare_arms(df: pd.DataFrame, field: str, value: str = "final_metric", mode: str = "max",
                 pair: str = "seed", level: float = 0.95, config_columns=None) -> Comparison:
    """Compare the arms (values of `field`, e.g. policy) of a trials table on `value`.

    - Refusal: when config_columns is given, any of them other than field, pair and value that is not
      constant over the compared trials (varies within an arm, or differs between arms) makes the arms
      incomparable: comparable is False, pairs are empty, best is None, and a note names each such column
      and its values. The arms table is still given, as a description of each arm.
    - Per arm: n, mean and a Student-t interval (NaN when n < 2) over its trials with a finite value.
    - Differences: paired by `pair` (only values of pair both arms have; repeated (arm, pair) trials
      are averaged first), mean difference with a paired t interval, two-sided paired t-test p.
    - All k(k-1)/2 pairs are one family (the best arm is chosen after seeing the data, so comparing
      only best vs others would not be a valid family): Holm-adjusted p, significance at alpha = 1 - level,
      and Bonferroni-simultaneous t intervals (level 1 - alpha/m), which are valid together for all pairs;
      Holm may declare a pair significant while its Bonferroni interval still touches 0 (Holm is more
      powerful), never the reverse.
    - Detectability: the smallest difference found with 80% power by the paired t-test at alpha/m
      (Holm's first, strictest step), exact on the noncentral t, from the pooled sd of the pairs'
      differences and the fewest common seeds.
    - best: the arm with the best mean (mode "max": largest), ties broken by name; vs_best: its pairs.
    """
    alpha = 1 - level
    notes: list[str] = []
    empty_pairs = pd.DataFrame(columns=PAIR_COLUMNS)
    if field not in df or value not in df:
        return Comparison(field, mode, level, False, pd.DataFrame(columns=ARM_COLUMNS), empty_pairs, empty_pairs,
                          None, 0, math.nan, [f"The trials have no {field!r} or {value!r} column: nothing to compare."])
    data = df[np.isfinite(pd.to_numeric(df[value], errors="coerce").astype(float)) & df[field].notna()].copy()
    data[value] = data[value].astype(float)
    if len(data) < len(df):
        notes.append(f"{len(df) - len(data)} trial(s) without a finite {value} or a {field} are left out.")

    # per arm
    rows = []
    for arm, g in data.groupby(field, sort=True):
        mean, low, high = t_interval(g[value], level)
        rows.append({"arm": arm, "n": len(g), "seeds": int(g[pair].nunique()) if pair in g else len(g),
                     "mean": mean, "sd": float(g[value].std(ddof=1)) if len(g) > 1 else math.nan,
                     "ci_low": low, "ci_high": high, "interval": arm_interval(mean, low, high, len(g))})
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (sign * r["mean"], str(r["arm"])))
    for rank, r in enumerate(rows, start=1):
        r["rank"] = rank
    arms = pd.DataFrame(rows, columns=ARM_COLUMNS)
    pct = f"{level:.0%}"
    notes.append(f"Each {field}: mean {value} over its trials with a Student-t {pct} interval.")
    if len(arms) and (arms["n"] < 2).any():
        one = ", ".join(str(a) for a in arms.loc[arms["n"] < 2, "arm"])
        notes.append(f"One trial for {field} {one}: {NO_INTERVAL} can be given for it.")

    def refuse(reason: str) -> Comparison:
        return Comparison(field, mode, level, False, arms, empty_pairs, empty_pairs, None, 0, math.nan,
                          notes + [reason])

    if len(arms) < 2:
        return refuse(f"{len(arms)} value(s) of {field}: nothing to compare.")
    if config_columns is None:
        notes.append("The arms' other configuration fields were not checked (no config_columns given).")
    else:
        others = [c for c in config_columns if c in data and c not in (field, pair, value)]
        differs = _what_differs(data, field, others)
        if differs:
            return refuse(f"Not compared: the {field} arms differ in more than {field}: " + "; ".join(differs)
                          + f". A difference could not be attributed to {field}.")
    if pair not in data:
        return refuse(f"The trials have no {pair!r} column: the arms cannot be paired, so are not compared.")

    wide = data.pivot_table(index=pair, columns=field, values=value, aggfunc="mean")
    if data.duplicated([field, pair]).any():
        notes.append(f"Trials repeating a ({field}, {pair}) were averaged before pairing.")
    order = list(arms["arm"])
    tests = []
    for a, b in combinations(order, 2):
        common = wide[[a, b]].dropna()
        tests.append((a, b, (common[a] - common[b]).to_numpy()))
    m = sum(len(d) >= 2 for _, _, d in tests)
    results = [paired_t(d, level, max(m, 1)) for _, _, d in tests]
    p = np.array([float(r["p"]) for r in results])
    p_holm = holm(p)
    pair_rows = []
    for (a, b, d), r, ph in zip(tests, results, p_holm):
        n = len(d)
        sd = float(r["sd"])
        det = detectable_difference(sd, n, alpha / max(m, 1))
        mean, low, high = float(r["mean"]), float(r["adj_low"]), float(r["adj_high"])
        pair_rows.append({"a": a, "b": b, "n": n, "diff": mean, "sd": sd, "ci_low": float(r["low"]),
                          "ci_high": float(r["high"]), "adj_low": low, "adj_high": high, "p": float(r["p"]),
                          "p_holm": float(ph), "significant": bool(ph < alpha) if np.isfinite(ph) else None,
                          "detectable": det, "interval": arm_interval(mean, low, high, n)})
    pairs = pd.DataFrame(pair_rows, columns=PAIR_COLUMNS)
    best = order[0]
    vs_best = pairs[pairs["a"] == best].reset_index(drop=True)

    k = len(order)
    if m == 0:
        notes.append(f"Seeds are too few to compare {field} at all: no two arms share 2 or more {pair}s, "
                     "so no difference has an interval or a test; the ranking is of single runs.")
        return Comparison(field, mode, level, True, arms, pairs, vs_best, best, 0, math.nan, notes)
    adj_level = 1 - alpha / m
    notes.append(
        f"Differences a − b are paired by {pair} (only {pair}s both arms ran): mean difference, paired "
        f"t-test p, and all {k}({k}−1)/2 = {len(tests)} pairs form one family ({m} testable), "
        f"Holm-corrected (p_holm; significant when < {alpha:g}). Intervals of differences are "
        f"Bonferroni-simultaneous paired t intervals at {adj_level:.2%} (1 − {alpha:g}/{m}), valid for all pairs "
        f"together although the best was picked after seeing the data.")
    testable = pairs[pairs["n"] >= 2]
    n_min, n_max = int(testable["n"].min()), int(testable["n"].max())
    pooled = float(np.sqrt(np.mean(testable["sd"].to_numpy() ** 2)))
    detect = detectable_difference(pooled, n_min, alpha / m)
    seeds = f"{n_min}" if n_min == n_max else f"{n_min} to {n_max}"
    notes.append(
        f"With {seeds} {pair}s, differences smaller than {detect:.4g} cannot be told from noise "
        f"(the difference a paired t-test at alpha {alpha:g}/{m} detects with {POWER:.0%} power, exact on the "
        f"noncentral t, for the pooled sd {pooled:.3g} of the paired differences and {n_min} {pair}s).")
    if len(testable) < len(pairs):
        notes.append(f"{len(pairs) - len(testable)} pair(s) share fewer than 2 {pair}s: no interval or test.")
    n_sig = int((pairs["significant"] == True).sum())  # noqa: E712
    notes.append(f"{n_sig} of {m} differences are significant after Holm's correction.")
    return Comparison(field, mode, level, True, arms, pairs, vs_best, best, m, detect, notes)


def binomial_interval(accuracy: float, n_queries: int, level: float = 0.95) -> tuple[float, float]:
    """The metric's own noise: an accuracy measured on n_queries independent queries is k = round(accuracy *
    n_queries) successes of a binomial; (low, high) is its Clopper-Pearson ("exact") interval at level,
    as scipy.stats.binomtest(k, n).proportion_ci gives it: the beta quantiles B(a/2; k, n-k+1) and
    B(1-a/2; k+1, n-k). (NaN, NaN) when n_queries < 1 or accuracy is not finite."""
    if not (n_queries >= 1 and np.isfinite(accuracy)):
        return math.nan, math.nan
    n = int(n_queries)
    k = min(max(int(round(float(accuracy) * n)), 0), n)
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(special.betaincinv(k, n - k + 1, tail))
    high = 1.0 if k == n else float(special.betaincinv(k + 1, n - k, 1 - tail))
    return low, high


@dataclass(frozen=True)
class BaselineDifference:
    """A trained accuracy minus a baseline's: the mean difference, its two-sided interval at the level
    (beaten when low > 0: a one-sided test at (1 - level)/2), how many values it rests on, and the
    smallest true difference found beaten with 80% power (POWER)."""

    diff: float
    low: float
    high: float
    n: int
    detectable: float
    paired: bool  # paired by seed with a baseline measured on each seed's own init

    @property
    def beaten(self) -> bool:
        return bool(self.low > 0)


NO_DIFFERENCE = BaselineDifference(math.nan, math.nan, math.nan, 0, math.nan, False)


def beats_baseline(trained, baseline: float, n_queries: int, level: float = 0.95) -> BaselineDifference:
    """The trained accuracies (one per seed) minus a baseline that has no seed (raw pixels), measured
    once on n_queries queries. The variance of the difference is the trained mean's over the seeds
    (sd^2 / n) plus the baseline's binomial noise p(1-p)/n_queries; the interval takes Student-t's
    quantile on n - 1 degrees of freedom, the fewest the trained spread rests on: conservative where
    the baseline's noise is a large part (Welch-Satterthwaite's degrees of freedom grow with that part,
    and gave a false-positive rate of 0.030-0.040 at a nominal 0.025 with 3 seeds). A single trained
    value gets its own binomial noise and the normal quantile. Exact for normal noise
    (tests/reports/test_stats.py measures the false-positive rate by simulation)."""
    x = _clean(trained)
    if len(x) == 0 or not (n_queries >= 1 and np.isfinite(baseline)):
        return NO_DIFFERENCE
    var_b = baseline * (1 - baseline) / n_queries
    diff = float(x.mean() - baseline)
    var_t = x[0] * (1 - x[0]) / n_queries if len(x) == 1 else float(x.var(ddof=1)) / len(x)
    se = math.sqrt(var_t + var_b)
    if len(x) == 1:
        z = float(special.ndtri(0.5 + level / 2))
        half, detect = z * se, (z + float(special.ndtri(POWER))) * se
    else:
        half = float(t_quantile(0.5 + level / 2, len(x) - 1)) * se
        detect = detectable_difference(se * math.sqrt(len(x)), len(x), 1 - level)
    return BaselineDifference(diff, diff - half, diff + half, len(x), detect, False)


def beats_paired_baseline(trained: dict[int, float], baseline: dict[int, float],
                          level: float = 0.95) -> BaselineDifference:
    """The trained accuracies minus a baseline measured on each seed's own init (the untrained encoder
    of that seed), paired by seed: the one-sample t interval of the per-seed differences on the seeds
    both have, which carries the init's spread as well as the queries' noise (a baseline from one init
    treats the second as its only noise: with an init spread of 0.01 its false-positive rate was
    0.098 at a nominal 0.025). Fewer than 2 common seeds: no interval."""
    seeds = sorted(set(trained) & set(baseline))
    d = np.array([trained[k] - baseline[k] for k in seeds], dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return NO_DIFFERENCE
    r = paired_t(d, level)
    sd = float(r["sd"])
    return BaselineDifference(float(r["mean"]), float(r["low"]), float(r["high"]), len(d),
                              detectable_difference(sd, len(d), 1 - level), True)


def within_noise(values, best_value: float, n_queries: int, mode: str = "max", level: float = 0.95) -> np.ndarray:
    """Boolean array: which values are not told apart from the best by the queries' noise. A value is
    within noise when the best's lead over it is at most z_{(1+level)/2} times the noise of the
    difference of two binomial accuracies on n_queries queries each, sqrt(p1(1-p1)/n + p2(1-p2)/n)
    (the two measured on the same queries are positively correlated, so this noise is, if anything,
    large). A value better than the best is within noise; NaN values never are. (Of two trials with
    the same true accuracy, the worse is flagged out of the better's noise at most 1 - level of the
    time: tests/reports/test_stats.py simulates it.)"""
    x = np.asarray(values, dtype=float)
    if not (n_queries >= 1 and np.isfinite(best_value)):
        return np.zeros(x.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        noise = np.sqrt((best_value * (1 - best_value) + x * (1 - x)) / n_queries)
        lead = best_value - x if mode == "max" else x - best_value
        inside = lead <= float(special.ndtri(0.5 + level / 2)) * noise
    return np.asarray(inside & np.isfinite(x), dtype=bool)


def rank_trials(trials: pd.DataFrame, mode: str = "max", value: str = "final_metric") -> pd.DataFrame:
    """Trials with a finite value, best first (ties keep the trials' order)."""
    ok = trials[np.isfinite(trials[value].astype(float))]
    return ok.sort_values(value, ascending=(mode != "max"), kind="stable")
