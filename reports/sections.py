"""The report's sections as blocks: what each section says about a sweep, and the comparison."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from reports import figures, summary
from reports.importance import param_importances
from reports.load import Sweep
from reports.render import Code, Columns, Heading, Image, Para, Table
from reports.stats import asha_rungs, policy_table, rung_table

TOP = 5
COLLAPSE_Z_STD = 0.01


def num(x, digits: int = 4) -> str:
    """A metric for display: fixed decimals, or a dash when missing."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def value(v) -> str:
    """A config value for display: 5 significant digits for floats, as-is otherwise."""
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{v:.5g}"
    return str(v)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "sweep"


def title(sweeps: list[Sweep]) -> str:
    running = " (still running)" if any(s.running for s in sweeps) else ""
    if len(sweeps) == 1:
        return f"Sweep report: {sweeps[0].name}{running}"
    return "Sweep comparison: " + " vs ".join(s.experiment for s in sweeps) + running


def document(sweeps: list[Sweep]) -> list:
    if len(sweeps) == 1:
        return sweep_blocks(sweeps[0], prefix="", level=2)
    columns = [[Heading(s.experiment, 2)] + sweep_blocks(s, prefix=slug(s.experiment) + "_", level=3) for s in sweeps]
    return comparison_blocks(sweeps) + [Columns(columns)]


def sweep_blocks(s: Sweep, prefix: str, level: int) -> list:
    best = summary.best_trial(s)
    best_name = None if best is None else best["trial"]
    return (summary_section(s, level) + best_section(s, level, best)
            + curves_section(s, level, prefix, best_name) + sensitivity_section(s, level, prefix)
            + policy_section(s, level, prefix) + health_section(s, level, prefix))


def summary_rows(s: Sweep) -> list[tuple[str, str]]:
    counts = summary.status_counts(s)
    best = summary.best_trial(s)
    gpu = summary.gpu_hours(s)
    asha = s.asha
    state = "still running" if s.running else s.state
    rows = [
        ("Experiment", s.experiment),
        ("Sweep", s.name),
        ("State", state),
        ("Dataset", summary.config_value(s, "dataset")),
        ("Backbone", summary.config_value(s, "backbone")),
        ("Metric", f"{s.metric} ({s.mode})"),
        ("Evaluated on", summary.eval_split(s)),
        ("Search", f"{s.params.get('search', '?')}, num_samples {s.params.get('num_samples', '?')}"),
        ("ASHA", f"grace {asha[0]}, reduction factor {asha[1]}, max {asha[2]} epochs" if asha else "none"),
        ("Swept", ", ".join(s.swept) or "none"),
        ("Trials", str(len(s.trials))),
    ]
    rows += [(status, str(n)) for status, n in counts.items()]
    rows += [
        ("Compute (trial-hours)", f"{summary.trial_hours(s):.2f}"),
        ("GPU-hours", f"{gpu:.2f}" if gpu is not None else "no GPUs used"),
        ("Best metric", f"{num(best['final_metric'])} ({best['trial']})" if best is not None
         else ("none yet" if s.running else "none")),
        ("Wall time", summary.duration(s.wall_s) + (" so far" if s.running else "")),
    ]
    return rows


def summary_section(s: Sweep, level: int) -> list:
    out = [Heading("Summary", level)]
    if s.running:
        out.append(Para("This sweep is still running: reported as it stands at load time.", note=True))
    elif s.state == "interrupted":
        out.append(Para("This sweep was interrupted: its driver stopped before the end; trials still marked "
                        "running stopped with it.", note=True))
    if s.other_parents:
        out.append(Para(f"The experiment holds {s.other_parents + 1} sweeps; this report covers the latest.", note=True))
    out.append(Table(pd.DataFrame(summary_rows(s), columns=["", "value"])))
    if s.finished.empty:
        out.append(Para(f"No trial has {'finished yet' if s.running else 'finished'} (none completed or stopped "
                        "early with a metric value).", note=True))
    return out


def best_section(s: Sweep, level: int, best) -> list:
    out = [Heading("Best configurations", level)]
    t = s.trials
    unranked = t[t["status"].isin(["completed", "stopped_early"]) & ~t["trial"].isin(s.finished["trial"])]
    if len(unranked):
        out.append(Para(f"{len(unranked)} trial(s) ended without a finite {s.metric} and are not ranked: "
                        f"{', '.join(unranked['trial'])}.", note=True))
    ranked = summary.ranked(s)
    if ranked.empty:
        return out + [Para("No finished trial: nothing to rank.", note=True)]
    cols = summary.varied_columns(s)
    rows = []
    for rank, (_, t) in enumerate(ranked.head(TOP).iterrows(), start=1):
        row = {"rank": rank, "trial": t["trial"], "status": t["status"]}
        row.update({c: value(t[c]) for c in cols})
        row.update({f"final {s.metric}": num(t["final_metric"]), f"best {s.metric}": num(t["best_metric"]),
                    "best epoch": value(int(t["best_epoch"])), "epochs run": str(int(t["epochs_run"]))})
        rows.append(row)
    out.append(Para(f"Top {len(rows)} of {len(ranked)} finished trials by best {s.metric} over epochs ({s.mode})."))
    out.append(Table(pd.DataFrame(rows)))
    out.append(Para(f"Reproduce the best trial, {best['trial']}, with every parameter its run recorded:"))
    out.append(Code(summary.train_command(s, best["trial"])))
    return out


def curves_section(s: Sweep, level: int, prefix: str, best_name) -> list:
    out = [Heading("Learning curves", level)]
    if s.curves.empty or s.metric not in s.curves:
        return out + [Para(f"No epoch of {s.metric} has been logged yet.", note=True)]
    asha = s.asha
    rungs = asha_rungs(*asha) if asha else []
    out.append(Image(f"{prefix}curves.png", figures.learning_curves(s, rungs, best_name), f"{s.metric} per epoch"))
    out.append(Para("Solid: completed; grey dashed: stopped early by ASHA; red dotted: diverged or failed; "
                    "thick: the best trial."))
    if not asha:
        return out + [Para("The sweep used no ASHA scheduler: no rungs.", note=True)]
    grace, rf, max_t = asha
    table = rung_table(s.curves, s.metric, grace, rf, max_t, s.mode)
    q = f"(1 - 1/{rf}) quantile" if s.mode == "max" else f"1/{rf} quantile"
    out.append(Para(f"ASHA rungs (grace {grace}, reduction factor {rf}, max {max_t} epochs). Cut-off: the {q} "
                    f"of {s.metric} over the trials that reached the rung, at that epoch; a trial below it "
                    "(above, for min) stops there. The last rung is max_epochs, where every trial stops anyway."))
    shown = pd.DataFrame({"rung (epoch)": table["rung"].astype(str) + np.where(table["final"], " (max)", ""),
                          "trials reached": table["reached"].astype(str),
                          "cut-off": [num(c) for c in table["cutoff"]]})
    return out + [Table(shown)]


def sensitivity_section(s: Sweep, level: int, prefix: str) -> list:
    out = [Heading("Sensitivity", level)]
    fields = [f for f in s.swept if f in s.trials]
    png = figures.sensitivity(s, fields)
    if png is None:
        out.append(Para("No finished trial or no swept parameter: nothing to plot.", note=True))
    else:
        out.append(Image(f"{prefix}sensitivity.png", png, f"best {s.metric} against each swept parameter"))
        out.append(Para(f"Best {s.metric} of each finished trial against each swept value; hollow markers: "
                        "stopped early" + ("; colour: policy." if figures.policy_colours(s) else ".")))
    imp, note = param_importances(s)
    if imp is None:
        return out + [Para(note, note=True)]
    out.append(Para(note))
    out.append(Table(pd.DataFrame({"parameter": list(imp), "importance": [num(v, 3) for v in imp.values()]})))
    return out + [Image(f"{prefix}importances.png", figures.importances(imp), "parameter importances")]


def policy_section(s: Sweep, level: int, prefix: str) -> list:
    out = [Heading("Augmentation policies", level)]
    names = summary.policies(s)
    if len(names) < 2:
        return out + [Para(f"One policy ({', '.join(names) or 'unknown'}): nothing to compare.", note=True)]
    table = policy_table(s.full_budget, mode=s.mode)
    if table.empty:
        return out + [Para("No finished trial: no policy can be compared yet.", note=True)]
    out.append(Para(f"Mean best {s.metric} per policy over its finished trials (seeds), with a 95% percentile "
                    "bootstrap CI (10000 resamples, seed 0), best first; then best − each other policy with a "
                    "bootstrap CI of the difference."))
    if (table["n"] < 2).all():
        out.append(Para("One seed per policy: no interval can be given; the ranking is of single runs.", note=True))
    out.append(Table(policy_display(table)))
    return out + [Image(f"{prefix}policies.png", figures.policy_means(table, s.finished, s.metric),
                        f"mean best {s.metric} per policy")]


def policy_display(table: pd.DataFrame) -> pd.DataFrame:
    def excl(v):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else ("yes" if v else "no")

    return pd.DataFrame({
        "rank": table["rank"].astype(str), "policy": table["policy"], "n": table["n"].astype(str),
        "mean [95% CI]": table["interval"],
        "best − this [95% CI]": [d or "–" for d in table["diff_interval"]],
        "CI excludes 0": [excl(v) for v in table["excludes_zero"]],
    })


def health_section(s: Sweep, level: int, prefix: str) -> list:
    out = [Heading("Health", level)]
    t = s.trials
    diverged = t[t["status"] == "diverged"]
    collapsed = t[~t["status"].isin(["diverged", "failed"]) & (t["final_z_std"] < COLLAPSE_Z_STD)]
    failed = t[t["status"] == "failed"]
    out.append(Para(f"Collapsed: a trial that did not diverge but ended with z_std below {COLLAPSE_Z_STD:g} "
                    "(z_std: mean per-dimension std of the L2-normalised projections; about 1/sqrt(dim) when "
                    "spread, 0 when every image maps to one point)."))
    if diverged.empty and collapsed.empty and failed.empty:
        out.append(Para("No trial diverged, collapsed or failed."))
    for label, rows in (("Diverged", diverged), ("Collapsed", collapsed), ("Failed", failed)):
        if rows.empty:
            continue
        out.append(Para(f"{label}: {len(rows)} trial{'s' if len(rows) != 1 else ''}."))
        out.append(Table(pd.DataFrame({
            "trial": rows["trial"], "status": rows["status"], "epochs run": rows["epochs_run"].astype(str),
            "final loss": [num(v) for v in rows["final_loss"]], "final z_std": [num(v) for v in rows["final_z_std"]],
            "error": [e or "–" for e in rows["error"]],
        })))
    png = figures.z_std_curves(s, COLLAPSE_Z_STD)
    if png is not None and not s.curves.empty:
        out.append(Image(f"{prefix}z_std.png", png, "z_std per epoch"))
    return out


def comparison_blocks(sweeps: list[Sweep]) -> list:
    out = [Heading("Comparison", 2)]
    metrics = {f"{s.metric} ({s.mode})" for s in sweeps}
    if len(metrics) > 1:
        out.append(Para(f"The sweeps use different metrics ({', '.join(sorted(metrics))}): compare with care.", note=True))
    rows = {s.experiment: dict(summary_rows(s)) for s in sweeps}
    labels = list(dict.fromkeys(label for r in rows.values() for label in r))  # an odd status adds a row
    table = pd.DataFrame({"": labels})
    for exp, r in rows.items():
        table[exp] = [r.get(label, "0") for label in labels]
    out.append(Table(table))
    out.append(Heading("Best of each", 3))
    best_rows = []
    for s in sweeps:
        b = summary.best_trial(s)
        if b is None:
            best_rows.append({"experiment": s.experiment, "trial": "none finished", "best": "–", "values": "–"})
            continue
        vals = ", ".join(f"{c}={value(b[c])}" for c in summary.varied_columns(s))
        best_rows.append({"experiment": s.experiment, "trial": b["trial"],
                          "best": f"{num(b['final_metric'])} {s.metric}", "values": vals or "–"})
    out.append(Table(pd.DataFrame(best_rows)))
    out.append(Heading("Policies side by side", 3))
    tables = {s.experiment: policy_table(s.full_budget, mode=s.mode) for s in sweeps}
    names = sorted({p for t in tables.values() for p in t["policy"]})
    if not names:
        return out + [Para("No finished trial in any sweep: no policy to compare.", note=True)]
    aligned = pd.DataFrame({"policy": names})
    for exp, t in tables.items():
        by = {r["policy"]: f"{r['rank']}. {r['interval']}" + (f" (n = {r['n']})" if np.isfinite(r["ci_low"]) else "")
              for _, r in t.iterrows()}
        aligned[exp] = [by.get(p, "–") for p in names]
    out.append(Para("Rank. mean best metric [95% bootstrap CI] (n trials) of each policy in each sweep."))
    return out + [Table(aligned)]
