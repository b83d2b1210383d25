"""A compact console view of a running sweep, instead of Ray's full tables."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from sweep.space import SweepSpec
from vocabulary import COMPLETED, ENDED, INTERRUPTED, PENDING, RUNNING, better, outcome


def trial_outcome(trial, max_epochs: int, ended: bool = False) -> str:
    """A Tune trial's status in the shared vocabulary (ended: it has just ended)."""
    if trial.status == "ERROR":
        return outcome(0, max_epochs, errored=True)
    if trial.status == "TERMINATED" or ended:
        result = trial.last_result or {}
        return outcome(int(result.get("epoch", 0)), max_epochs, diverged=bool(result.get("diverged")))
    return RUNNING if trial.status == "RUNNING" else PENDING


def progress_text(ended: int, total: int, elapsed_s: float, ended_here: int,
                  epochs: tuple[int, int] | None = None) -> str:
    """`k of N trials ended`, and a rough ETA. Search: once a trial ended in this driver, the time per
    trial ended so far (with the trials' concurrency in it) times the trials left; ASHA ends its early
    stops sooner than full-budget trials, so early on the ETA is low. Final stage (every run trains the
    whole budget, several at once): `epochs` = (epochs trained in this driver, epochs left), and the
    ETA is the time so far per epoch trained times the epochs left."""
    text = f"{ended} of {total} trials ended"
    if ended >= total:
        return text
    if epochs is not None:
        done, left = epochs
        minutes = elapsed_s / done * left / 60 if done else None
    else:
        minutes = elapsed_s / ended_here * (total - ended) / 60 if ended_here else None
    if minutes is not None:
        text += f", ETA ~{minutes:.0f} min (rough)" if minutes >= 1 else ", ETA <1 min (rough)"
    return text


def format_config(config: dict, keys: list[str]) -> str:
    parts = []
    for key in keys:
        value = config.get(key)
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class ConsoleProgress(Callback):
    """One line on each trial event (at most every `every_s` seconds for epoch results)."""

    def __init__(self, spec: SweepSpec, every_s: float = 10.0, stream=None, final_stage: bool = False,
                 total: int | None = None):
        self.spec = spec
        self.final_stage = final_stage
        self.every_s = every_s
        self.stream = stream
        self.total = total  # trials this run will have (default: the space's; the final stage: Tune's list)
        self._last = 0.0
        self._start = time.monotonic()
        self._ended_here = 0  # trials that ended in this driver: the ETA's rate (a resumed sweep's earlier ones are not)
        self._best: tuple[float, str, str] | None = None
        self._arms: dict[str, list[float]] = {}  # a comparison sweep: arm -> its completed trials' values
        self._live: set[str] = set()  # trials that ran in this driver and have not ended
        self._before: dict[str, int] = {}  # trial -> the epoch it had reached before this driver ran it

    def __getstate__(self):
        state = self.__dict__.copy()
        state["stream"] = None
        return state

    def _print(self, trials, event: str = "", ended=None) -> None:
        counts: dict[str, int] = {}
        for t in trials:
            outcome = trial_outcome(t, self.spec.max_epochs, ended=t is ended)  # final runs: the same budget
            if t.trial_id in self._live and t.status == "TERMINATED" and t is not ended:
                outcome = INTERRUPTED  # Tune stopped it because the driver was interrupted
            if t is ended and event.endswith("failed"):
                outcome = "failed"
            counts[outcome] = counts.get(outcome, 0) + 1
        order = ("running", "pending", "completed", "stopped_early", "diverged", "failed", "interrupted")
        status = " | ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in order if counts.get(k))
        ended_count = sum(counts.get(k, 0) for k in ENDED)
        total = max(self.total or (len(trials) if self.final_stage else self.spec.total_trials), len(trials))
        epochs = None
        if self.final_stage:
            last = {t.trial_id: int((t.last_result or {}).get("epoch", 0) or 0) for t in trials}
            done = sum(max(0, last[i] - before) for i, before in self._before.items() if i in last)
            left = sum(max(0, self.spec.max_epochs - last[t.trial_id]) for t in trials
                       if t is not ended and t.status not in ("TERMINATED", "ERROR"))
            epochs = (done, left + self.spec.max_epochs * max(0, total - len(trials)))
        status += " | " + progress_text(ended_count, total, time.monotonic() - self._start, self._ended_here, epochs)
        best = ""
        if self._arms:
            best = f" | mean {self.spec.metric} so far: " + ", ".join(
                f"{arm} {sum(v) / len(v):.4f} (n {len(v)})" for arm, v in sorted(self._arms.items()))
        elif self._best:
            value, name, config = self._best
            best = f" | best {self.spec.metric} {value:.4f} ({name}: {config})"
        stamp = time.strftime("%H:%M:%S") + (" final stage" if self.final_stage else "")
        print(f"[{stamp}] {status}{best}{(' | ' + event) if event else ''}", file=self.stream or sys.stdout, flush=True)
        self._last = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._live.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._live.add(trial.trial_id)
        self._before.setdefault(trial.trial_id, max(0, int(result.get("epoch", 0) or 0) - 1))
        if time.monotonic() - self._last >= self.every_s:
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._live.discard(trial.trial_id)
        self._ended_here += 1
        status = trial_outcome(trial, self.spec.max_epochs, ended=True)
        result = trial.last_result or {}
        value = result.get(self.spec.metric)
        # the objective: the value at the last epoch, compared only across full-budget trials
        completed = not self.final_stage and status == COMPLETED and value is not None
        config = self.spec.values(self.spec.train_config(trial.config)) if completed else {}
        if completed and self.spec.compared_fields:
            # a comparison's best single (arm, seed) trial answers no question: each arm's mean so far
            arm = " ".join(f"{key}={config[key]}" for key in self.spec.compared_fields)  # the grid's values as written
            self._arms.setdefault(arm, []).append(float(value))
        elif completed and better(self.spec.mode, float(value), self._best and self._best[0]):
            self._best = (float(value), _short(trial), format_config(config, self.spec.swept))
        self._print(trials, f"{_short(trial)} {status.replace('_', ' ')} at epoch {result.get('epoch', 0)}", ended=trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._live.discard(trial.trial_id)
        self._ended_here += 1
        self._print(trials, f"{_short(trial)} failed", ended=trial)

    def on_experiment_end(self, trials, **info):
        """Tune has ended: trials it stopped without ending them are interrupted (resume continues them)."""
        stopped = [t for t in trials if t.trial_id in self._live and t.status == "TERMINATED"]
        if stopped:
            self._print(trials, f"driver interrupted: {len(stopped)} trial{'s' if len(stopped) > 1 else ''} "
                                f"interrupted ({', '.join(_short(t) for t in stopped)})")


def _short(trial) -> str:
    return f"trial_{trial.trial_id}"

