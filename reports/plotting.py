"""What every figure shares: a canvas (matplotlib's Agg, no pyplot, no display, no global state), PNG
bytes, the palette, the style of a learning curve by status, the metric's own noise on a metric axis, and
how many full-budget trials a plot of parameters' effects needs."""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from reports.load import Sweep
from reports.stats import binomial_interval
from reports.summary import policies, search_split

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
STYLE = {  # status -> line style of a learning curve
    "completed": dict(ls="-", lw=1.6, alpha=0.95),
    "stopped_early": dict(ls="--", lw=1.0, alpha=0.8, color="#9a9a9a"),
    "diverged": dict(ls=":", lw=1.4, alpha=0.9, color="#d62728"),
    "failed": dict(ls=":", lw=1.0, alpha=0.9, color="#7f0000"),
    "running": dict(ls="-", lw=1.0, alpha=0.6),
}

# Fewer full-budget trials than this: no sensitivity, parallel-coordinates or interaction plot. Each
# shows the objective against parameters, and from few points noise alone draws steep effects: for an
# objective that depends on no parameter (normal noise), a panel's correlation is |r| >= 0.7 with
# probability 5.3% at 8 points (0.707 is the 5% two-sided critical value there), 12% at 6, 19% at 5,
# 51% at 3, and two points always lie on a line. From 8 a trend that steep is unlikely to be noise alone.
MIN_TRIALS_FOR_EFFECT_PLOTS = 8
NOISE_LEVEL = 0.95
NOISE_STYLE = dict(fmt="none", ecolor="#8a8a8a", elinewidth=0.9, capsize=2.5, zorder=2)


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
    names = policies(sweep)
    return palette_colours(names) if len(names) >= 2 else None


def palette_colours(names: list[str]) -> dict[str, str]:
    """name -> a colour of the palette, in the order given (the palette repeats past eight)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def draw_curves(ax, sweep: Sweep, key: str, colour_of, highlight: str | None = None, mark_stops: bool = False) -> None:
    """Every trial's curve of `key`, styled by its status, drawn as one LineCollection per style
    (a thousand trials draw as fast as ten); `highlight` on top in black; with mark_stops an x where
    ASHA stopped a trial."""
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


def too_few_for_effect_plots(sweep: Sweep, plots: str) -> str | None:
    """The sentence that replaces `plots` when the sweep has fewer than MIN_TRIALS_FOR_EFFECT_PLOTS
    full-budget trials, else None."""
    n = len(sweep.full_budget)
    if n >= MIN_TRIALS_FOR_EFFECT_PLOTS:
        return None
    return (f"No {plots}: this sweep has {n} full-budget trial{'s' if n != 1 else ''}, and such a plot needs at "
            f"least {MIN_TRIALS_FOR_EFFECT_PLOTS}. From fewer points noise alone draws steep-looking effects (for "
            f"an objective that depends on no parameter, a correlation of |r| ≥ 0.7 turns up 1 time in 5 at 5 "
            f"points, and 2 points always lie on a line), so an effect read from them would be noise.")


def metric_queries(sweep: Sweep) -> int | None:
    """How many queries the search's metric was measured on, when it is an accuracy (a binomial count of
    correct queries); None for another metric or when the count was not recorded."""
    if not sweep.metric.endswith("_acc"):
        return None
    return sweep.queries(search_split(sweep))


def noise_band(values, n_queries: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high): each value's NOISE_LEVEL binomial interval over n_queries; None without a count."""
    if not n_queries:
        return None
    bounds = np.array([binomial_interval(float(v), n_queries, NOISE_LEVEL) for v in values], dtype=float)
    return bounds.reshape(-1, 2)[:, 0], bounds.reshape(-1, 2)[:, 1]


def draw_noise(ax, x, y, n_queries: int | None, label: str | None = None) -> None:
    """Each point's binomial interval as a vertical error bar (`label` in a legend), with the y axis spanning
    every bar; nothing when the metric has no query count."""
    band = noise_band(y, n_queries)
    if band is None or not len(y):
        return
    y = np.asarray(y, dtype=float)
    low, high = band
    ax.errorbar(x, y, yerr=[y - low, high - y], label=label, **NOISE_STYLE)
    cover(ax, float(np.nanmin(low)), float(np.nanmax(high)))


def cover(ax, low: float, high: float) -> None:
    """Widen the y axis (never narrow it) so it spans [low, high] with a margin."""
    ax.autoscale_view()
    bottom, top = ax.get_ylim()
    margin = 0.05 * (high - low)
    ax.set_ylim(min(bottom, low - margin), max(top, high + margin))


def noise_words(n_queries: int) -> str:
    return (f"each value's {NOISE_LEVEL:.0%} binomial interval over the {n_queries} queries it was measured on "
            "(the metric's own noise)")
