"""A compact console view of a running sweep, instead of Ray's full tables (sweep/progress.py draws
it): on a terminal, a bar over the stage's epoch budget redrawn in place with a line per running
trial; in a log, plain lines."""
from __future__ import annotations

import os
import sys
import time

from ray.tune import Callback
from tqdm import tqdm

from sweep.progress import StageView, TrialRow, eta_seconds, sig
from sweep.space import SweepSpec
from vocabulary import COMPLETED, INTERRUPTED, PENDING, RUNNING, better, outcome

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} epochs{postfix}"
# on a terminal, results redraw the view at most this often: a redraw of 32 trials' lines took 22 ms
# (40 ms at the 99th percentile) on a loaded machine (benchmarks/driver_scale.py), and Tune waits for it
REDRAW_S = 0.5


def trial_outcome(trial, max_epochs: int, ended: bool = False) -> str:
    """A Tune trial's status in the shared vocabulary (ended: it has just ended)."""
    if trial.status == "ERROR":
        return outcome(0, max_epochs, errored=True)
    if trial.status == "TERMINATED" or ended:
        result = trial.last_result or {}
        return outcome(int(result.get("epoch", 0)), max_epochs, diverged=bool(result.get("diverged")))
    return RUNNING if trial.status == "RUNNING" else PENDING


def format_config(config: dict, keys: list[str]) -> str:
    return " ".join(f"{key}={sig(config.get(key))}" for key in keys)


class ConsoleProgress(Callback):
    """The stage's view on each trial event. On a terminal: a bar over the stage's epoch budget and a
    line per running trial, redrawn in place at each trial event and at most every REDRAW_S seconds for
    results (in colour unless NO_COLOR is set). Else: plain lines, the view at most every `every_s`
    seconds for epoch results."""

    def __init__(self, spec: SweepSpec, every_s: float = 10.0, stream=None, final_stage: bool = False,
                 total: int | None = None):
        self.spec = spec
        self.final_stage = final_stage
        self.every_s = every_s
        self.stream = stream
        self.total = total  # trials this run will have (default: the space's; the final stage: Tune's list)
        self._last = 0.0
        self._start = time.monotonic()
        self._best: tuple[float, str, str] | None = None
        self._arms: dict[str, list[float]] = {}  # a comparison sweep: arm -> its completed trials' values
        self._live: set[str] = set()  # trials that ran in this driver and have not ended
        self._before: dict[str, int] = {}  # trial -> the epoch it had reached before this driver ran it
        self._reported: dict[str, tuple[int, float | None]] = {}  # trial -> (its last epoch, its metric there)
        self._bars: list[tqdm] = []  # on a terminal: the stage's bar, then one line per running trial

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(stream=None, _bars=[])
        return state

    def __setstate__(self, state):
        """A resumed driver: the ETA counts the epochs trained from now on, over the time from now on."""
        self.__dict__.update(state, _start=time.monotonic(), _before={}, _live=set(), _last=0.0)

    def _out(self):
        return self.stream or sys.stdout

    def _view(self, trials, event: str = "", ended=None) -> StageView:
        rows = []
        max_epochs = self.spec.max_epochs
        for t in trials:
            status = trial_outcome(t, max_epochs, ended=t is ended)  # final runs: the same budget
            if t.trial_id in self._live and t.status == "TERMINATED" and t is not ended:
                status = INTERRUPTED  # Tune stopped it because the driver was interrupted
            if t is ended and event.endswith("failed"):
                status = "failed"
            last = t.last_result or {}
            epoch, value = int(last.get("epoch", 0) or 0), last.get(self.spec.metric)
            if self._reported.get(t.trial_id, (-1,))[0] >= epoch:  # Tune updates last_result after the callbacks
                epoch, value = self._reported[t.trial_id]
            rows.append(TrialRow(_short(t), status, epoch, value))
        total = max(self.total or (len(trials) if self.final_stage else self.spec.total_trials), len(trials))
        epochs = {t.trial_id: row.epoch for t, row in zip(trials, rows)}
        trained = sum(max(0, epochs[i] - before) for i, before in self._before.items() if i in epochs)
        view = StageView("final stage" if self.final_stage else "search", rows, total, max_epochs,
                         self.spec.metric, bounded=self.spec.scheduler.stops_early and not self.final_stage)
        view.eta_s = eta_seconds(time.monotonic() - self._start, trained, view.epochs_left)
        if self._arms:
            view.best = f"mean {self.spec.metric} so far: " + ", ".join(
                f"{arm} {sig(sum(v) / len(v))} (n {len(v)})" for arm, v in sorted(self._arms.items()))
        elif self._best:
            value, name, config = self._best
            view.best = f"best {self.spec.metric} {sig(value)} ({name}: {config})"
        return view

    def _print(self, trials, event: str = "", ended=None) -> None:
        view = self._view(trials, event, ended)
        stamp = time.strftime("%H:%M:%S")
        if self._out().isatty():
            self._draw(view)
            if event:
                tqdm.write(f"[{stamp}] {view.stage}: {event}", file=self._out())
        elif event:
            print(f"[{stamp}] {view.line()} | {event}", file=self._out(), flush=True)
        else:
            lines = [f"[{stamp}] {view.line()}", *(f"  {line}" for line in view.trial_lines(running_only=True))]
            print("\n".join(lines), file=self._out(), flush=True)
        self._last = time.monotonic()

    def _draw(self, view: StageView) -> None:
        """Redraw the bar and the running trials' lines in place (tqdm), growing the lines as needed."""
        lines = view.trial_lines(running_only=True)
        colour = None if os.environ.get("NO_COLOR") else "green"
        while len(self._bars) < 1 + len(lines):
            first = not self._bars
            self._bars.append(tqdm(
                file=self._out(), position=len(self._bars), dynamic_ncols=True, mininterval=0, leave=first,
                bar_format=BAR_FORMAT if first else "{desc}", colour=colour if first else None, desc=view.stage,
                total=view.budget if first else None))
        bar = self._bars[0]
        bar.total, bar.n = view.budget, view.epochs_done
        bar.set_postfix_str(view.details(), refresh=False)
        for line, text in zip(self._bars[1:], lines + [""] * len(self._bars)):
            line.set_description_str(f"  {text}", refresh=False)
        for each in self._bars:
            each.refresh()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._live.add(trial.trial_id)
        self._print(trials, f"{_short(trial)} started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._live.add(trial.trial_id)
        epoch = int(result.get("epoch", 0) or 0)
        self._before.setdefault(trial.trial_id, max(0, epoch - 1))
        self._reported[trial.trial_id] = (epoch, result.get(self.spec.metric))
        if time.monotonic() - self._last >= (REDRAW_S if self._out().isatty() else self.every_s):
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._live.discard(trial.trial_id)
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
        self._print(trials, f"{_short(trial)} failed", ended=trial)

    def on_experiment_end(self, trials, **info):
        """Tune has ended: trials it stopped without ending them are interrupted (resume continues them)."""
        stopped = [t for t in trials if t.trial_id in self._live and t.status == "TERMINATED"]
        if stopped:
            self._print(trials, f"driver interrupted: {len(stopped)} trial{'s' if len(stopped) > 1 else ''} "
                                f"interrupted ({', '.join(_short(t) for t in stopped)})")
        for each in self._bars:
            each.close()
        self._bars = []


def _short(trial) -> str:
    return f"trial_{trial.trial_id}"

