"""The Comparison of several sweeps in one report: their summaries side by side, the best of each, their
curves overlaid on shared axes, and each one's policies."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from reports import summary
from reports.load import Sweep
from reports.numbers import DASH, num, value
from reports.plotting import PALETTE, new_figure, to_png
from reports.render import Heading, Image, Para, Table
from reports.stats import compare_arms


def across_sweeps_section(sweeps: list[Sweep]) -> list:
    out = [Heading("Comparison", 2)]
    metrics = {f"{s.metric} ({s.mode})" for s in sweeps}
    if len(metrics) > 1:
        out.append(Para(f"The sweeps use different metrics ({', '.join(sorted(metrics))}): compare with care.", note=True))
    rows = {s.experiment: dict(summary.summary_rows(s)) for s in sweeps}
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
            best_rows.append({"experiment": s.experiment, "trial": "none finished", "best": DASH, "values": DASH})
            continue
        vals = ", ".join(f"{c}={value(b[c])}" for c in summary.varied_columns(s))
        best_rows.append({"experiment": s.experiment, "trial": b["trial"],
                          "best": f"{num(b['final_metric'])} {s.metric}", "values": vals or DASH})
    out.append(Table(pd.DataFrame(best_rows)))
    png = overlaid_curves(sweeps)
    if png is not None:
        out.append(Image("comparison_curves.png", png, "learning curves of the sweeps, overlaid"))
        out.append(Para("Each sweep's trials on shared axes: solid, the trials that ran the full budget; faint, those "
                        "stopped early. The per-sweep figures below share the same y-axis."))
    out.append(Heading("Policies side by side", 3))
    tables = {s.experiment: compare_arms(s.full_budget, "policy", mode=s.mode).arms for s in sweeps}
    names = sorted({str(p) for t in tables.values() for p in t["arm"]})
    if not names:
        return out + [Para("No full-budget trial in any sweep: no policy to compare.", note=True)]
    aligned = pd.DataFrame({"policy": names})
    for exp, t in tables.items():
        by = {str(r["arm"]): f"{r['rank']}. {r['interval']} (n = {r['n']})" for _, r in t.iterrows()}
        aligned[exp] = [by.get(p, DASH) for p in names]
    out.append(Para("Rank. mean metric at the last epoch [95% Student-t interval] (n full-budget trials) of each "
                    "policy in each sweep: a description of each sweep, not a test across sweeps."))
    return out + [Table(aligned)]


def shared_limits(sweeps: list[Sweep]) -> tuple[float, float] | None:
    """One y-range for sweeps that report the same metric, so their figures read alike."""
    if len({s.metric for s in sweeps}) != 1:
        return None
    values = np.concatenate([s.curves[s.metric].to_numpy(dtype=float) for s in sweeps if s.metric in s.curves] or [[]])
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    pad = 0.05 * (np.ptp(values) or 1.0)
    return float(values.min() - pad), float(values.max() + pad)


def overlaid_curves(sweeps: list[Sweep]) -> bytes | None:
    """Every sweep's learning curves on one pair of axes, a colour per sweep."""
    if len({s.metric for s in sweeps}) != 1 or all(s.curves.empty for s in sweeps):
        return None
    metric = sweeps[0].metric
    fig = new_figure(8, 4.2)
    ax = fig.add_subplot()
    handles = []
    for k, s in enumerate(sweeps):
        if metric not in s.curves:
            continue
        colour = PALETTE[k % len(PALETTE)]
        status = dict(zip(s.trials["trial"], s.trials["status"]))
        full, other = [], []
        for trial, c in s.curves.groupby("trial", sort=True):
            xy = np.column_stack([c["epoch"].to_numpy(dtype=float), c[metric].to_numpy(dtype=float)])
            (full if status.get(trial) == "completed" else other).append(xy)
        ax.add_collection(LineCollection(other, colors=colour, linewidths=0.7, alpha=0.25, linestyles="--"))
        ax.add_collection(LineCollection(full, colors=colour, linewidths=1.5, alpha=0.9))
        handles.append(Line2D([], [], color=colour, lw=2, label=s.experiment))
    ax.autoscale_view()
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.25)
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_png(fig)
