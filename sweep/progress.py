"""The view of a sweep's progress, as the console draws it while the sweep runs and `byol-sweep status`
prints it from another terminal: one line per stage (its epochs of the budget, the ETA, its trials by
status, the best so far) and one line per trial (its status, its epoch of the budget, its latest
metric), every number to 4 significant digits."""
from __future__ import annotations

import math
from dataclasses import dataclass

from vocabulary import ENDED, RUNNING

ORDER = ("running", "pending", "completed", "stopped_early", "diverged", "failed", "interrupted")


def sig(value) -> str:
    """A value as the console shows it: a float to 4 significant digits and still written as a float
    (5.0, not 5); anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    text = f"{value:.4g}"
    return text if not math.isfinite(value) or "." in text or "e" in text else f"{text}.0"


def eta_seconds(elapsed_s: float, trained: int, left: int) -> float | None:
    """The time left: the time so far per epoch trained (with the trials' concurrency in it) times the
    epochs left; None before the first epoch."""
    return elapsed_s / trained * left if trained else None


@dataclass
class TrialRow:
    name: str
    status: str  # a vocabulary status
    epoch: int  # the last epoch it reported
    value: float | None  # its metric at that epoch


@dataclass
class StageView:
    """One stage of a sweep (the search, or the final stage) and its trials."""

    stage: str
    rows: list[TrialRow]
    total: int  # the trials the stage will have
    max_epochs: int
    metric: str
    bounded: bool  # a scheduler may stop trials early: the epoch budget is an upper bound
    eta_s: float | None = None
    best: str = ""

    @property
    def epochs_done(self) -> int:
        return sum(row.epoch for row in self.rows)

    @property
    def epochs_left(self) -> int:
        """The epochs its trials may still train (an interrupted trial continues on resume)."""
        left = sum(max(0, self.max_epochs - row.epoch) for row in self.rows if row.status not in ENDED)
        return left + self.max_epochs * max(0, self.total - len(self.rows))

    @property
    def budget(self) -> int:
        return self.epochs_done + self.epochs_left

    def epochs_text(self) -> str:
        done, budget = self.epochs_done, self.budget
        share = 100 * done / budget if budget else 100.0
        upper = "at most " if self.bounded and self.epochs_left else ""
        return f"{done} of {upper}{budget} epochs ({share:.0f}%)"

    def details(self) -> str:
        """The ETA, the trials by status and the best so far."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        ended = sum(counts.get(k, 0) for k in ENDED)
        pending = max(0, self.total - len(self.rows))
        if pending:
            counts["pending"] = counts.get("pending", 0) + pending
        parts = []
        if self.eta_s is not None and self.epochs_left:
            minutes = self.eta_s / 60
            parts.append(f"ETA ~{minutes:.0f} min (rough)" if minutes >= 1 else "ETA <1 min (rough)")
        statuses = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in ORDER if counts.get(k))
        parts.append(f"{ended} of {self.total} trials ended" + (f" ({statuses})" if statuses else ""))
        return " | ".join(parts + ([self.best] if self.best else []))

    def line(self) -> str:
        return f"{self.stage}: {self.epochs_text()} | {self.details()}"

    def trial_lines(self, running_only: bool = False) -> list[str]:
        width = max((len(row.name) for row in self.rows), default=0)
        return [f"{row.name:<{width}}  {row.status.replace('_', ' '):<13}  epoch {row.epoch}/{self.max_epochs}  "
                f"{self.metric} {'-' if row.value is None else sig(row.value)}"
                for row in self.rows if not running_only or row.status == RUNNING]
