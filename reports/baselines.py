"""The trained values beside the baselines (kNN and the linear probe on raw pixels and on the untrained
encoder) and the metric's own noise: tables, verdicts and the sentences that go with them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports.load import Sweep
from reports.numbers import bounds, num
from reports.render import Para, Table
from reports.stats import beats_baseline, binomial_interval

BASELINE_FEATURES = (("raw_pixels", "raw pixels"), ("untrained", "the untrained encoder"),
                     ("untrained_bn", "the untrained encoder, BatchNorm statistics calibrated"))

BASELINES = tuple((key, f"kNN on {what}") for key, what in BASELINE_FEATURES)

PROBE_BASELINES = tuple((f"{key}_probe", f"linear probe on {what}") for key, what in BASELINE_FEATURES)


def baseline_blocks(s: Sweep, split: str, trained: list[float], probe: list[float] | None = None) -> list:
    """kNN on raw pixels and on the untrained encoder, with binomial intervals, and whether the
    trained value beat every one of them by more than that noise; then the same for the linear
    probe, when the trained runs have one and its baselines were measured."""
    n = s.queries(split)
    if n is None or s.baseline("raw_pixels", split) is None:
        return [Para(f"No baselines were measured on the {split} split (a sweep older than baselines, or their "
                     "measurement failed): whether training helped cannot be said.", note=True)]
    out = [Para(f"Baselines on the {split} split, on the same kNN bank and {n} queries; the interval is the "
                f"metric's own noise (Clopper-Pearson over {n} queries: one query is {1 / n:.4f}). Calibrating "
                "BatchNorm's running statistics changes no weight: what training gains beyond it is learning.")]
    out += _against_baselines(s, split, n, trained, BASELINES, s.metric)
    probe = [v for v in (probe or []) if np.isfinite(v)]
    if probe and s.baseline("raw_pixels_probe", split) is not None:
        out.append(Para(f"The same for the linear probe (a logistic regression fitted on the bank's frozen features "
                        f"and scored on the same {n} queries, as each trained run's), with the same intervals and "
                        "test: a second view of what the features hold, less tied to the distances kNN reads."))
        out += _against_baselines(s, split, n, probe, PROBE_BASELINES, "linear probe", explain=False)
    return out


def baseline_verdicts(s: Sweep, split: str, n: int, trained: list[float], baselines) -> list[tuple[str, float, float, float]]:
    """(label, trained − baseline, low, high) for each measured baseline; beaten when low > 0."""
    return [(label, *beats_baseline(trained, s.baseline(key, split), n))
            for key, label in baselines if s.baseline(key, split) is not None]


def _against_baselines(s: Sweep, split: str, n: int, trained: list[float], baselines, metric: str,
                       explain: bool = True) -> list:
    rows = []
    for key, label in baselines:
        v = s.baseline(key, split)
        if v is not None:
            low, high = binomial_interval(v, n)
            rows.append({"baseline": label, f"{metric} [95% binomial CI]": f"{num(v)} {bounds(low, high)}"})
    out = [Table(pd.DataFrame(rows))]
    rows_vs = baseline_verdicts(s, split, n, trained, baselines)
    out.append(Table(pd.DataFrame({
        "trained − baseline": [label for label, *_ in rows_vs],
        "difference [95% CI]": [f"{num(d)} {bounds(lo, hi)}" for _, d, lo, hi in rows_vs],
        "beaten": ["yes" if lo > 0 else "no" for _, _, lo, _ in rows_vs]})))
    if explain:
        how = ("its spread over the seeds (Student-t)" if len(trained) >= 2 else "its own binomial noise")
        out.append(Para(f"Each difference's interval counts both noises: the trained value's ({how}) and the "
                        "baseline's (binomial over the queries), combined by Welch-Satterthwaite; a baseline is "
                        "beaten when the interval lies above 0 (tests/reports/test_stats.py checks its "
                        "false-positive rate by simulation)."))
    lost = [label for label, _, low, _ in rows_vs if not low > 0]
    if not lost:
        on = metric if metric == s.metric else f"the {metric}"
        return out + [Para(f"Training helped: on {on} it beat every baseline by more than the noise.")]
    return out + [Para(f"Training did not clearly beat: {'; '.join(lost)}.", note=True)]
