"""The Learning curves section: every trial's metric per epoch, with ASHA's rungs and its decisions."""
from __future__ import annotations

import math

import pandas as pd
from matplotlib.lines import Line2D

from reports.load import Sweep
from reports.numbers import num
from reports.plotting import PALETTE, STYLE, draw_curves, metric_queries, new_figure, policy_colours, to_png
from reports.render import Heading, Image, Para, Table
from vocabulary import asha_rungs

Z95 = 1.96  # the two-sided 95% normal quantile
DECISIONS_SHOWN = 30  # rows of the decisions table: a large sweep's thousands would bury the section


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
    n = metric_queries(s)
    close = decisions_within_noise(d, n)
    rows = []
    for rung, g in d.groupby("rung", sort=True):
        cut = g["cutoff"].dropna()
        row = {"rung (epoch)": str(rung), "trials judged": str(len(g)),
               "continued": str(int((g["decision"] == "continue").sum())),
               "stopped": str(int((g["decision"] == "stop").sum())),
               "cut-offs faced": (f"{num(cut.min())} – {num(cut.max())}" if len(cut) else "none"),
               "with no cut-off yet": str(int(g["cutoff"].isna().sum()))}
        if n:
            near = close[g.index]
            row["within noise of cut-off"] = (f"{int(near.sum())} ({int((near & (g['decision'] == 'stop')).sum())} "
                                              "stopped)")
        rows.append(row)
    out += [Table(pd.DataFrame(rows)), Para(noise_sentence(d, close, n), note=not n)]
    return out + (decisions_table(d, close) if n else [])


def decision_within_noise(value: float, cutoff: float, n_queries: int) -> bool:
    """Whether an ASHA decision was a coin toss: |value - cutoff| < 1.96 * sqrt(value (1 - value) / n +
    cutoff (1 - cutoff) / n), the 95% normal bound on the difference of two binomial accuracies each
    measured on n queries. False when there is no cut-off (NaN) or no query count."""
    if not n_queries or not (math.isfinite(value) and math.isfinite(cutoff)):
        return False
    sd = math.sqrt((value * (1 - value) + cutoff * (1 - cutoff)) / n_queries)
    return abs(value - cutoff) < Z95 * sd


def decisions_within_noise(d: pd.DataFrame, n_queries: int | None) -> pd.Series:
    """decision_within_noise of each row of the decisions table (same index)."""
    flags = [decision_within_noise(float(v), float(c), n_queries or 0) for v, c in zip(d["value"], d["cutoff"])]
    return pd.Series(flags, index=d.index, dtype=bool)


def noise_sentence(d: pd.DataFrame, close: pd.Series, n_queries: int | None) -> str:
    if not n_queries:
        return ("The number of queries the metric was measured on is not recorded, or the metric is not an accuracy: "
                "whether a decision was within noise of its cut-off cannot be said.")
    faced = int(d["cutoff"].notna().sum())
    stops = int((close & (d["decision"] == "stop")).sum())
    return (f"{int(close.sum())} of the {faced} decisions that faced a cut-off were within noise of it ({stops} of them "
            f"stops): |value − cut-off| < 1.96 × √(value(1 − value)/n + cut-off(1 − cut-off)/n) with n = {n_queries} "
            "queries, the 95% bound on the difference of two accuracies each measured on n queries. Such a decision "
            "was a coin toss: a trial stopped there may have been as good as one that continued.")


def decisions_table(d: pd.DataFrame, close: pd.Series) -> list:
    """The decisions that faced a cut-off, each flagged; those within noise of it first, then the closest
    (DECISIONS_SHOWN at most)."""
    faced = d[d["cutoff"].notna()].assign(close=close, margin=(d["value"] - d["cutoff"]).abs())
    if faced.empty:
        return []
    shown = faced.sort_values(["close", "margin", "rung", "trial"], ascending=[False, True, True, True])
    shown = shown.head(DECISIONS_SHOWN)
    table = pd.DataFrame({"trial": shown["trial"], "rung (epoch)": shown["rung"].astype(str),
                          "value": [num(v) for v in shown["value"]], "cut-off": [num(c) for c in shown["cutoff"]],
                          "decision": shown["decision"],
                          "within noise of cut-off": ["yes" if c else "no" for c in shown["close"]]})
    which = f"{len(shown)} of the {len(faced)}" if len(faced) > len(shown) else f"all {len(faced)}"
    return [Para(f"The decisions that faced a cut-off ({which}): those within noise of it first, then the closest to "
                 "it."), Table(table)]


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
