"""Comparisons of arms within one sweep (each grid field, and the policy when it varies), paired by seed:
the Comparisons section, and the headline of a sweep whose result is such a comparison."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports import summary
from reports.baselines import baseline_blocks, by_seed
from reports.load import Sweep
from reports.numbers import DASH, p_relation, p_value
from reports.plotting import PALETTE, new_figure, to_png
from reports.render import Heading, Image, Para, Table, slug
from reports.stats import compare_arms
from vocabulary import RUNTIME_FIELDS

FIXED_TARGET_TAU = 1.0  # tau_base that never moves the target: the paper's fixed random target

FIXED_TARGET_NOTE = ("tau_base 1.0 never moves the target network: it is a fixed random target, BYOL's control (the "
                     "paper's ablation of the target decay rate). A moving target that does not clearly beat it has "
                     "not shown the bootstrap at work.")


def compared_fields(s: Sweep) -> list[str]:
    """The grid fields (and the policy, when it varies) the report compares across seeds."""
    fields = [f for f in s.grid_fields if f != "seed"]
    if "policy" not in fields and len(summary.policies(s)) > 1:
        fields.append("policy")
    return fields


def comparison_of(s: Sweep, field: str, value: str = "final_metric"):
    config_columns = [c for c in s.param_names if c in s.full_budget and c not in RUNTIME_FIELDS]
    return compare_arms(s.full_budget, field, value=value, mode=s.mode, pair="seed", config_columns=config_columns)


def is_comparison_sweep(s: Sweep) -> bool:
    """A sweep that samples nothing and compares grid arms on shared seeds, with no final stage done:
    its result is that comparison."""
    return s.finals_done.empty and len(s.full_budget) > 0 and bool(compared_fields(s)) and set(s.swept) <= set(s.grid_fields)


def comparison_texts(c) -> tuple[str, str]:
    """(each arm's mean and interval, the differences from the best arm paired by seed) of a Comparison."""
    arms = "; ".join(f"{a}: {text} (n = {n})" for a, text, n in zip(c.arms["arm"], c.arms["interval"], c.arms["n"]))
    diffs = "; ".join(
        f"{a} − {b} = {text} over {n} common seeds, "
        + ("too few seeds to test" if sig is None else
           f"{'significant' if sig else 'not significant'} (Holm p {p_relation(ph)})")
        for a, b, text, n, sig, ph in zip(c.vs_best["a"], c.vs_best["b"], c.vs_best["interval"], c.vs_best["n"],
                                          c.vs_best["significant"], c.vs_best["p_holm"]))
    return arms, diffs


def compared(c) -> bool:
    return c.comparable and c.best is not None and len(c.vs_best) > 0


def has_fixed_target_arm(field: str, comparison) -> bool:
    return field == "tau_base" and FIXED_TARGET_TAU in set(pd.to_numeric(comparison.arms.get("arm", []), errors="coerce"))


def comparison_headline(s: Sweep) -> list:
    """The result of a sweep that samples nothing and compares grid arms on the same seeds: the
    comparison itself (a best trial of such a sweep answers no question)."""
    out, best_values, best_probes = [], None, None
    for field in compared_fields(s):
        c = comparison_of(s, field)
        arms, diffs = comparison_texts(c)
        lead = (f"This sweep samples nothing: it compares {field} at one configuration on the same seeds, so its "
                f"result is that comparison, on the {summary.eval_split(s)}. Mean {s.metric} [95% t CI]: {arms or 'no arm'}.")
        if not compared(c):
            out.append(Para(f"{lead} The arms are not compared (see Comparisons).", note=True))
            continue
        out.append(Para(f"{lead} Paired by seed, simultaneous 95% intervals: {diffs}."
                        + (f" {FIXED_TARGET_NOTE}" if has_fixed_target_arm(field, c) else "")))
        probe = comparison_of(s, field, "linear_probe_acc")
        if compared(probe):
            probe_arms, probe_diffs = comparison_texts(probe)
            out.append(Para(f"The same comparison on the linear probe (a second view of the same runs, tested apart "
                            f"from {s.metric}): {probe_arms}. Paired by seed: {probe_diffs}."))
        if best_values is None:
            arm = s.full_budget[s.full_budget[field] == c.best]
            best_values, best_probes = by_seed(arm, "final_metric"), by_seed(arm, "linear_probe_acc")
    if best_values:
        out += baseline_blocks(s, summary.search_split(s), best_values, best_probes)
    return out


def comparisons_section(s: Sweep, level: int, prefix: str) -> list:
    """Each grid field (and the policy, when it varies) compared across full-budget trials."""
    fields = compared_fields(s)
    if not fields:
        return []
    out = [Heading("Comparisons", level)]
    for field in fields:
        out.append(Heading(field, level + 1))
        comparison = comparison_of(s, field)
        out += comparison_blocks_of(comparison, s.metric, comparison.notes)
        if has_fixed_target_arm(field, comparison):
            out.append(Para(FIXED_TARGET_NOTE))
        if comparison.comparable and len(comparison.arms):
            out.append(Image(f"{prefix}{slug(field)}_arms.png",
                             arm_means(comparison.arms, s.full_budget, field, s.metric), f"{field} means"))
    return out


def comparison_blocks_of(c, metric: str, notes: list[str]) -> list:
    """A Comparison as tables: each arm's mean and interval, then best − each other arm."""
    out = []
    if len(c.arms):
        out.append(Table(pd.DataFrame({
            "rank": c.arms["rank"].astype(str), c.field: c.arms["arm"].astype(str), "n": c.arms["n"].astype(str),
            f"mean {metric} [95% t CI]": c.arms["interval"]})))
    if c.comparable and len(c.vs_best):
        out.append(Table(pd.DataFrame({
            "best − this": [f"{a} − {b}" for a, b in zip(c.vs_best["a"], c.vs_best["b"])],
            "common seeds": c.vs_best["n"].astype(str),
            "difference [simultaneous CI]": c.vs_best["interval"],
            "p (Holm)": [p_value(v) for v in c.vs_best["p_holm"]],
            "significant": [DASH if v is None else ("yes" if v else "no") for v in c.vs_best["significant"]],
        })))
    return out + [Para(" ".join(notes), note=not c.comparable)]


def arm_means(arms: pd.DataFrame, done: pd.DataFrame, field: str, metric: str) -> bytes:
    """Each arm's mean with its Student-t interval (compare_arms' arms table), over its trials' points."""
    fig = new_figure(7, 0.5 * len(arms) + 1.5)
    ax = fig.add_subplot()
    rows = arms.iloc[::-1].reset_index(drop=True)
    rng = np.random.default_rng(0)
    for i, r in rows.iterrows():
        pts = done.loc[done[field].astype(str) == str(r["arm"]), "final_metric"].to_numpy(dtype=float)
        ax.scatter(pts, i + rng.uniform(-0.12, 0.12, len(pts)), s=14, color="#9a9a9a", zorder=2)
        if np.isfinite(r["ci_low"]):
            ax.errorbar(r["mean"], i, xerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], fmt="o",
                        color=PALETTE[0], capsize=4, zorder=3)
        else:
            ax.plot(r["mean"], i, "o", color=PALETTE[0], zorder=3)
    ax.set_yticks(range(len(rows)), [f"{a} (n={n})" for a, n in zip(rows["arm"], rows["n"])], fontsize=9)
    ax.set_xlabel(f"{metric} at the last epoch: mean and 95% Student-t interval; grey: trials")
    ax.grid(axis="x", alpha=0.25)
    return to_png(fig)
