"""Figures as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no display, no global state)."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from reports.load import Sweep

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
STYLE = {  # status -> line style of a learning curve
    "completed": dict(ls="-", lw=1.6, alpha=0.95),
    "stopped_early": dict(ls="--", lw=1.0, alpha=0.8, color="#9a9a9a"),
    "diverged": dict(ls=":", lw=1.4, alpha=0.9, color="#d62728"),
    "failed": dict(ls=":", lw=1.0, alpha=0.9, color="#7f0000"),
    "running": dict(ls="-", lw=1.0, alpha=0.6),
}


def new_figure(width: float = 8.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def policy_colours(sweep: Sweep) -> dict[str, str] | None:
    """policy -> colour when the sweep has several policies, else None."""
    names = sorted({str(p) for p in sweep.trials["policy"].dropna() if str(p)})
    if len(names) < 2:
        return None
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(names)}


def learning_curves(sweep: Sweep, rungs: list[int], best_trial: str | None,
                    ylim: tuple[float, float] | None = None) -> bytes:
    fig = new_figure()
    ax = fig.add_subplot()
    colours = policy_colours(sweep)
    status = dict(zip(sweep.trials["trial"], sweep.trials["status"]))
    policy = dict(zip(sweep.trials["trial"], sweep.trials["policy"].astype(str)))
    metric = sweep.metric
    draw_curves(ax, sweep, metric, lambda trial: colours[policy[trial]] if colours else PALETTE[0], best_trial,
                mark_stops=True)
    for r in rungs:
        ax.axvline(r, color="#444444", ls=(0, (1, 3)), lw=0.9, zorder=0)
        ax.text(r, 1.01, f"{r}", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch" + ("  (dotted verticals: ASHA rungs)" if rungs else ""), fontsize=10, pad=14)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.25)
    ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color="#333333" if colours else PALETTE[0], **_no_colour(STYLE["completed"]),
                      label="ran the full budget")]
    present = {status.get(t, "running") for t in sweep.curves["trial"].unique()}
    for st in ("stopped_early", "diverged", "failed", "running"):
        if st in present:
            s = dict(STYLE[st])
            marker = "x" if st == "stopped_early" else None
            handles.append(Line2D([], [], color=s.pop("color", "#333333"), marker=marker, **s,
                                  label=st.replace("_", " ")))
    if best_trial:
        handles.append(Line2D([], [], color="#111111", lw=2.6, label=f"best ({best_trial})"))
    if colours:
        handles += [Line2D([], [], color=c, lw=3, label=p) for p, c in colours.items()]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_png(fig)


def draw_curves(ax, sweep: Sweep, key: str, colour_of, highlight: str | None = None, mark_stops: bool = False) -> None:
    """Every trial's curve of `key`, styled by its status, drawn as one LineCollection per style
    (a thousand trials draw as fast as ten); `highlight` on top in black; with mark_stops an x where
    ASHA stopped a trial."""
    from matplotlib.collections import LineCollection

    status = dict(zip(sweep.trials["trial"], sweep.trials["status"]))
    groups: dict[tuple, list] = {}
    stops_x, stops_y, stops_c = [], [], []
    curves = sweep.curves
    many = curves["trial"].nunique() > 100
    if key not in curves:
        ax.autoscale_view()
        return
    epochs, values = curves["epoch"].to_numpy(dtype=float), curves[key].to_numpy(dtype=float)
    for trial, at in sorted(curves.groupby("trial").indices.items()):
        st = status.get(trial, "running")
        style = dict(STYLE.get(st, STYLE["running"]))
        colour = style.pop("color", None) or colour_of(trial)
        xy = np.column_stack([epochs[at], values[at]])
        if trial == highlight:
            ax.plot(xy[:, 0], xy[:, 1], color="#111111", lw=2.6, zorder=5)
            continue
        if many and st == "stopped_early":
            style.update(alpha=0.25, lw=0.6)  # at scale the stopped trials are a background
        groups.setdefault((colour, style["ls"], style["lw"], style["alpha"]), []).append(xy)
        if mark_stops and st == "stopped_early":  # a one-epoch trial is only this mark
            stops_x.append(xy[-1, 0])
            stops_y.append(xy[-1, 1])
            stops_c.append(colour)
    for (colour, ls, lw, alpha), segments in groups.items():
        ax.add_collection(LineCollection(segments, colors=colour, linestyles=ls, linewidths=lw, alpha=alpha))
    if stops_x:
        ax.scatter(stops_x, stops_y, marker="x", c=stops_c, s=20 if not many else 6, linewidths=1, zorder=4)
    ax.autoscale_view()


def _no_colour(style: dict) -> dict:
    return {k: v for k, v in style.items() if k != "color"}


def z_std_curves(sweep: Sweep, threshold: float) -> bytes | None:
    if "z_std" not in sweep.curves:
        return None
    fig = new_figure(8, 3.2)
    ax = fig.add_subplot()
    draw_curves(ax, sweep, "z_std", lambda trial: PALETTE[0])
    ax.axhline(threshold, color="#d62728", lw=1, ls="-.", label=f"collapse threshold {threshold:g}")
    values = sweep.curves["z_std"].to_numpy(dtype=float)
    if np.isfinite(values).any() and (values[np.isfinite(values)] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("z_std")
    ax.set_title("std of the normalised projections (collapse shows as a fall towards 0)", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, frameon=False)
    return to_png(fig)


def spread_curves(sweep: Sweep) -> bytes | None:
    """z_spread and eff_rank per epoch, with the collapse thresholds."""
    from vocabulary import COLLAPSE_RANK, COLLAPSE_SPREAD

    keys = [k for k in ("z_spread", "eff_rank") if k in sweep.curves]
    if not keys:
        return None
    fig = new_figure(4.2 * len(keys), 3.2)
    for k, (key, threshold) in enumerate(zip(keys, (COLLAPSE_SPREAD, COLLAPSE_RANK) if keys[0] == "z_spread"
                                             else (COLLAPSE_RANK,))):
        ax = fig.add_subplot(1, len(keys), k + 1)
        draw_curves(ax, sweep, key, lambda trial: PALETTE[0])
        ax.axhline(threshold, color="#d62728", lw=1, ls="-.", label=f"collapse below {threshold:g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8, frameon=False)
    fig.subplots_adjust(wspace=0.3)  # room for the right panel's labels; savefig trims the outer margins
    return to_png(fig)


def sensitivity(sweep: Sweep, fields: list[str]) -> bytes | None:
    done = sweep.full_budget
    fields = [f for f in fields if f in done]
    if done.empty or not fields:
        return None
    ncols = min(3, len(fields))
    nrows = math.ceil(len(fields) / ncols)
    fig = new_figure(4.0 * ncols, 3.3 * nrows)
    colours = policy_colours(sweep)
    for k, name in enumerate(fields):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        spec = sweep.space.get(name, {})
        _sensitivity_panel(ax, done, name, spec, sweep.metric, colours)
    if colours:
        handles = [Line2D([], [], marker="o", ls="", color=c, label=p) for p, c in colours.items()]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
        fig.subplots_adjust(top=1 - 0.45 / (3.3 * nrows))  # the legend's row, 0.45 in above the panels
    fig.subplots_adjust(wspace=0.3, hspace=0.45)  # cheaper than tight_layout (a second layout pass of every tick)
    return to_png(fig)


def _sensitivity_panel(ax, done: pd.DataFrame, name: str, spec: dict, metric: str, colours) -> None:
    y = done["final_metric"].to_numpy(dtype=float)
    colour = [colours[str(p)] if colours else PALETTE[0] for p in done["policy"]]
    hollow = (done["status"] == "stopped_early").to_numpy()
    kind = spec.get("type")
    numeric = pd.to_numeric(done[name], errors="coerce")
    if kind in ("choice", "grid") or numeric.isna().any() or done[name].dtype == bool:
        cats = [_category(v) for v in (spec.get("values") or sorted(done[name].unique(), key=str))]
        cats += sorted({_category(v) for v in done[name]} - set(cats))
        pos = np.array([cats.index(_category(v)) for v in done[name]], dtype=float)
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
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} (last epoch)")
    ax.grid(alpha=0.25)


def _category(v) -> str:
    """One label per choice value whether it came as 0, 0.0 or "0"."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    try:
        return f"{float(v):g}"
    except (TypeError, ValueError):
        return str(v)


def importances(values: dict[str, float]) -> bytes:
    names = list(values)[::-1]
    fig = new_figure(6, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    ax.barh(names, [values[n] for n in names], color=PALETTE[0])
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.25)
    return to_png(fig)


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


def _axis_values(sweep: Sweep, done: pd.DataFrame, name: str) -> tuple[np.ndarray, str, list[str] | None]:
    """A swept field's values on a plotting axis: (x, label, category names or None); log scales
    as the space samples them (1 - tau for one_minus_loguniform)."""
    spec = sweep.space.get(name, {})
    kind = spec.get("type")
    numeric = pd.to_numeric(done[name], errors="coerce")
    if kind in ("choice", "grid") or numeric.isna().any() or done[name].dtype == bool:
        cats = sorted({_category(v) for v in done[name]})
        return np.array([cats.index(_category(v)) for v in done[name]], dtype=float), name, cats
    x, label = numeric.to_numpy(dtype=float), name
    if kind == "one_minus_loguniform":
        x, label = 1 - x, f"1 - {name}"
    if kind in ("loguniform", "one_minus_loguniform") and (x > 0).all():
        return np.log10(x), f"log10 {label}", None
    return x, label, None


def optimisation_history(sweep: Sweep, startup: int | None) -> bytes | None:
    """Each trial's objective in the order trials started; the best so far over full-budget trials."""
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
    if startup:
        ax.axvline(startup + 0.5, color="#d62728", ls="--", lw=1, label=f"end of {startup} random start-up trials")
    ax.set_xlabel("trial, in the order it started")
    ax.set_ylabel(f"{sweep.metric} (last epoch)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_png(fig)


def parallel_coordinates(sweep: Sweep, fields: list[str]) -> bytes | None:
    """One line per full-budget trial across the swept fields and the objective, coloured by it."""
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection

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
    scaled = (data - low) / np.where(high > low, high - low, 1.0)
    fig = new_figure(max(6.0, 1.6 * len(labels)), 4.0)
    ax = fig.add_subplot()
    rank = (y - y.min()) / (np.ptp(y) or 1.0)
    if sweep.mode == "min":
        rank = 1 - rank
    cmap = colormaps["viridis"]
    order = np.argsort(rank)  # the best drawn last, on top
    segments = [np.column_stack([np.arange(len(labels)), scaled[i]]) for i in order]
    ax.add_collection(LineCollection(segments, colors=[cmap(rank[i]) for i in order], linewidths=1.2, alpha=0.8))
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
    ax.set_title(f"full-budget trials, coloured by {sweep.metric} (yellow: best)", fontsize=10, pad=16)
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
    if len(done) >= 6 and ca is None and cb is None and np.ptp(xa) > 0 and np.ptp(xb) > 0:
        try:
            ax.tricontourf(xa, xb, y, levels=8, cmap="viridis", alpha=0.35)
        except (ValueError, RuntimeError):  # collinear points: the scatter alone
            pass
    points = ax.scatter(xa, xb, c=y, cmap="viridis", s=40, edgecolors="#333333", linewidths=0.5, zorder=3)
    fig.colorbar(points, ax=ax, label=f"{sweep.metric} (last epoch)")
    for axis, cats in ((ax.xaxis, ca), (ax.yaxis, cb)):
        if cats:
            axis.set_ticks(range(len(cats)), cats)
    ax.set_xlabel(la)
    ax.set_ylabel(lb)
    ax.grid(alpha=0.25)
    return to_png(fig)


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
    from matplotlib.collections import LineCollection

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
