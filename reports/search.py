"""The Search section: how the search went (the objective in trial order) and the swept values of the
full-budget trials (parallel coordinates, the two leading parameters against each other)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize

from reports.load import Sweep
from reports.numbers import category
from reports.plotting import (
    NOISE_LEVEL,
    NOISE_STYLE,
    PALETTE,
    draw_noise,
    metric_queries,
    new_figure,
    noise_band,
    noise_words,
    to_png,
    too_few_for_effect_plots,
)
from reports.render import Heading, Image, Para
from reports.summary import best_trial
from vocabulary import FINISHED


def search_section(s: Sweep, level: int, prefix: str, imp) -> list:
    """How the search went: the objective in trial order, and the swept values of the full-budget trials."""
    out = [Heading("Search", level)]
    startup = startup_trials(s)
    png = optimisation_history(s, startup)
    if png is None:
        return out + [Para("No trial has finished: no history yet.", note=True)]
    out.append(Image(f"{prefix}history.png", png, "optimisation history"))
    n_queries = metric_queries(s)
    if n_queries and len(s.full_budget):
        out.append(Para(f"Bars on the full-budget trials: {noise_words(n_queries)}."))
    if startup:
        out.append(Para(origin_sentence(s, startup)))
    too_few = too_few_for_effect_plots(s, "parallel-coordinates or interaction plot")
    if too_few:
        return out + [Para(too_few, note=True)]
    fields = [f for f in s.swept if f != "seed"]
    png = parallel_coordinates(s, fields)
    if png is not None:
        out.append(Image(f"{prefix}parallel.png", png, "parallel coordinates"))
        if n_queries:
            out.append(Para(f"On the {s.metric} axis, bars: {noise_words(n_queries)}; that axis spans every bar."))
    numeric = [f for f in fields if f in s.full_budget and s.full_budget[f].nunique(dropna=True) > 1]
    pair = [f for f in (imp or {}) if f in numeric][:2] if imp is not None else []
    pair = pair if len(pair) == 2 else numeric[:2]
    why = "the two most important parameters" if imp is not None and len(pair) == 2 and list(imp)[:2] == pair \
        else "the first two swept parameters (too few full-budget trials to rank them)"
    if len(pair) == 2:
        png = interaction(s, pair[0], pair[1])
        if png is not None:
            out.append(Image(f"{prefix}interaction.png", png, f"{pair[0]} and {pair[1]}"))
            out.append(Para(f"{pair[0]} against {pair[1]}, {why}; each full-budget trial coloured by its "
                            f"{s.metric}, with a contour interpolated between them where there are enough"
                            + (f". The colour scale spans every trial's {NOISE_LEVEL:.0%} binomial interval over "
                               f"{n_queries} queries; hatched on the colour bar: the best trial's." if n_queries
                               else ".")))
    return out


def startup_trials(s: Sweep) -> int | None:
    """How many trials Optuna's TPE waits for before it stops sampling at random; None for another search."""
    startup = s.params.get("optuna.n_startup_trials")
    return int(float(startup)) if startup and s.params.get("search") == "optuna" else None


def drawn_at_random(s: Sweep, startup: int) -> pd.Series:
    """trial -> whether Optuna drew its configuration at random rather than by TPE. TPE samples at random
    until `startup` trials have finished (completed, or stopped early: Optuna's pruned; a failed or diverged
    trial does not count), so a trial is counted random when fewer than that had ended before it started,
    judged from the runs' start and end times. The first `startup` trials to start are always random."""
    t = s.trials
    start = t["start_ms"].astype(float).to_numpy()
    ended = t["status"].isin(FINISHED).to_numpy()
    end = np.sort((start + 1000 * t["wall_s"].astype(float).to_numpy())[ended])
    # how many ended strictly before each start (a run with no start time: none)
    before = np.where(np.isnan(start), 0, np.searchsorted(end, start, side="left"))
    return pd.Series(before < startup, index=t["trial"].to_numpy())


def origin_sentence(s: Sweep, startup: int) -> str:
    """How many full-budget trials, and whether the best, came from Optuna's random start-up or from TPE."""
    random = drawn_at_random(s, startup)
    full = s.full_budget["trial"]
    n_random = int(random[full].sum())
    n_tpe = len(full) - n_random
    text = (f"Of the {len(full)} full-budget trials, {n_random} {'was' if n_random == 1 else 'were'} drawn at random "
            f"by Optuna's start-up and {n_tpe} by TPE")
    if len(full) and n_tpe == 0:
        text += ": the selection owes nothing to TPE"
    best = best_trial(s)
    if best is not None and len(full) > 1:
        text += f"; the best, {best['trial']}, " + ("was drawn at random" if random[best["trial"]] else "was drawn by TPE")
    return (text + f". TPE samples at random until {startup} trials have ended (completed or stopped early); "
            f"of all {len(random)} trials, {int(random.sum())} were drawn at random (judged from when each started "
            "and the others ended).")


def optimisation_history(sweep: Sweep, startup: int | None) -> bytes | None:
    """Each trial's objective in the order trials started; the best so far over full-budget trials, with
    each one's binomial interval when the metric is an accuracy."""
    done = sweep.finished.sort_values("start_ms", kind="stable")
    if done.empty:
        return None
    order = {t: i + 1 for i, t in enumerate(sweep.trials.sort_values("start_ms", kind="stable")["trial"])}
    fig = new_figure(8, 3.6)
    ax = fig.add_subplot()
    full = done[done["status"] == "completed"]
    early = done[done["status"] != "completed"]
    ax.scatter([order[t] for t in early["trial"]], early["final_metric"], marker="x", color="#9a9a9a", s=16,
               label="stopped early (value at fewer epochs)")
    x = np.array([order[t] for t in full["trial"]])
    y = full["final_metric"].to_numpy(dtype=float)
    ax.scatter(x, y, color=PALETTE[0], s=22, zorder=3, label="ran the full budget")
    if len(y):
        best = np.maximum.accumulate(y) if sweep.mode == "max" else np.minimum.accumulate(y)
        ax.step(x, best, where="post", color="#111111", lw=1.4, label="best so far (full budget)")
    n_queries = metric_queries(sweep)
    draw_noise(ax, x, y, n_queries, f"{NOISE_LEVEL:.0%} binomial interval ({n_queries} queries)")
    if startup:
        n_random = int(drawn_at_random(sweep, startup).sum())
        ax.axvline(n_random + 0.5, color="#d62728", ls="--", lw=1,
                   label=f"end of the random start-up ({n_random} trials; TPE once {startup} had ended)")
    ax.set_xlabel("trial, in the order it started")
    ax.set_ylabel(f"{sweep.metric} (last epoch)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_png(fig)


def parallel_coordinates(sweep: Sweep, fields: list[str]) -> bytes | None:
    """One line per full-budget trial across the swept fields and the objective, coloured by it."""
    done = sweep.full_budget
    fields = [f for f in fields if f in done and done[f].nunique(dropna=True) > 1]
    if len(done) < 2 or not fields:
        return None
    columns, labels, ticks = [], [], []
    for name in fields:
        x, label, cats = _axis_values(sweep, done, name)
        columns.append(x)
        labels.append(label)
        ticks.append(cats)
    y = done["final_metric"].to_numpy(dtype=float)
    columns.append(y)
    labels.append(sweep.metric)
    ticks.append(None)
    data = np.column_stack(columns)
    low, high = data.min(axis=0), data.max(axis=0)
    band = noise_band(y, metric_queries(sweep))
    if band is not None:  # the metric's axis spans every trial's noise, not just the values' spread
        low[-1], high[-1] = min(low[-1], np.nanmin(band[0])), max(high[-1], np.nanmax(band[1]))
    span = np.where(high > low, high - low, 1.0)
    scaled = (data - low) / span
    fig = new_figure(max(6.0, 1.6 * len(labels)), 4.0)
    ax = fig.add_subplot()
    rank = scaled[:, -1]  # colour on the metric axis's own scale: values within noise look alike
    if sweep.mode == "min":
        rank = 1 - rank
    cmap = colormaps["viridis"]
    order = np.argsort(rank)  # the best drawn last, on top
    segments = [np.column_stack([np.arange(len(labels)), scaled[i]]) for i in order]
    ax.add_collection(LineCollection(segments, colors=[cmap(rank[i]) for i in order], linewidths=1.2, alpha=0.8))
    if band is not None:
        last = len(labels) - 1
        ax.errorbar(np.full(len(y), last), scaled[:, -1], yerr=[(y - band[0]) / span[-1], (band[1] - y) / span[-1]],
                    **NOISE_STYLE)
    for k, (lo, hi, cats) in enumerate(zip(low, high, ticks)):
        ax.axvline(k, color="#666666", lw=0.8)
        top = cats[int(hi)] if cats else f"{hi:.3g}"
        bottom = cats[int(lo)] if cats else f"{lo:.3g}"
        ax.text(k, 1.03, top, ha="center", va="bottom", fontsize=7)
        ax.text(k, -0.03, bottom, ha="center", va="top", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.tick_params(axis="x", pad=14)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(labels) - 0.8)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"full-budget trials, coloured by {sweep.metric} on its axis's scale (yellow: better)", fontsize=10,
                 pad=16)
    return to_png(fig)


def interaction(sweep: Sweep, a: str, b: str) -> bytes | None:
    """Two swept fields against each other, each full-budget trial coloured by the objective."""
    done = sweep.full_budget
    if len(done) < 2 or a not in done or b not in done:
        return None
    xa, la, ca = _axis_values(sweep, done, a)
    xb, lb, cb = _axis_values(sweep, done, b)
    y = done["final_metric"].to_numpy(dtype=float)
    fig = new_figure(5.6, 4.4)
    ax = fig.add_subplot()
    band = noise_band(y, metric_queries(sweep))
    # the colour scale spans every trial's noise, so values within noise of each other look alike
    norm = Normalize(*((np.nanmin(band[0]), np.nanmax(band[1])) if band is not None else (y.min(), y.max())))
    if len(done) >= 6 and ca is None and cb is None and np.ptp(xa) > 0 and np.ptp(xb) > 0:
        try:
            ax.tricontourf(xa, xb, y, levels=8, cmap="viridis", norm=norm, alpha=0.35)
        except (ValueError, RuntimeError):  # collinear points: the scatter alone
            pass
    points = ax.scatter(xa, xb, c=y, cmap="viridis", norm=norm, s=40, edgecolors="#333333", linewidths=0.5,
                        zorder=3)
    bar = fig.colorbar(points, ax=ax, label=f"{sweep.metric} (last epoch)")
    if band is not None:
        best = int(np.argmax(y) if sweep.mode == "max" else np.argmin(y))
        bar.ax.axhspan(band[0][best], band[1][best], facecolor="none", edgecolor="#111111", hatch="///", lw=0.8)
    for axis, cats in ((ax.xaxis, ca), (ax.yaxis, cb)):
        if cats:
            axis.set_ticks(range(len(cats)), cats)
    ax.set_xlabel(la)
    ax.set_ylabel(lb)
    ax.grid(alpha=0.25)
    return to_png(fig)


def _axis_values(sweep: Sweep, done: pd.DataFrame, name: str) -> tuple[np.ndarray, str, list[str] | None]:
    """A swept field's values on a plotting axis: (x, label, category names or None); log scales
    as the space samples them (1 - tau for one_minus_loguniform)."""
    spec = sweep.space.get(name, {})
    kind = spec.get("type")
    numeric = pd.to_numeric(done[name], errors="coerce")
    if kind in ("choice", "grid") or numeric.isna().any() or done[name].dtype == bool:
        cats = sorted({category(v) for v in done[name]})
        return np.array([cats.index(category(v)) for v in done[name]], dtype=float), name, cats
    x, label = numeric.to_numpy(dtype=float), name
    if kind == "one_minus_loguniform":
        x, label = 1 - x, f"1 - {name}"
    if kind in ("loguniform", "one_minus_loguniform") and (x > 0).all():
        return np.log10(x), f"log10 {label}", None
    return x, label, None
