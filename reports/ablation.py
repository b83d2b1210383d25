"""An ablation sweep (`ablate: POLICY`): what each op of the policy contributes, measured as the
full policy's metric minus that of the variant without the op, paired by seed. The family is the
variants against the full policy, fixed before the data (not the best arm chosen after it): Holm's
step-down test over those m comparisons, Bonferroni-simultaneous paired t intervals at 1 - alpha/m,
and for each the smallest difference its seeds could detect."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.load import Sweep
from reports.numbers import arm_interval, p_value
from reports.render import Heading, Para, Table
from reports.stats import POWER, detectable_difference, holm, paired_t

VARIANT = "{policy}-no_{op}"  # as trainer/policies.py ablation_variants names them

CONTRIBUTION_COLUMNS = ["op", "variant", "n", "diff", "sd", "adj_low", "adj_high", "p", "p_holm", "significant",
                        "detectable", "interval"]


def contributions(df: pd.DataFrame, policy: str, value: str = "final_metric", mode: str = "max",
                  field: str = "policy", pair: str = "seed", level: float = 0.95) -> pd.DataFrame:
    """One row per variant `<policy>-no_<op>` in df: the op's contribution (policy − variant for mode
    max, variant − policy for min: positive when the op helps) over the seeds both ran."""
    alpha = 1 - level
    data = df[np.isfinite(pd.to_numeric(df[value], errors="coerce").astype(float))] if value in df else df.iloc[:0]
    if data.empty or field not in data or pair not in data:
        return pd.DataFrame(columns=CONTRIBUTION_COLUMNS)
    wide = data.pivot_table(index=pair, columns=field, values=value, aggfunc="mean")
    prefix = VARIANT.format(policy=policy, op="")
    variants = [v for v in wide.columns if str(v).startswith(prefix)]
    if policy not in wide.columns or not variants:
        return pd.DataFrame(columns=CONTRIBUTION_COLUMNS)
    sign = 1.0 if mode == "max" else -1.0
    pairs = [wide[[policy, v]].dropna() for v in variants]
    diffs = [sign * (both[policy] - both[v]).to_numpy() for both, v in zip(pairs, variants)]
    m = max(1, sum(len(d) >= 2 for d in diffs))
    results = [paired_t(d, level, m) for d in diffs]
    p_holm = holm(np.array([float(r["p"]) for r in results]))
    rows = []
    for v, d, r, ph in zip(variants, diffs, results, p_holm):
        mean, low, high, sd = float(r["mean"]), float(r["adj_low"]), float(r["adj_high"]), float(r["sd"])
        rows.append({"op": str(v)[len(prefix):], "variant": v, "n": len(d), "diff": mean, "sd": sd,
                     "adj_low": low, "adj_high": high, "p": float(r["p"]), "p_holm": float(ph),
                     "significant": bool(ph < alpha) if np.isfinite(ph) else None,
                     "detectable": detectable_difference(sd, len(d), alpha / m),
                     "interval": arm_interval(mean, low, high, len(d))})
    return pd.DataFrame(rows, columns=CONTRIBUTION_COLUMNS)


def verdict(row) -> str:
    if row["significant"] is None:
        return "too few seeds to test"
    if row["significant"]:
        return "helps" if row["diff"] > 0 else "hurts"
    return f"not told from noise (smaller than {row['detectable']:.4f} cannot be detected)"


def ablation_section(s: Sweep, level: int) -> list:
    policy = s.params.get("ablation")
    if not policy:
        return []
    table = contributions(s.full_budget, policy, mode=s.mode)
    out = [Heading(f"Ablation of {policy}: what each op contributes", level)]
    if table.empty:
        return out + [Para(f"No op can be assessed yet: the report needs full-budget runs of {policy} and of its "
                           "variants on common seeds.")]
    m = int((table["n"] >= 2).sum())
    out.append(Para(
        f"Each row removes one op of {policy} from both views; its contribution is {policy}'s {s.metric} minus the "
        f"variant's, paired by seed (positive: the op helps). The {len(table)} variants against the full policy "
        f"are one family, fixed before the runs: p-values are Holm-corrected over the {m} testable, and intervals "
        f"are Bonferroni-simultaneous paired t intervals at {1 - 0.05 / max(m, 1):.2%}. The last column is the "
        f"smallest contribution each comparison detects with {POWER:.0%} power at its seeds."))
    out.append(Table(pd.DataFrame({
        "op removed": table["op"], "seeds": table["n"].astype(str),
        f"contribution to {s.metric} [simultaneous CI]": table["interval"],
        "p (Holm)": [p_value(v) for v in table["p_holm"]],
        "verdict": [verdict(r) for _, r in table.iterrows()],
        "detectable": [f"{d:.4f}" if math.isfinite(d) else "–" for d in table["detectable"]]})))
    return out


def ablation_lines(s: Sweep) -> list[str]:
    """The ablation's result in one console line: each op's contribution and its verdict."""
    policy = s.params.get("ablation")
    table = contributions(s.full_budget, policy, mode=s.mode) if policy else pd.DataFrame()
    if table.empty:
        return []
    parts = [f"{r['op']} {r['diff']:+.4f} [{r['adj_low']:+.4f}, {r['adj_high']:+.4f}] {verdict(r).split(' (')[0]}"
             for _, r in table.iterrows()]
    return [f"what each op of {policy} contributes to {s.metric} (paired by seed, Holm): " + "; ".join(parts)]
