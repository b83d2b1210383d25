"""The Result section, the report's headline: the final stage's test result over new seeds beside the
baselines (or, before a final stage, the search's optimistic best), and the same in a few console lines."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports import summary
from reports.ablation import ablation_lines
from reports.baselines import BASELINE_FEATURES, baseline_blocks, baseline_verdicts, by_seed
from reports.comparisons import (
    compared,
    compared_fields,
    comparison_blocks_of,
    comparison_headline,
    comparison_of,
    comparison_texts,
    is_comparison_sweep,
)
from reports.load import Sweep
from reports.numbers import DASH, bounds, mean_interval, num, value
from reports.render import Heading, Para, Table
from reports.stats import compare_arms, t_interval


def interval(values, digits: int = 4) -> str:
    """mean [Student-t 95% interval] (n) of the finite values."""
    mean, low, high = t_interval(values)
    return mean_interval(mean, low, high, int(np.isfinite(np.asarray(values, dtype=float)).sum()), digits)


def swept_values(s: Sweep, row) -> str:
    return ", ".join(f"{c}={value(row[c])}" for c in summary.varied_columns(s) if c != "seed" and c in row) or DASH


def result_section(s: Sweep, level: int) -> list:
    """The headline: the final stage's test result, beside the baselines and the metric's noise."""
    out = [Heading("Result", level)]
    f = s.finals_done
    if is_comparison_sweep(s):
        return out + comparison_headline(s)
    if f.empty:
        best = summary.best_trial(s)
        if best is None:
            return out + [Para("No trial ran the full budget with a finite metric: there is no result.", note=True)]
        why = ("the final stage has not completed" if len(s.finals)
               else "this sweep ran no final stage")
        out.append(Para(f"Best search value: {s.metric} {num(best['final_metric'])} ({best['trial']}: "
                        f"{swept_values(s, best)}), on the {summary.eval_split(s)}. It is the best of "
                        f"{len(s.full_budget)} full-budget trials on one seed and one validation split, so it is "
                        f"optimistic; {why}. Re-train it on new seeds and the test split with "
                        f"`byol-sweep finalize {s.name}`.", note=True))
        one = best.to_frame().T
        return out + baseline_blocks(s, summary.search_split(s), by_seed(one, "final_metric"),
                                     by_seed(one, "linear_probe_acc"))
    groups = final_groups(s)
    per = s.final_per
    rows = []
    for group, rank, g in groups:
        first = g.iloc[0]
        row = {}
        if per:
            row[per] = group
        row.update({"rank in search": str(rank), "trial re-trained": str(first["final_source_trial"]),
                    "configuration": swept_values(s, first),
                    f"search {s.metric} (val)": num(first["final_source_value"]),
                    f"test {s.metric} [95% CI]": interval(g["final_metric"]),
                    "test linear probe [95% CI]": interval(g["linear_probe_acc"])})
        rows.append(row)
    lead_group, _, lead = lead_final_group(s, groups)
    first = lead.iloc[0]
    seeds = sorted(int(v) for v in lead["seed"].dropna())
    label = f"{per} {lead_group}: " if per else ""
    out.append(Para(f"Selected configuration ({label}trial {first['final_source_trial']}, "
                    f"{swept_values(s, first)}): test {s.metric} {interval(lead['final_metric'])}, the mean over "
                    f"{len(lead)} new seed(s) ({', '.join(map(str, seeds))}) with a Student-t 95% interval, "
                    f"trained for the full budget and measured on the whole test split; its value in the "
                    f"search was {num(first['final_source_value'])} on the validation split (the best of "
                    f"{len(s.full_budget)} full-budget trials on one seed: optimistic)."))
    out.append(Table(pd.DataFrame(rows)))
    if len(groups) > 1:
        out.append(Para("The selected configuration is the search's choice, by its objective on the validation split; "
                        "the other configurations re-trained are shown beside it, never chosen by their test values."))
    out += per_seed_blocks(s, lead)
    if len(s.finals) > len(f):
        out.append(Para(f"{len(s.finals) - len(f)} final-stage run(s) did not complete and are left out.", note=True))
    out += baseline_blocks(s, "test", by_seed(lead, "final_metric"), by_seed(lead, "linear_probe_acc"))
    if per and len(groups) > 1:
        comparison = compare_arms(f[f["final_rank"] == 1], per, mode=s.mode, pair="seed")
        notes = [n for n in comparison.notes if "were not checked" not in n]
        out.append(Para(f"Each {per} re-trained with its own tuned best configuration on the same seeds, so the "
                        f"{per}s are compared at equal tuning budget (their other fields differ on purpose)."))
        out += comparison_blocks_of(comparison, s.metric, notes)
    return out


def final_groups(s: Sweep) -> list[tuple[str, int, pd.DataFrame]]:
    """(group, rank in the search, its completed final runs) of each configuration re-trained."""
    return [(group, int(rank), g) for (group, rank), g in s.finals_done.groupby(["final_group", "final_rank"], sort=True)]


def lead_final_group(s: Sweep, groups: list[tuple[str, int, pd.DataFrame]]) -> tuple[str, int, pd.DataFrame]:
    """The selected configuration: the search's choice, by its objective on the validation split (the
    best search value among the configurations each group ranked first), never by a test value."""
    sign = -1.0 if s.mode == "max" else 1.0
    return min(groups, key=lambda x: (x[1], sign * float(x[2]["final_source_value"].iloc[0]), str(x[0])))


def per_seed_blocks(s: Sweep, lead: pd.DataFrame) -> list:
    """Each new seed's test values beside the untrained encoder of the same seed's init, and their SD."""
    columns = [("final_metric", f"test {s.metric}"), ("linear_probe_acc", "test linear probe")]
    baselines = [(key, f"untrained encoder {what}") for key, what in (("untrained", s.metric),
                 ("untrained_bn", f"{s.metric}, BatchNorm calibrated")) if s.seed_baselines(key, "test")]
    seeds = sorted(by_seed(lead, "final_metric"))
    if not seeds:
        return []
    table = {"seed": [str(k) for k in seeds] + ["SD over the seeds"]}
    for column, label in columns:
        values = by_seed(lead, column)
        table[label] = [num(values.get(k)) for k in seeds] + [num(_sd([values.get(k) for k in seeds]))]
    for key, label in baselines:
        values = s.seed_baselines(key, "test")
        table[label] = [num(values.get(k)) for k in seeds] + [num(_sd([values.get(k) for k in seeds]))]
    return [Table(pd.DataFrame(table))]


def _sd(values) -> float:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def result_lines(s: Sweep) -> list[str]:
    """The final stage's result in a few console lines: the selected configuration's test values
    over the new seeds and which baselines they beat (the report's Result, in short)."""
    if is_comparison_sweep(s):
        lines = ablation_lines(s)
        for field in compared_fields(s):
            for value, what in (("final_metric", s.metric), ("linear_probe_acc", "linear probe")):
                c = comparison_of(s, field, value)
                if compared(c):
                    arms, diffs = comparison_texts(c)
                    lines.append(f"result on the {summary.search_split(s)} split, {what} by {field}: {arms}; "
                                 f"paired by seed: {diffs}")
        return lines
    if s.finals_done.empty:
        return []
    _, _, lead = lead_final_group(s, final_groups(s))
    n = s.queries("test")
    lines = [f"result on the test split, {len(lead)} new seed(s): {s.metric} {interval(lead['final_metric'])}, "
             f"linear probe {interval(lead['linear_probe_acc'])} ({swept_values(s, lead.iloc[0])})"]
    for column, suffix, what in (("final_metric", "", s.metric), ("linear_probe_acc", "_probe", "linear probe")):
        trained = by_seed(lead, column)
        features = [(key + suffix, label) for key, label in BASELINE_FEATURES]
        verdicts = baseline_verdicts(s, "test", n, trained, features) if n and trained else []
        if verdicts:
            lines.append(f"  {what} minus baselines: " + "; ".join(
                f"{label} {d.diff:+.4f} {bounds(d.low, d.high)} {'beaten' if d.beaten else 'NOT beaten'}"
                for label, d in verdicts))
    return lines
