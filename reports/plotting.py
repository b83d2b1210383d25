"""What every figure shares: a canvas (matplotlib's Agg, no pyplot, no display, no global state), PNG
bytes, the palette and the style of a learning curve by status."""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from reports.load import Sweep
from reports.summary import policies

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
