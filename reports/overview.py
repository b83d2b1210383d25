"""The Summary and Best configurations sections: what the sweep ran and holds, and its trials ranked at
equal budget (those stopped early shown apart)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports import summary
from reports.load import Sweep
from reports.numbers import num, value
from reports.render import Code, Heading, Para, Table
from reports.stats import within_noise
from vocabulary import FINISHED

TOP = 5
STOPPED_SHOWN = 100  # rows of the stopped-early table: a large sweep's thousands would bury the section


def summary_section(s: Sweep, level: int) -> list:
    out = [Heading("Summary", level)]
    if s.running:
        out.append(Para("This sweep is still running: reported as it stands at load time.", note=True))
    elif s.state == "interrupted":
        out.append(Para("This sweep was interrupted: its driver stopped before the end; trials still marked "
                        "running stopped with it.", note=True))
    if s.other_parents:
        out.append(Para(f"The experiment holds {s.other_parents + 1} sweeps; this report covers the latest.", note=True))
    out.append(Table(pd.DataFrame(summary.summary_rows(s), columns=["", "value"])))
    if s.finished.empty:
        out.append(Para(f"No trial has {'finished yet' if s.running else 'finished'} (none completed or stopped "
                        "early with a metric value).", note=True))
    return out


def best_section(s: Sweep, level: int, best) -> list:
    out = [Heading("Best configurations", level)]
    t = s.trials
    unranked = t[t["status"].isin(FINISHED) & ~t["trial"].isin(s.finished["trial"])]
    if len(unranked):
        out.append(Para(f"{len(unranked)} trial(s) ended without a finite {s.metric} and are not ranked: "
                        f"{', '.join(unranked['trial'])}.", note=True))
    ranked = summary.ranked(s)
    if ranked.empty:
        out.append(Para("No trial ran the full budget: nothing to rank (trials stopped early are not compared "
                        "with each other at unequal budgets).", note=True))
        return out + stopped_blocks(s)
    cols = [c for c in summary.varied_columns(s)]
    n = s.queries(summary.search_split(s))
    near = (within_noise(ranked["final_metric"], float(ranked["final_metric"].iloc[0]), n, s.mode)
            if n else np.zeros(len(ranked), dtype=bool))
    rows = []
    for rank, ((_, t), close) in enumerate(zip(ranked.head(TOP).iterrows(), near), start=1):
        row = {"rank": rank, "trial": t["trial"]}
        row.update({c: value(t[c]) for c in cols})
        row.update({s.metric: num(t["final_metric"]), "within noise of the best": "yes" if close else "no",
                    f"best epoch (its {s.metric})": f"{int(t['best_epoch'])} ({num(t['best_metric'])})"})
        rows.append(row)
    noise = (f"'Within noise': inside the best value's 95% binomial interval over the {n} validation queries."
             if n else "No query count was recorded, so no trial is marked within noise.")
    out.append(Para(f"Top {len(rows)} of the {len(ranked)} trials that ran the full budget, ranked by {s.metric} at "
                    f"their last epoch ({s.mode}); the best epoch is shown for information only (the checkpoint "
                    f"holds the last). {noise} {int(near.sum())} of {len(ranked)} are within noise of the best."))
    out.append(Table(pd.DataFrame(rows)))
    out.append(Para(f"Reproduce the best trial, {best['trial']}, with every parameter its run recorded (the same "
                    "budget, seed and validation split):"))
    out.append(Code(summary.train_command(s, best["trial"])))
    return out + stopped_blocks(s)


def stopped_blocks(s: Sweep) -> list:
    stopped = s.stopped_early
    if stopped.empty:
        return []
    d = s.decisions
    stops = d[d["decision"] == "stop"].drop_duplicates("trial") if len(d) else d  # each trial's first stop
    cutoff = dict(zip(stops["trial"], stops["cutoff"])) if len(stops) else {}
    t = stopped.sort_values(["epochs_run", "final_metric"], ascending=[False, s.mode != "max"]).head(STOPPED_SHOWN)
    rows = pd.DataFrame({"trial": t["trial"].to_numpy(), "stopped at epoch": [str(int(e)) for e in t["epochs_run"]],
                         f"{s.metric} there": [num(v) for v in t["final_metric"]],
                         "cut-off it faced": [num(cutoff[x]) if x in cutoff else "not recorded" for x in t["trial"]]})
    shown = (f" The {len(t)} that ran the most epochs are listed, the best first at each; trials.csv holds them all."
             if len(t) < len(stopped) else "")
    return [Para(f"Stopped early by ASHA ({len(stopped)}), shown apart: their values are at fewer epochs and are "
                 f"not ranked with the full-budget trials.{shown}"), Table(rows)]
