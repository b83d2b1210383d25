"""The Population Based Training section: each member's hyperparameters per epoch (metrics
hp.<field>) and its lineage (tags pbt.exploit_<epoch>: who copied whom, at which epoch)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from reports.load import Sweep
from reports.numbers import DASH, sig
from reports.plotting import new_figure, palette_colours, to_png
from reports.render import Heading, Image, Para, Table
from vocabulary import CONTINUABLE_FIELDS

LOG_FIELDS = {"base_lr"}  # drawn on a log axis
ONE_MINUS_FIELDS = {"tau_base"}  # drawn as 1 - value on a log axis (as searched)


def _settings(s: Sweep) -> str:
    p = s.params
    get = lambda k, d="?": p.get(f"scheduler.{k}", d)  # noqa: E731
    return (f"every {get('perturbation_interval')} epoch(s) after a burn-in of {get('burn_in_period', '0')}, the "
            f"bottom {get('quantile_fraction')} of the population (by {s.metric} at that epoch) copies a member of "
            f"the top {get('quantile_fraction')}: its checkpoint (weights, optimiser state, step) and its "
            f"hyperparameters, each then multiplied by one of {get('perturbation_factors')} or, with probability "
            f"{get('resample_probability')}, redrawn from its search range (and kept inside it)"
            + ("; the whole population is perturbed at the same epoch" if p.get("scheduler.synch") == "True" else ""))


def pbt_section(s: Sweep, level: int, prefix: str) -> list:
    out = [Heading("Population Based Training", level)]
    members = sorted(s.trials["trial"])
    out.append(Para(
        f"{len(members)} members trained side by side: {_settings(s)}. A member that copies another continues "
        "from that checkpoint's step, so its learning-rate and momentum schedules go on from where they were, "
        "with the new base_lr and tau_base from the next epoch (and views of the new aug_strength). A member's "
        "result is therefore the product of a schedule of hyperparameters and copied weights, not of one "
        "configuration: its MLflow params and swept.* tags are its initial values, the metrics hp.<field> its "
        "value at each epoch. For the same reason this sweep has no final stage."))
    fields = [f for f in CONTINUABLE_FIELDS if f in s.swept and f"hp.{f}" in s.curves]
    if not fields:
        return out + [Para("No member reported its hyperparameters per epoch (metrics hp.<field>): nothing to "
                           "draw.", note=True)]
    colours = palette_colours(members)
    e = s.exploits
    out.append(Image(f"{prefix}pbt_schedules.png", schedules(s, fields, colours),
                     "each member's hyperparameters per epoch"))
    out.append(Para("Each member's value of each perturbed hyperparameter per epoch (one colour per member); a "
                    "circle marks the first epoch after the member copied another. Log axes for base_lr and for "
                    "1 − tau_base (as searched)."))
    if e.empty:
        return out + [Para("No member copied another (no exploit was recorded): every member kept its initial "
                           "values.", note=True)]
    out.append(Image(f"{prefix}pbt_lineage.png", lineage(s, members, colours), "who copied whom, per epoch"))
    out.append(Para(f"Lineage: one row per member, coloured by the member whose weights it carries at each epoch "
                    f"(its original ancestor); an arrow runs from the member copied, at the epoch of its checkpoint, "
                    f"to the member that copied it. {len(e)} exploit(s) by {e['trial'].nunique()} member(s)."))
    rows = []
    for _, x in e.iterrows():
        changes = "; ".join(f"{f} {sig(x['old'].get(f))} → {sig(x['new'].get(f))}" for f in fields
                            if f in x["new"])
        rows.append({"member": x["trial"], "epoch": str(x["epoch"]), "copied from": x["from_trial"],
                     "its checkpoint of epoch": str(x["from_epoch"]), "values (own → new)": changes})
    out.append(Table(pd.DataFrame(rows)))
    return out + [Table(final_values(s, members, fields))]


def final_values(s: Sweep, members: list[str], fields: list[str]) -> pd.DataFrame:
    """Each member's objective and its hyperparameters at its last epoch, with how often it copied."""
    t = s.trials.set_index("trial")
    copies = s.exploits["trial"].value_counts() if len(s.exploits) else pd.Series(dtype=int)
    rows = []
    for m in members:
        c = s.curves[s.curves["trial"] == m]
        row = {"member": m, f"{s.metric} (last epoch)": sig(t.loc[m, "final_metric"]), "status": t.loc[m, "status"]}
        for f in fields:
            row[f"{f} (last epoch)"] = sig(c[f"hp.{f}"].dropna().iloc[-1]) if c[f"hp.{f}"].notna().any() else DASH
        row["times it copied another"] = str(int(copies.get(m, 0)))
        rows.append(row)
    return pd.DataFrame(rows)


def _y(field: str, values):
    values = np.asarray(values, dtype=float)
    return 1 - values if field in ONE_MINUS_FIELDS else values


def schedules(s: Sweep, fields: list[str], colours: dict[str, str]) -> bytes:
    fig = new_figure(4.0 * len(fields) + 1.5, 3.6)
    starts = {(x["trial"], int(x["epoch"]) + 1) for _, x in s.exploits.iterrows()} if len(s.exploits) else set()
    for i, f in enumerate(fields):
        ax = fig.add_subplot(1, len(fields), i + 1)
        for m, c in s.curves.groupby("trial", sort=True):
            c = c.dropna(subset=[f"hp.{f}"])
            if c.empty:
                continue
            ax.plot(c["epoch"], _y(f, c[f"hp.{f}"]), "-", drawstyle="steps-mid", color=colours.get(m, "#333333"),
                    lw=1.5, alpha=0.9)
            marks = c[[(m, int(ep)) in starts for ep in c["epoch"]]]
            ax.plot(marks["epoch"], _y(f, marks[f"hp.{f}"]), "o", mfc="none", color=colours.get(m, "#333333"), ms=7)
        if f in LOG_FIELDS or f in ONE_MINUS_FIELDS:
            ax.set_yscale("log")
        ax.set_title(f"1 − {f}" if f in ONE_MINUS_FIELDS else f, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.25)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=col, lw=2, label=m) for m, col in colours.items()]
    handles.append(Line2D([], [], color="#333333", marker="o", mfc="none", ls="", label="after a copy"))
    fig.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return to_png(fig)


def lineage(s: Sweep, members: list[str], colours: dict[str, str]) -> bytes:
    last = int(s.curves["epoch"].max()) if len(s.curves) else 1
    # whose weights each member carries from each epoch on: itself, until it copies someone
    ancestor = {m: {ep: m for ep in range(0, last + 1)} for m in members}
    for _, x in s.exploits.sort_values("epoch").iterrows():
        target, source, at = x["trial"], x["from_trial"], int(x["epoch"])
        if target not in ancestor or source not in ancestor:
            continue
        root = ancestor[source].get(int(x["from_epoch"]), source)
        for ep in range(at + 1, last + 1):  # it trains the copied weights from the next epoch on
            ancestor[target][ep] = root
    row = {m: i for i, m in enumerate(members)}
    fig = new_figure(8.0, 0.5 * len(members) + 1.5)
    ax = fig.add_subplot()
    for m in members:
        for ep in range(0, last):
            ax.plot([ep, ep + 1], [row[m], row[m]], "-", lw=6, solid_capstyle="butt",
                    color=colours.get(ancestor[m][ep + 1], "#999999"))
    for _, x in s.exploits.iterrows():
        if x["trial"] in row and x["from_trial"] in row:
            ax.annotate("", xy=(int(x["epoch"]), row[x["trial"]]), xytext=(int(x["from_epoch"]), row[x["from_trial"]]),
                        arrowprops=dict(arrowstyle="->", color="#111111", lw=1.2,
                                        connectionstyle="arc3,rad=0.25"))
    ax.set_yticks(range(len(members)))
    ax.set_yticklabels(members, fontsize=8)
    ax.set_ylim(-0.7, len(members) - 0.3)
    ax.set_xlim(0, last)
    ax.set_xlabel("epoch (a bar from e − 1 to e: the weights trained in epoch e)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", alpha=0.25)
    ax.set_title("lineage: colour = the original member whose weights a member carries", fontsize=10)
    return to_png(fig)
