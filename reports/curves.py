"""The Learning curves section: every trial's metric per epoch, with ASHA's rungs and its decisions."""
from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from reports.load import Sweep
from reports.numbers import num
from reports.plotting import PALETTE, STYLE, draw_curves, new_figure, policy_colours, to_png
from reports.render import Heading, Image, Para, Table
from vocabulary import asha_rungs


def curves_section(s: Sweep, level: int, prefix: str, best_name, ylim=None) -> list:
    out = [Heading("Learning curves", level)]
    if s.curves.empty or s.metric not in s.curves:
        return out + [Para(f"No epoch of {s.metric} has been logged yet.", note=True)]
    asha = s.asha
    rungs = asha_rungs(*asha) if asha else []
    out.append(Image(f"{prefix}curves.png", learning_curves(s, rungs, best_name, ylim), f"{s.metric} per epoch"))
    out.append(Para("Blue: ran the full budget; grey dashed: stopped early by ASHA; red dotted: diverged or failed; "
                    "thick: the best trial."))
    if not asha:
        return out + [Para("The sweep used no ASHA scheduler: no rungs.", note=True)]
    grace, rf, max_t = asha
    d = s.decisions
    out.append(Para(f"ASHA's decisions as it made them (grace {grace}, reduction factor {rf}, max {max_t} epochs): "
                    f"at each rung a trial continues when its {s.metric} is not below the cut-off, the (1 − 1/{rf}) "
                    "quantile of the values recorded at that rung so far (the first trials at a rung face none)."))
    if d.empty:
        return out + [Para("No decisions were recorded (a sweep older than this record, or no trial reached a "
                           "rung).", note=True)]
    rows = []
    for rung, g in d.groupby("rung", sort=True):
        cut = g["cutoff"].dropna()
        rows.append({"rung (epoch)": str(rung), "trials judged": str(len(g)),
                     "continued": str(int((g["decision"] == "continue").sum())),
                     "stopped": str(int((g["decision"] == "stop").sum())),
                     "cut-offs faced": (f"{num(cut.min())} – {num(cut.max())}" if len(cut) else "none"),
                     "with no cut-off yet": str(int(g["cutoff"].isna().sum()))})
    return out + [Table(pd.DataFrame(rows))]


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


def _no_colour(style: dict) -> dict:
    return {k: v for k, v in style.items() if k != "color"}
