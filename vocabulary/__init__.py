"""The words every layer shares: trial statuses and how an outcome is decided, metric names,
which value is better, ASHA's rungs, and a trial's objective. Imports neither torch nor Ray, so
trainer/, sweep/ and reports/ all use it (imports point down to it)."""
from __future__ import annotations

import math
from typing import Iterable

# -- statuses ---------------------------------------------------------------------------------
COMPLETED = "completed"          # ran the full budget
STOPPED_EARLY = "stopped_early"  # a scheduler (ASHA) stopped it at a rung
DIVERGED = "diverged"            # its loss became NaN or infinite
FAILED = "failed"                # its worker raised (after Tune's retries)
INTERRUPTED = "interrupted"      # the driver stopped (Ctrl-C, crash) while it ran; resume continues it
RUNNING = "running"
PENDING = "pending"

ENDED = (COMPLETED, STOPPED_EARLY, DIVERGED, FAILED)
STATUSES = (COMPLETED, STOPPED_EARLY, DIVERGED, FAILED, INTERRUPTED, RUNNING)
# ran to a value a scheduler compared: the trials a search learns from
FINISHED = (COMPLETED, STOPPED_EARLY)

# -- metrics ----------------------------------------------------------------------------------
# TrainConfig fields a running trial may change from one epoch to the next (Population Based
# Training does): read at every step (lr, tau) or only shaping the augmented views
CONTINUABLE_FIELDS = ("base_lr", "tau_base", "aug_strength")
# a trial's value of each of them per epoch, where they may change (a PBT sweep reports them)
HYPERPARAMETER_METRICS = tuple(f"hp.{name}" for name in CONTINUABLE_FIELDS)

# one value per epoch, logged at step = epoch
EPOCH_METRICS = ("loss", "knn_acc", "z_std", "z_spread", "eff_rank", "lr", "tau", "images_per_s", "epoch_s",
                 *HYPERPARAMETER_METRICS)
# logged once, after the last epoch
FINAL_METRICS = ("linear_probe_acc",)
# what a sweep may select on, with its natural direction
OBJECTIVES = {"knn_acc": "max", "loss": "min", "z_std": "max", "z_spread": "max", "eff_rank": "max"}
MODES = ("max", "min")

# TrainConfig fields that change where and how fast a run goes, not what it learns: a resumed run
# may change them, and a comparison of arms ignores them
RUNTIME_FIELDS = ("data_root", "download", "cache_dir", "linear_probe", "device", "precision", "channels_last",
                  "compile")

# collapse: the projections no longer spread (z_spread = z_std * sqrt(dim): 1 spread, 0 one point)
# or lie on a line (eff_rank, RankMe: about 1 for a line or two antipodal points)
COLLAPSE_SPREAD = 0.1
COLLAPSE_RANK = 2.0


def collapsed(z_spread: float, eff_rank: float) -> bool:
    return (z_spread == z_spread and z_spread < COLLAPSE_SPREAD) or (eff_rank == eff_rank and eff_rank < COLLAPSE_RANK)


def default_mode(metric: str) -> str:
    return OBJECTIVES.get(metric, "max")


def better(mode: str, a: float, b: float | None) -> bool:
    """Is a strictly better than b for this mode? NaN is never better; anything beats None."""
    if a is None or a != a:
        return False
    if b is None or b != b:
        return True
    return a > b if mode == "max" else a < b


def best_index(values: Iterable[float], mode: str) -> int | None:
    """Index of the best finite value (the first of ties), or None."""
    best, at = None, None
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v) and better(mode, v, best):
            best, at = v, i
    return at


def objective(values: Iterable[float]) -> float:
    """A trial's value: its metric at its last reported epoch (the state its checkpoint holds).
    NaN when that epoch has no finite value: an earlier, better epoch does not stand in for it."""
    out = math.nan
    for v in values:
        out = math.nan if v is None else float(v)
    return out


# -- outcomes ---------------------------------------------------------------------------------
def outcome(epochs_run: int, max_epochs: int, *, diverged: bool = False, errored: bool = False,
            ended: bool = True) -> str:
    """The status of a trial that has ended (or, with ended=False, whose driver stopped)."""
    if errored:
        return FAILED
    if diverged:
        return DIVERGED
    if epochs_run >= max_epochs:
        return COMPLETED
    return STOPPED_EARLY if ended else INTERRUPTED


# -- ASHA -------------------------------------------------------------------------------------
def asha_rungs(grace_period: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """The epochs at which ASHA compares trials: grace * rf**k strictly below max_epochs.
    (At max_epochs every trial stops anyway; it is the full budget, not a rung.)"""
    out, r = [], grace_period
    while r < max_epochs:
        out.append(int(r))
        r *= reduction_factor
    return out
