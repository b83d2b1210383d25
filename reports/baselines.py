"""The trained values beside the baselines (kNN and the linear probe on raw pixels and on the untrained
encoder) and the metric's own noise: tables, verdicts and the sentences that go with them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports.load import Sweep
from reports.numbers import bounds, num
from reports.render import Para, Table
from reports.stats import POWER, BaselineDifference, beats_baseline, beats_paired_baseline, binomial_interval

BASELINE_FEATURES = (("raw_pixels", "raw pixels"), ("untrained", "the untrained encoder"),
                     ("untrained_bn", "the untrained encoder, BatchNorm statistics calibrated"))

BASELINES = tuple((key, f"kNN on {what}") for key, what in BASELINE_FEATURES)

PROBE_BASELINES = tuple((f"{key}_probe", f"linear probe on {what}") for key, what in BASELINE_FEATURES)


def by_seed(runs: pd.DataFrame, column: str) -> dict[int, float]:
    """{seed: value} of runs' column (runs repeating a seed averaged), finite values only."""
    values = pd.to_numeric(runs[column], errors="coerce").astype(float) if column in runs else pd.Series(dtype=float)
    seeds = pd.to_numeric(runs["seed"], errors="coerce") if "seed" in runs else pd.Series(0, index=runs.index)
    ok = np.isfinite(values) & np.isfinite(seeds.astype(float))
    means = values[ok].groupby(seeds[ok].astype(int)).mean()
    return {int(seed): float(v) for seed, v in means.items()}


def baseline_blocks(s: Sweep, split: str, trained: dict[int, float], probe: dict[int, float] | None = None) -> list:
    """kNN on raw pixels and on the untrained encoder, and whether the trained values ({seed: value})
    beat each by more than the noise; then the same for the linear probe, when the trained runs have
    one and its baselines were measured."""
    n = s.queries(split)
    if n is None or s.baseline("raw_pixels", split) is None:
        return [Para(f"No baselines were measured on the {split} split (a sweep older than baselines, or their "
                     "measurement failed): whether training helped cannot be said.", note=True)]
    out = [Para(f"Baselines on the {split} split, on the same kNN bank and {n} queries (one query is {1 / n:.4f}). "
                "Calibrating BatchNorm's running statistics changes no weight: what training gains beyond it is "
                "learning.")]
    out += _against_baselines(s, split, n, trained, BASELINES, s.metric)
    probe = {k: v for k, v in (probe or {}).items() if np.isfinite(v)}
    if probe and s.baseline("raw_pixels_probe", split) is not None:
        out.append(Para(f"The same for the linear probe (a logistic regression fitted on the bank's frozen features "
                        f"and scored on the same {n} queries, as each trained run's), with the same intervals and "
                        "test: a second view of what the features hold, less tied to the distances kNN reads."))
        out += _against_baselines(s, split, n, probe, PROBE_BASELINES, "linear probe", explain=False)
    return out


def baseline_verdicts(s: Sweep, split: str, n: int, trained: dict[int, float], baselines) -> list[tuple[str, BaselineDifference]]:
    """(label, trained − baseline) for each measured baseline: paired by seed where the baseline was
    measured on the trained runs' own seeds' inits (2 or more in common), else against its one value."""
    out = []
    for key, label in baselines:
        v = s.baseline(key, split)
        if v is None:
            continue
        per_seed = s.seed_baselines(key, split)
        if len(set(per_seed) & set(trained)) >= 2:
            out.append((label, beats_paired_baseline(trained, per_seed)))
        else:
            out.append((label, beats_baseline(list(trained.values()), v, n)))
    return out


def _baseline_value(s: Sweep, split: str, n: int, key: str) -> str:
    per_seed = s.seed_baselines(key, split)
    if per_seed:
        values = np.array(list(per_seed.values()))
        sd = f", SD {num(values.std(ddof=1))}" if len(values) > 1 else ""
        return (f"{num(values.mean())} (mean of {len(values)} inits, seeds {', '.join(map(str, sorted(per_seed)))}: "
                f"{', '.join(num(per_seed[k]) for k in sorted(per_seed))}{sd})")
    v = s.baseline(key, split)
    return f"{num(v)} {bounds(*binomial_interval(v, n))} (95% Clopper-Pearson over the queries)"


def _against_baselines(s: Sweep, split: str, n: int, trained: dict[int, float], baselines, metric: str,
                       explain: bool = True) -> list:
    rows = [{"baseline": label, metric: _baseline_value(s, split, n, key)}
            for key, label in baselines if s.baseline(key, split) is not None]
    out = [Table(pd.DataFrame(rows))]
    verdicts = baseline_verdicts(s, split, n, trained, baselines)
    out.append(Table(pd.DataFrame({
        "trained − baseline": [label for label, _ in verdicts],
        "difference [95% CI]": [f"{num(d.diff)} {bounds(d.low, d.high)}" for _, d in verdicts],
        "how": [f"paired by seed (n {d.n})" if d.paired else f"against one value (n {d.n})" for _, d in verdicts],
        f"detectable ({POWER:.0%} power)": [num(d.detectable) for _, d in verdicts],
        "beaten": ["yes" if d.beaten else "no" for _, d in verdicts]})))
    if explain:
        out.append(Para(how_baselines_are_compared(len(trained))))
    lost = [label for label, d in verdicts if not d.beaten]
    if not lost:
        on = metric if metric == s.metric else f"the {metric}"
        return out + [Para(f"Training helped: on {on} it beat every baseline by more than the noise.")]
    return out + [Para(f"Training did not clearly beat: {'; '.join(lost)} (see 'detectable': a smaller true "
                       "difference is likely to go unseen at these seeds).", note=True)]


def how_baselines_are_compared(seeds: int) -> str:
    """The rule, exactly as reports/stats.py computes it."""
    if seeds < 2:
        return ("One trained value: the difference's interval is normal, with both values' binomial noise over "
                "the queries; a baseline is beaten when the interval lies above 0.")
    return ("A baseline measured on each seed's own init (the untrained encoder) is compared paired by seed: the "
            "Student-t interval of the per-seed differences, which carries the init's spread and the queries' noise. "
            "Raw pixels have no seed: the interval adds their binomial noise over the queries to the trained mean's "
            "spread over the seeds and takes Student-t's quantile on n − 1 degrees of freedom (conservative). A "
            "baseline is beaten when the 95% interval lies above 0 (a one-sided test at 2.5%; "
            "tests/reports/test_stats.py measures both false-positive rates by simulation). 'detectable' is the true "
            f"difference the test finds with {POWER:.0%} power at this spread and these seeds. Both intervals assume "
            "normal noise over seeds; the t interval holds its level for near-normal differences and covers less "
            "under strongly skewed ones.")
