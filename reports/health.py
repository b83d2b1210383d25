"""The Health section: which trials diverged, collapsed or failed, and the collapse measures per epoch."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports.load import Sweep
from reports.numbers import DASH, num
from reports.plotting import PALETTE, draw_curves, new_figure, to_png
from reports.render import Heading, Image, Para, Table
from vocabulary import COLLAPSE_RANK, COLLAPSE_SPREAD, collapsed
from vocabulary.journal_files import JOURNAL_FILE, REFUSED_SUFFIX

COLLAPSE_Z_STD = 0.01


def health_section(s: Sweep, level: int, prefix: str) -> list:
    out = [Heading("Health", level)]
    t = s.trials
    diverged = t[t["status"] == "diverged"]
    alive = t[~t["status"].isin(["diverged", "failed"])]
    has_spread = alive["final_z_spread"].notna().any() or alive["final_eff_rank"].notna().any()
    if has_spread:
        flags = [collapsed(z, r) for z, r in zip(alive["final_z_spread"], alive["final_eff_rank"])]
        rule = (f"a trial that did not diverge but ended with z_spread below {COLLAPSE_SPREAD:g} (z_spread: the "
                "std of the L2-normalised projections times sqrt(dim): 1 when spread, 0 when every image maps to one "
                f"point) or an effective rank below {COLLAPSE_RANK:g} (RankMe: about 1 when the projections lie on "
                "a line or two antipodal points)")
    else:  # a sweep older than z_spread and eff_rank
        flags = list(alive["final_z_std"] < COLLAPSE_Z_STD)
        rule = f"a trial that did not diverge but ended with z_std below {COLLAPSE_Z_STD:g}"
    collapsed_trials = alive[np.asarray(flags, dtype=bool)]
    failed = t[t["status"] == "failed"]
    out.append(Para(f"Collapsed: {rule}."))
    if diverged.empty and collapsed_trials.empty and failed.empty:
        out.append(Para("No trial diverged, collapsed or failed."))
    for label, rows in (("Diverged", diverged), ("Collapsed", collapsed_trials), ("Failed", failed)):
        if rows.empty:
            continue
        out.append(Para(f"{label}: {len(rows)} trial{'s' if len(rows) != 1 else ''}."))
        out.append(Table(pd.DataFrame({
            "trial": rows["trial"], "status": rows["status"], "epochs run": rows["epochs_run"].astype(str),
            "final loss": [num(v) for v in rows["final_loss"]], "final z_std": [num(v) for v in rows["final_z_std"]],
            "final z_spread": [num(v, 3) for v in rows["final_z_spread"]],
            "final eff_rank": [num(v, 1) for v in rows["final_eff_rank"]],
            "error": [e or DASH for e in rows["error"]],
        })))
    if s.refused:
        out += refused_part(s)
    png = spread_curves(s) if has_spread else z_std_curves(s, COLLAPSE_Z_STD)
    if png is not None and not s.curves.empty:
        name = "z_spread.png" if has_spread else "z_std.png"
        out.append(Image(f"{prefix}{name}", png, "collapse health per epoch"))
    return out


def refused_part(s: Sweep) -> list:
    """The records MLflow refused (the journal set them aside beside itself): what this report misses."""
    names = dict(zip(s.trials["run_id"], s.trials["trial"]))
    if not s.finals.empty:
        names.update(zip(s.finals["run_id"], s.finals["trial"]))
    names[s.parent_id] = "the sweep (parent run)"
    rows = []
    for r in s.refused:
        args = (r.get("record") or {}).get("args") or {}
        run = names.get(r["mlflow_run_id"]) or args.get("run_name") or r["mlflow_run_id"] or r.get("run_id") or DASH
        rows.append({"run": run, "what": refused_what(r.get("op", ""), args), "reason": r.get("reason") or DASH})
    n = len(rows)
    return [Para(f"Refused by MLflow: {n} record{'s' if n != 1 else ''}, set aside beside the sweep's journal "
                 f"({JOURNAL_FILE}{REFUSED_SUFFIX} in its folder); this report misses what they hold."),
            Table(pd.DataFrame(rows, columns=["run", "what", "reason"]))]


def refused_what(op: str, args: dict) -> str:
    """What a refused record would have written, in a few words."""
    if op == "log_batch":
        steps = sorted({int(m["step"]) for m in args.get("metrics") or []})
        parts = ([f"metrics of epoch{'s' if len(steps) != 1 else ''} {', '.join(map(str, steps))}"] if steps else [])
        parts += [f"{kind} {', '.join(sorted(args[kind]))}" for kind in ("params", "tags") if args.get(kind)]
        return "; ".join(parts) or "an empty batch"
    return {"create_run": "the run itself", "set_tag": f"tag {args.get('key')} = {args.get('value')}",
            "set_terminated": f"its end ({args.get('status')})", "update_run": f"its status ({args.get('status')})",
            "log_artifacts": f"its artifacts {args.get('artifact_path') or ''}".rstrip()}.get(op, op)


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
