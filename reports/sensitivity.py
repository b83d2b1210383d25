"""The Sensitivity section: the objective against each swept parameter, and the parameters' importances."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from reports.load import Sweep
from reports.numbers import bounds, category, num
from reports.plotting import (
    PALETTE,
    draw_noise,
    metric_queries,
    new_figure,
    noise_words,
    policy_colours,
    to_png,
    too_few_for_effect_plots,
)
from reports.render import Heading, Image, Para, Table


def sensitivity_section(s: Sweep, level: int, prefix: str, imp, imp_note: str) -> list:
    out = [Heading("Sensitivity", level)]
    fields = [f for f in s.swept if f in s.trials]
    too_few = too_few_for_effect_plots(s, "sensitivity plot") if len(s.full_budget) else None
    png = None if too_few else sensitivity(s, fields)
    if too_few:
        out.append(Para(too_few, note=True))
    elif png is None:
        out.append(Para("No trial ran the full budget, or nothing was swept: nothing to plot.", note=True))
    else:
        n = metric_queries(s)
        out.append(Image(f"{prefix}sensitivity.png", png, f"{s.metric} against each swept parameter"))
        out.append(Para(f"{s.metric} at the last epoch of each trial that ran the full budget, against each swept "
                        "value" + ("; colour: policy" if policy_colours(s) else "")
                        + (f"; bars: {noise_words(n)}." if n else ".")))
    return out + importance_blocks(imp, imp_note, prefix)


def importance_blocks(imp, note: str, prefix: str) -> list:
    if imp is None:
        return [Para(note, note=True)]
    t = imp.table
    return [Para(note), Table(pd.DataFrame({
        "parameter": t["parameter"], "importance": [num(v, 3) for v in t["importance"]],
        f"bootstrap {imp.level:.0%} interval": [bounds(lo, hi, 3) for lo, hi in zip(t["low"], t["high"])]})),
        Image(f"{prefix}importances.png", importances(dict(imp)), "parameter importances")]


def sensitivity(sweep: Sweep, fields: list[str]) -> bytes | None:
    done = sweep.full_budget
    fields = [f for f in fields if f in done]
    if done.empty or not fields:
        return None
    ncols = min(3, len(fields))
    nrows = math.ceil(len(fields) / ncols)
    fig = new_figure(4.0 * ncols, 3.3 * nrows)
    colours = policy_colours(sweep)
    n_queries = metric_queries(sweep)
    for k, name in enumerate(fields):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        spec = sweep.space.get(name, {})
        _sensitivity_panel(ax, done, name, spec, sweep.metric, colours, n_queries)
    if colours:
        handles = [Line2D([], [], marker="o", ls="", color=c, label=p) for p, c in colours.items()]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
        fig.subplots_adjust(top=1 - 0.45 / (3.3 * nrows))  # the legend's row, 0.45 in above the panels
    fig.subplots_adjust(wspace=0.3, hspace=0.45)  # cheaper than tight_layout (a second layout pass of every tick)
    return to_png(fig)


def _sensitivity_panel(ax, done: pd.DataFrame, name: str, spec: dict, metric: str, colours,
                       n_queries: int | None) -> None:
    y = done["final_metric"].to_numpy(dtype=float)
    colour = [colours[str(p)] if colours else PALETTE[0] for p in done["policy"]]
    hollow = (done["status"] == "stopped_early").to_numpy()
    kind = spec.get("type")
    numeric = pd.to_numeric(done[name], errors="coerce")
    if kind in ("choice", "grid") or numeric.isna().any() or done[name].dtype == bool:
        cats = [category(v) for v in (spec.get("values") or sorted(done[name].unique(), key=str))]
        cats += sorted({category(v) for v in done[name]} - set(cats))
        pos = np.array([cats.index(category(v)) for v in done[name]], dtype=float)
        groups = [y[pos == i] for i in range(len(cats))]
        if max(len(g) for g in groups) >= 3:
            ax.boxplot([g if len(g) else [np.nan] for g in groups], positions=range(len(cats)), widths=0.5,
                       showfliers=False, medianprops=dict(color="#333333"), boxprops=dict(color="#999999"),
                       whiskerprops=dict(color="#999999"), capprops=dict(color="#999999"))
        x = pos + np.random.default_rng(0).uniform(-0.15, 0.15, len(pos))
        ax.set_xticks(range(len(cats)), cats, rotation=30 if len(cats) > 4 else 0, fontsize=8)
        ax.set_xlim(-0.6, len(cats) - 0.4)
        label = name
    else:
        x = numeric.to_numpy(dtype=float)
        label = name
        if kind == "one_minus_loguniform":
            x, label = 1 - x, f"1 - {name}"
        if kind in ("loguniform", "one_minus_loguniform") and (x > 0).all():
            ax.set_xscale("log")
            decades = math.log10(x.max() / x.min()) if len(x) else 0.0
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.scatter(x[~hollow], y[~hollow], c=[colour[i] for i in np.flatnonzero(~hollow)], s=28, zorder=3)
    ax.scatter(x[hollow], y[hollow], facecolors="none", edgecolors=[colour[i] for i in np.flatnonzero(hollow)],
               s=28, zorder=3)
    draw_noise(ax, x, y, n_queries)
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} (last epoch)")
    ax.grid(alpha=0.25)


def importances(values: dict[str, float]) -> bytes:
    names = list(values)[::-1]
    fig = new_figure(6, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    ax.barh(names, [values[n] for n in names], color=PALETTE[0])
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.25)
    return to_png(fig)
