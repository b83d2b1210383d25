"""The report's statistics as pure functions of arrays and DataFrames (no MLflow, no plotting)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NO_INTERVAL = "no interval"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile-bootstrap interval; low/high are NaN when none can be given."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def available(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def excludes_zero(self) -> bool | None:
        if not self.available:
            return None
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 4) -> str:
        if math.isnan(self.estimate):
            return "n/a"
        if not self.available:
            return f"{self.estimate:.{digits}f} ({NO_INTERVAL}, n = {self.n})"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of values with a percentile-bootstrap interval; fewer than 2 values give no interval."""
    x = _clean(values)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    if len(x) < 2:
        return Interval(float(x.mean()), math.nan, math.nan, len(x), level)
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return Interval(float(x.mean()), *_percentiles(boot, level), len(x), level)


def bootstrap_diff_ci(a, b, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> Interval:
    """mean(a) - mean(b), resampling a and b independently; n is min(len(a), len(b))."""
    xa, xb = _clean(a), _clean(b)
    n = min(len(xa), len(xb))
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    estimate = float(xa.mean() - xb.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, level)
    rng = np.random.default_rng(seed)
    boot_a = xa[rng.integers(0, len(xa), size=(n_boot, len(xa)))].mean(axis=1)
    boot_b = xb[rng.integers(0, len(xb), size=(n_boot, len(xb)))].mean(axis=1)
    return Interval(estimate, *_percentiles(boot_a - boot_b, level), n, level)


def policy_table(
    df: pd.DataFrame,
    value: str = "final_metric",
    mode: str = "max",
    policy: str = "policy",
    seed_col: str = "seed",
    n_boot: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per policy, best first: mean with bootstrap CI over its trials (seeds), and the
    difference best - this policy with a bootstrap CI and whether that interval excludes 0."""
    columns = ["rank", "policy", "n", "seeds", "mean", "ci_low", "ci_high", "interval",
               "diff", "diff_low", "diff_high", "diff_interval", "excludes_zero"]
    data = df[[policy, value] + ([seed_col] if seed_col in df else [])].copy()
    data = data[np.isfinite(data[value].astype(float))]
    if data.empty:
        return pd.DataFrame(columns=columns)
    groups = {str(k): g for k, g in data.groupby(policy, sort=True)}
    cis = {k: bootstrap_ci(g[value], n_boot=n_boot, seed=seed) for k, g in groups.items()}
    order = sorted(cis, key=lambda k: (-cis[k].estimate if mode == "max" else cis[k].estimate, k))
    best = order[0]
    rows = []
    for rank, name in enumerate(order, start=1):
        ci, g = cis[name], groups[name]
        row = {
            "rank": rank, "policy": name, "n": ci.n,
            "seeds": int(g[seed_col].nunique()) if seed_col in g else ci.n,
            "mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "interval": ci.text(),
            "diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "diff_interval": "",
            "excludes_zero": None,
        }
        if name != best:
            d = bootstrap_diff_ci(groups[best][value], g[value], n_boot=n_boot, seed=seed)
            row.update(diff=d.estimate, diff_low=d.low, diff_high=d.high, diff_interval=d.text(),
                       excludes_zero=d.excludes_zero)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def asha_rungs(grace: int, rf: int, max_t: int) -> list[int]:
    """ASHA's milestones: grace * rf**k below max_t, then max_t itself."""
    rungs, r = [], grace
    while r < max_t:
        rungs.append(int(r))
        r *= rf
    return rungs + [int(max_t)]


def asha_cutoff(values, rf: int, mode: str = "max") -> float:
    """The value a trial must reach at a rung to continue, as Ray's ASHA computes it from the
    values recorded there: the (1 - 1/rf) quantile for max, the 1/rf quantile for min."""
    x = _clean(values)
    if len(x) == 0:
        return math.nan
    q = (1 - 1 / rf) if mode == "max" else 1 / rf
    return float(np.percentile(x, q * 100))


def rung_table(curves: pd.DataFrame, metric: str, grace: int, rf: int, max_t: int, mode: str = "max",
               trial: str = "trial", epoch: str = "epoch") -> pd.DataFrame:
    """Per rung: how many trials reached that epoch, and the cut-off over their values there."""
    rows = []
    for r in asha_rungs(grace, rf, max_t):
        at = curves[curves[epoch] == r]
        values = at[metric] if metric in at else []
        rows.append({"rung": r, "reached": int(at[trial].nunique()),
                     "cutoff": asha_cutoff(values, rf, mode), "final": r == max_t})
    return pd.DataFrame(rows, columns=["rung", "reached", "cutoff", "final"])


def rank_trials(trials: pd.DataFrame, mode: str = "max", value: str = "final_metric") -> pd.DataFrame:
    """Trials with a finite value, best first (ties keep the trials' order)."""
    ok = trials[np.isfinite(trials[value].astype(float))]
    return ok.sort_values(value, ascending=(mode != "max"), kind="stable")
