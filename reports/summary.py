"""Facts about one sweep, as plain values: counts, compute, the best trial and how to rerun it."""
from __future__ import annotations

import shlex

import pandas as pd

from reports.load import Sweep
from reports.numbers import duration, num
from reports.stats import rank_trials
from vocabulary import STATUSES


def status_counts(sweep: Sweep) -> dict[str, int]:
    counts = sweep.trials["status"].value_counts()
    out = {s: int(counts.get(s, 0)) for s in STATUSES}
    for other in sorted(set(counts.index) - set(STATUSES)):
        out[str(other)] = int(counts[other])
    return out


def trial_hours(sweep: Sweep) -> float:
    return float(sweep.trials["compute_s"].sum()) / 3600


def gpu_hours(sweep: Sweep) -> float | None:
    """Sum over trials of compute time x GPUs held, or None when no trial held a GPU."""
    t = sweep.trials
    gpu = t["resources_gpu"].fillna(0.0)
    if not (gpu > 0).any():
        return None
    return float((t["compute_s"] * gpu).sum()) / 3600


def config_value(sweep: Sweep, name: str) -> str:
    """A TrainConfig field's value across the trials (comma-joined if it varies), else the base."""
    if name in sweep.trials:
        values = sorted({str(v) for v in sweep.trials[name].dropna()})
        if values:
            return ", ".join(values)
    return sweep.params.get(f"base.{name}", "?")


def _trial_splits(sweep: Sweep) -> list[str]:
    return sorted({p["eval_split"] for p in sweep.raw_params.values() if "eval_split" in p})


def eval_split(sweep: Sweep) -> str:
    """Which split the metric was measured on, from the trials' eval_split params."""
    described = {"val": "val split (held out of training)", "test": "test split"}
    return ", ".join(described.get(x, x) for x in _trial_splits(sweep)) or "not recorded (a sweep older than eval_split)"


def search_split(sweep: Sweep) -> str:
    """The split the search's trials were measured on ("val" unless they all used another), whose
    baselines their values are compared with."""
    splits = _trial_splits(sweep)
    return splits[0] if len(splits) == 1 else "val"


def ranked(sweep: Sweep) -> pd.DataFrame:
    return rank_trials(sweep.full_budget, sweep.mode, value="final_metric")


def best_trial(sweep: Sweep) -> pd.Series | None:
    r = ranked(sweep)
    return None if r.empty else r.iloc[0]


def train_command(sweep: Sweep, trial: str) -> str:
    """`byol-sweep train --set name=value ...` with every TrainConfig param the trial's run holds."""
    params = sweep.raw_params.get(trial, {})
    parts = ["byol-sweep train"] + [f"--set {shlex.quote(f'{k}={v}')}" for k, v in sorted(params.items())]
    return " \\\n  ".join(parts)


def varied_columns(sweep: Sweep) -> list[str]:
    """The swept fields, plus policy and seed when they vary, in a stable order."""
    cols = [c for c in sweep.swept if c in sweep.trials]
    for extra in ("policy", "seed"):
        if extra not in cols and sweep.trials[extra].nunique(dropna=True) > 1:
            cols.append(extra)
    return cols


def policies(sweep: Sweep) -> list[str]:
    return sorted({str(p) for p in sweep.trials["policy"].dropna() if str(p)})


def knn_protocol(s: Sweep) -> str:
    """How the kNN metric is measured: k, temperature, bank and queries on each split it was measured on."""
    bank = config_value(s, "knn_bank_size")
    bank = "all training images" if bank == "0" else f"{bank} training images"
    queries = [f"{s.queries(split)} on {split}" for split in ("val", "test") if s.queries(split)]
    return (f"weighted kNN (Wu et al. 2018) on L2-normalised encoder features: k {config_value(s, 'knn_k')}, "
            f"temperature {config_value(s, 'knn_temperature')}, bank {bank}; queries "
            + (", ".join(queries) if queries else "not recorded"))


def summary_rows(s: Sweep) -> list[tuple[str, str]]:
    """(label, value) of the Summary table: what ran, how it ended, what it cost."""
    counts = status_counts(s)
    best = best_trial(s)
    gpu = gpu_hours(s)
    asha = s.asha
    state = "still running" if s.running else s.state
    search = s.params.get("search", "?")
    if search == "optuna":
        startup = s.params.get("optuna.n_startup_trials")
        search = ("optuna (TPE, multivariate, constant liar" + (f"; its first {startup} trials random start-up"
                  if startup else "") + ")")
    f = s.finals
    rows = [
        ("Experiment", s.experiment),
        ("Sweep", s.name),
        ("State", state),
        ("Dataset", config_value(s, "dataset")),
        ("Backbone", config_value(s, "backbone")),
        ("Objective", f"{s.metric} ({s.mode}) at a trial's last epoch"),
        ("Search evaluated on", eval_split(s)),
        ("Search", f"{search}, num_samples {s.params.get('num_samples', '?')}"),
        ("ASHA", f"grace {asha[0]}, reduction factor {asha[1]}, max {asha[2]} epochs" if asha else "none"),
        ("Swept", ", ".join(s.swept) or "none"),
        ("kNN protocol", knn_protocol(s)),
        ("Trials", str(len(s.trials))),
    ]
    rows += [(status, str(n)) for status, n in counts.items()]
    rows += [
        ("Best search value (full budget)", f"{num(best['final_metric'])} ({best['trial']})" if best is not None
         else ("none yet" if s.running else "none")),
        ("Final-stage runs", f"{len(s.finals_done)} completed of {len(f)}" if len(f) else "none"),
        ("Compute (trial-hours)", f"{(trial_hours(s) + float(f['compute_s'].sum()) / 3600 if len(f) else trial_hours(s)):.2f}"),
        ("GPU-hours", f"{gpu:.2f}" if gpu is not None else "no GPUs used"),
        ("Wall time", duration(s.wall_s) + (" so far" if s.running else "")),
    ]
    return rows
