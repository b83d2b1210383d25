"""`byol-sweep plan`: what a sweep will cost before it runs. Its trials, the epochs its scheduler
lets them train (lowest, expected and highest), its final stage, and with an epoch's time (given,
or measured here on a few real steps) its trial-hours, GPU-hours and wall time at the concurrency
the resources allow (one trial per CPU, or one per GPU, as a sweep's trials get them)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from sweep.errors import SweepError
from sweep.space.schedulers import Asha, HyperBand
from sweep.space.spec import SweepSpec
from sweep.tuner.machine import local_gpu_count

MEASURE_STEPS = 4  # timed training steps of --measure, after one untimed step


@dataclass(frozen=True)
class Span:
    """A quantity at its lowest, expected and highest."""

    lowest: float
    expected: float
    highest: float

    def __add__(self, other: Span) -> Span:
        return Span(self.lowest + other.lowest, self.expected + other.expected, self.highest + other.highest)

    def times(self, factor: float) -> Span:
        return Span(self.lowest * factor, self.expected * factor, self.highest * factor)


@dataclass(frozen=True)
class Plan:
    space: str
    trials: int
    scheduler: str  # the scheduler's description
    search_epochs: Span  # over all trials of the search
    final_runs: int
    final_epochs: Span  # over all runs of the final stage
    final_stage: str  # the final stage in words
    concurrency: int  # trials at once
    gpus_per_trial: int
    resources: str  # where the concurrency comes from, in words
    epoch_seconds: float | None = None
    measured_on: str | None = None  # how --measure timed the epoch, or None

    @property
    def epochs(self) -> Span:
        return self.search_epochs + self.final_epochs

    @property
    def trial_hours(self) -> Span | None:
        return None if self.epoch_seconds is None else self.epochs.times(self.epoch_seconds / 3600)

    @property
    def gpu_hours(self) -> Span | None:
        return None if self.trial_hours is None else self.trial_hours.times(self.gpus_per_trial)

    @property
    def wall_hours(self) -> Span | None:
        """The search's trial-hours shared by the trials running at once, then the final stage in waves
        of as many runs as run at once."""
        if self.epoch_seconds is None:
            return None
        hour = self.epoch_seconds / 3600
        search = self.search_epochs.times(hour / min(self.concurrency, self.trials))
        if not self.final_runs:
            return search
        waves = math.ceil(self.final_runs / self.concurrency)
        return search + self.final_epochs.times(hour * waves / self.final_runs)


def plan_space(spec: SweepSpec, epoch_seconds: float | None, measure: bool, gpus: int | None,
               cpus: int | None) -> Plan:
    """The plan of a sweep over `spec`: an epoch takes `epoch_seconds`, or what `measure` finds here,
    or neither (counts only); trials run on `gpus` GPUs or `cpus` CPUs (default: this machine's)."""
    if epoch_seconds is not None and measure:
        raise SweepError("give --epoch-seconds or --measure, not both")
    if epoch_seconds is not None and not (math.isfinite(epoch_seconds) and epoch_seconds > 0):
        raise SweepError(f"--epoch-seconds is {epoch_seconds:g}; allowed: a number of seconds above 0")
    if gpus is not None and gpus < 0:
        raise SweepError(f"--gpus is {gpus}; allowed: a whole number from 0")
    if cpus is not None and cpus < 1:
        raise SweepError(f"--cpus is {cpus}; allowed: a whole number from 1")
    where = ""
    if gpus is None and cpus is None:
        gpus, where = local_gpu_count(), "this machine's "
    if not gpus and cpus is None:
        cpus, where = os.cpu_count() or 1, "this machine's "
    concurrency, gpus_per_trial, resources = _concurrency(gpus or 0, cpus, where)
    measured_on = None
    if measure:
        epoch_seconds, measured_on = measure_epoch_seconds(spec)
    final_runs, final_epochs = _final_stage(spec)
    return Plan(space=spec.name, trials=spec.total_trials, scheduler=spec.scheduler.describe(),
                search_epochs=search_epochs(spec), final_runs=final_runs, final_epochs=final_epochs,
                final_stage=_final_words(spec, final_runs),
                concurrency=concurrency, gpus_per_trial=gpus_per_trial, resources=resources,
                epoch_seconds=epoch_seconds, measured_on=measured_on)


def _concurrency(gpus: int, cpus: int | None, where: str) -> tuple[int, int, str]:
    """(trials at once, GPUs per trial, in words), as sweep/tuner/ray_setup.py trial_resources gives a
    sweep's trials their resources: one GPU each when there are GPUs, else one CPU each."""
    if gpus:
        at_once = min(gpus, cpus) if cpus else gpus  # each trial takes at least one CPU beside its GPU
        return at_once, 1, f"{where}{gpus} GPU{'s' if gpus > 1 else ''}, 1 GPU per trial"
    return cpus, 0, f"{where}{cpus} CPU{'s' if cpus > 1 else ''}, 1 CPU per trial"


def search_epochs(spec: SweepSpec) -> Span:
    """The epochs the search's trials train together, as its scheduler lets them."""
    trials, scheduler = spec.total_trials, spec.scheduler
    if isinstance(scheduler, Asha):
        return _asha_epochs(trials, scheduler.rungs(), scheduler.reduction_factor, scheduler.max_epochs)
    if isinstance(scheduler, HyperBand):
        epochs = _hyperband_epochs(trials, scheduler)
        return Span(epochs, epochs, epochs)
    full = trials * spec.max_epochs  # FIFO and PBT: every trial (every member) trains the whole budget
    return Span(full, full, full)


def _asha_epochs(trials: int, rungs: list[int], reduction_factor: int, max_epochs: int) -> Span:
    """ASHA's epochs over its one bracket. Lowest: every trial stops at the first rung but the one
    that reaches each rung first (it has nothing to lose against, so it goes on to the full budget).
    Expected: 1/reduction_factor of the trials at each rung go on (and at least that first one).
    Highest: every trial trains the full budget (each beats those before it at every rung)."""
    marks = [*rungs, max_epochs]
    lowest = (trials - 1) * marks[0] + max_epochs
    expected = trials * marks[0] + sum(max(1.0, trials / reduction_factor ** (i + 1)) * (marks[i + 1] - marks[i])
                                       for i in range(len(rungs)))
    return Span(lowest, expected, trials * max_epochs)


def _hyperband_epochs(trials: int, scheduler: HyperBand) -> int:
    """Ray's synchronous HyperBand fixes every trial's epochs: trials fill brackets s = 0, 1, ... in
    turn (bracket s: n0 trials from int(max * rf^-s) epochs, the best ceil(n / rf) going on rf times
    as long, s times), and the brackets repeat while trials are left."""
    rf, max_epochs, epochs, left = scheduler.reduction_factor, scheduler.max_epochs, 0, trials
    sizes = scheduler.bracket_sizes()
    while left:
        for s, size in enumerate(sizes):
            r = int(max_epochs * rf ** (-s))
            if not r:  # Ray skips a bracket that would start at 0 epochs
                continue
            live, n = min(size, left), size
            left -= live
            epochs += live * r
            for _ in range(s):
                n = math.ceil(n / rf)
                live = min(live, n)
                longer = int(min(r * rf, max_epochs))
                epochs += live * (longer - r)
                r = longer
            if not left:
                break
    return epochs


def _final_stage(spec: SweepSpec) -> tuple[int, Span]:
    """(runs, their epochs) of the final stage: top_k configurations (per value of `per`) x seeds,
    each for the full budget."""
    final = spec.final
    if final is None:
        return 0, Span(0, 0, 0)
    trials, groups = spec.total_trials, 1
    if final.per in spec.grid:
        groups = len(spec.grid[final.per])
    elif final.per is not None:  # a searched field: as many groups as its values the trials draw
        d = spec.search[final.per]
        groups = min(len(d.values), trials) if d.kind == "choice" else trials
    runs = groups * min(final.top_k, math.ceil(trials / groups)) * final.seeds
    epochs = runs * spec.max_epochs
    return runs, Span(epochs, epochs, epochs)


def _final_words(spec: SweepSpec, runs: int) -> str:
    if spec.final is None:
        return "no final stage"
    per = f" per {spec.final.per}" if spec.final.per else ""
    return (f"final stage: {runs} run{'s' if runs > 1 else ''} of the full budget (the top {spec.final.top_k}{per} "
            f"x {spec.final.seeds} seed{'s' if spec.final.seeds > 1 else ''})")


def measure_epoch_seconds(spec: SweepSpec) -> tuple[float, str]:
    """(seconds of one epoch, how it was measured): a few real training steps of the space's base
    configuration on this machine, scaled to an epoch of its training set, plus one evaluation."""
    from trainer import Trainer  # torch and the data: only --measure trains

    trainer = Trainer(spec.train_config({}))
    config = trainer.config
    warmup = int(round(config.warmup_epochs * trainer.steps_per_epoch))
    batch = trainer.data.train_images[: trainer.batch_size]
    float(trainer.train_step(batch, warmup)[0])  # untimed: the first step allocates and compiles
    start = time.perf_counter()
    for _ in range(MEASURE_STEPS):
        loss = trainer.train_step(batch, warmup)[0]
    float(loss)  # waits for the device
    step_s = (time.perf_counter() - start) / MEASURE_STEPS
    start = time.perf_counter()
    trainer.evaluate()
    eval_s = time.perf_counter() - start
    how = (f"measured on this machine ({trainer.device.type}): {MEASURE_STEPS} steps of the base configuration at "
           f"{_sig(step_s)} s each x {trainer.steps_per_epoch} steps per epoch (batch {trainer.batch_size}) "
           f"+ {_sig(eval_s)} s of evaluation")
    return trainer.steps_per_epoch * step_s + eval_s, how


def _sig(x: float) -> str:
    """x to at most 4 significant digits, without an exponent."""
    if not x:
        return "0"
    rounded = float(f"{x:.4g}")
    decimals = max(0, 3 - math.floor(math.log10(abs(rounded))))
    text = f"{rounded:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_plan(plan: Plan) -> str:
    """The plan as the console shows it."""
    lines = [f"plan of {plan.space}: {plan.trials} trial{'s' if plan.trials > 1 else ''}, {plan.scheduler}; "
             f"{plan.final_stage}"]
    rows = [("search epochs", plan.search_epochs)]
    if plan.final_runs:
        rows += [("final-stage epochs", plan.final_epochs), ("total epochs", plan.epochs)]
    if plan.epoch_seconds is None:
        tail = ["the hours need --epoch-seconds S (one epoch's seconds on the machine that will run the sweep) "
                "or --measure (a few real steps timed here)"]
    else:
        lines += [f"one epoch: {_sig(plan.epoch_seconds)} s ({plan.measured_on or 'given'})",
                  f"{plan.concurrency} trial{'s' if plan.concurrency > 1 else ''} at once ({plan.resources})"]
        rows += [("trial-hours", plan.trial_hours), ("GPU-hours", plan.gpu_hours), ("wall hours", plan.wall_hours)]
        tail = []
    table = [("", "lowest", "expected", "highest")] + [(name, _sig(s.lowest), _sig(s.expected), _sig(s.highest))
                                                      for name, s in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines += ["  " + row[0].ljust(widths[0]) + "".join("  " + cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))
              for row in table]
    return "\n".join(lines + tail)
