"""Trial schedulers as registry entries. Each entry is one dataclass: its fields are its YAML keys
(with their defaults and checks), `check` holds its rules against the rest of the space, `build`
makes the Ray object, `checkpoint_epochs` says where a trial must leave a checkpoint for it, and
`trial_limit` is its concurrency rule. Adding a scheduler is one entry in SCHEDULERS.

YAML: `scheduler: {name: hyperband, reduction_factor: 3}` (or `scheduler: fifo`); the older
`asha: {...}` / `asha: false` keys still mean `scheduler: {name: asha, ...}` / `scheduler: fifo`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sweep.space.registry import Context, Entry, fail, flag, key, number, positive_numbers, whole
from vocabulary import CONTINUABLE_FIELDS as PBT_MUTABLE  # what a running trial may change
from vocabulary import asha_rungs

if TYPE_CHECKING:  # a type hint only: the spec holds its scheduler
    from sweep.space.spec import SweepSpec


@dataclass
class Scheduler(Entry):
    """The defaults every scheduler shares; an entry overrides what it does differently."""

    searchers: ClassVar[tuple[str, ...] | None] = None  # the searchers it works with; None: all
    default_searcher: ClassVar[str] = "optuna"
    final_stage: ClassVar[str | None] = None  # why the final stage does not apply, or None
    stops_early: ClassVar[bool] = False

    @property
    def max_epochs(self) -> int | None:
        """The budget the scheduler fixes (base.epochs is set to it), or None."""
        return None

    def checkpoint_epochs(self, epochs: int) -> set[int]:
        """Epochs at which a trial must leave a checkpoint for this scheduler (it may pause or stop
        a trial there, and resume or copy it later)."""
        return set()

    def trial_limit(self, concurrency: int, spec: SweepSpec) -> tuple[int | None, str | None]:
        """How many trials may be live at once (None: no limit, the cluster's resources decide),
        and a note for the console when the scheduler changes the runner's concurrency."""
        return concurrency, None

    def check_spec(self, spec: SweepSpec, where: str) -> None:
        """Rules that need the whole parsed space (num_samples, the final stage)."""

    def checkpoints_to_keep(self) -> int | None:
        """How many checkpoints of a trial Tune keeps (None: all)."""
        return 2

    def build(self, spec: SweepSpec, decisions: dict[str, list[dict]]):
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def _check_budget(self, ctx: Context, where: str) -> None:
        """A scheduler with its own max_epochs: default base.epochs, which it must agree with."""
        if self.max_epochs is None:
            self.max_epochs = ctx.epochs
        if ctx.epochs_set and self.max_epochs != ctx.epochs:
            raise ctx.fail(f"{where}.max_epochs", f"is {self.max_epochs} but base.epochs is {ctx.epochs}; they must "
                                                  "agree (the schedules span all epochs)")
        if "epochs" in ctx.search or "epochs" in ctx.grid:
            raise ctx.fail(where, f"{self.name} cannot be used while epochs is swept; use scheduler: fifo")


@dataclass
class Fifo(Scheduler):
    """Every trial runs its full budget."""

    name: ClassVar[str] = "fifo"

    def build(self, spec, decisions):
        from ray.tune.schedulers import FIFOScheduler  # Ray: a space is checked without it

        return FIFOScheduler()

    def describe(self) -> str:
        return "no early stopping"


@dataclass
class Asha(Scheduler):
    """Ray's ASHA, recording each decision (tags asha.rung_<epoch>, which the report reads)."""

    name: ClassVar[str] = "asha"
    stops_early: ClassVar[bool] = True
    grace_period: int = key(1, whole(1), "epochs before the first rung")
    reduction_factor: int = key(2, whole(2), "1/reduction_factor of the trials continue at each rung")
    max_epochs: int | None = key(None, whole(1), "the full budget (default base.epochs)")

    def check(self, ctx: Context, where: str) -> None:
        self._check_budget(ctx, where)
        if self.grace_period >= self.max_epochs:
            raise ctx.fail(f"{where}.grace_period", f"must be below max_epochs ({self.max_epochs}), got {self.grace_period}")

    def rungs(self) -> list[int]:
        """Epochs at which ASHA compares trials (below max_epochs)."""
        return asha_rungs(self.grace_period, self.reduction_factor, self.max_epochs)

    def checkpoint_epochs(self, epochs: int) -> set[int]:
        return set(self.rungs())

    def build(self, spec, decisions):
        from sweep.tuner.algorithms import RecordingASHA  # Ray: a space is checked without it

        return RecordingASHA(time_attr="epoch", max_t=self.max_epochs, grace_period=self.grace_period,
                             reduction_factor=self.reduction_factor, decisions=decisions)

    def params(self, prefix: str) -> dict[str, Any]:
        # asha.* as before, which reports of older sweeps (and this one) read
        return {**super().params(prefix), **{f"asha.{k}": v for k, v in self.settings().items()}}

    def describe(self) -> str:
        return (f"ASHA grace {self.grace_period}, reduction {self.reduction_factor}, "
                f"max {self.max_epochs} epochs")


@dataclass
class HyperBand(Scheduler):
    """Ray's synchronous HyperBand: several brackets of successive halving, each starting its trials
    at a different budget; trials wait (paused, from a checkpoint) until their bracket is judged."""

    name: ClassVar[str] = "hyperband"
    stops_early: ClassVar[bool] = True
    reduction_factor: int = key(3, whole(2), "1/reduction_factor of a bracket's trials continue at each milestone")
    max_epochs: int | None = key(None, whole(1), "the full budget (default base.epochs)")

    def check(self, ctx: Context, where: str) -> None:
        self._check_budget(ctx, where)
        if self.brackets() < 2:
            raise ctx.fail(f"{where}.reduction_factor", f"gives a single bracket with max_epochs {self.max_epochs}; "
                           f"allowed: a reduction_factor of at most {max(2, int(self.max_epochs ** 2))} that leaves "
                           "max_epochs >= sqrt(reduction_factor), or use asha")

    def brackets(self) -> int:
        # as Ray's HyperBandScheduler counts them (s_max + 1)
        return int(round(math.log(self.max_epochs) / math.log(self.reduction_factor))) + 1

    def bracket_sizes(self) -> list[int]:
        """Trials per bracket, as Ray fills them (n0 of each bracket s)."""
        n = self.brackets()
        return [int(math.ceil(n / (s + 1) * self.reduction_factor ** s)) for s in range(n)]

    def milestones(self) -> set[int]:
        """Every epoch at which some bracket judges its trials (below the full budget)."""
        out = set()
        for s in range(self.brackets()):
            r = int(self.max_epochs * self.reduction_factor ** (-s))
            while 0 < r < self.max_epochs:
                out.add(r)
                r = int(min(r * self.reduction_factor, self.max_epochs))
        return out

    def checkpoint_epochs(self, epochs: int) -> set[int]:
        return self.milestones()

    def trial_limit(self, concurrency, spec):
        # A bracket is judged once all its trials wait at a milestone, and a concurrency limit counts
        # waiting (paused) trials: the limit must let the largest bracket fill.
        largest = max(self.bracket_sizes())
        if concurrency >= largest:
            return concurrency, None
        return largest, (f"HyperBand: up to {largest} trials live at once (its largest bracket; paused trials "
                         f"count), {concurrency} running at a time")

    def build(self, spec, decisions):
        from ray.tune.schedulers import HyperBandScheduler  # Ray: a space is checked without it

        return HyperBandScheduler(time_attr="epoch", max_t=self.max_epochs, reduction_factor=self.reduction_factor)

    def describe(self) -> str:
        return (f"HyperBand reduction {self.reduction_factor}, max {self.max_epochs} epochs, "
                f"{self.brackets()} brackets")


PBT_DISTRIBUTIONS = ("uniform", "loguniform", "one_minus_loguniform")


@dataclass
class Pbt(Scheduler):
    """Population Based Training: every perturbation_interval epochs the bottom quantile_fraction
    of the members copy a top member's checkpoint and continue with its hyperparameters, perturbed
    (times one of perturbation_factors, or resampled with resample_probability), within the search
    ranges. The searched fields are the population's initial distributions; PBT may change
    base_lr, tau_base and aug_strength."""

    name: ClassVar[str] = "pbt"
    searchers: ClassVar[tuple[str, ...] | None] = ("random",)
    default_searcher: ClassVar[str] = "random"
    final_stage: ClassVar[str | None] = (
        "the final stage re-trains a trial's configuration from scratch, but a PBT member's result comes from "
        "a schedule of hyperparameters and copied weights, which one configuration does not reproduce")
    perturbation_interval: int = key(2, whole(1), "epochs between perturbations")
    burn_in_period: int = key(0, whole(0), "epochs before the first perturbation")
    quantile_fraction: float = key(0.25, number(0.0, 0.5, low_open=True),
                                   "the bottom fraction copies the top fraction")
    resample_probability: float = key(0.25, number(0.0, 1.0), "chance to redraw a value from its search range")
    perturbation_factors: list = key((1.2, 0.8), positive_numbers, "a kept value is multiplied by one of these")
    synch: bool = key(True, flag, "perturb the whole population at the same epoch (members wait for each other)")

    def check(self, ctx: Context, where: str) -> None:
        self.perturbation_factors = [float(f) for f in self.perturbation_factors]
        if self.perturbation_interval >= ctx.epochs:
            raise ctx.fail(f"{where}.perturbation_interval", f"must be below the budget ({ctx.epochs} epochs), "
                           f"got {self.perturbation_interval}")
        if self.burn_in_period % self.perturbation_interval or self.burn_in_period >= ctx.epochs:
            raise ctx.fail(f"{where}.burn_in_period", f"must be a multiple of perturbation_interval "
                           f"({self.perturbation_interval}) below the budget ({ctx.epochs} epochs), "
                           f"got {self.burn_in_period}")
        if ctx.grid:
            raise ctx.fail("grid", "pbt copies a member's whole configuration, so a grid field would change "
                                   "mid-run; allowed: search only")
        if not ctx.search:
            raise ctx.fail("search", f"pbt needs searched fields to perturb; allowed: {', '.join(PBT_MUTABLE)}, an op's "
                                     "parameter (policy.<view>.<op>.<parameter>)")
        for name, d in ctx.search.items():
            if name not in PBT_MUTABLE and not name.startswith("policy."):  # an op's parameter shapes the views only
                raise ctx.fail(f"search.{name}", f"pbt cannot change {name} in a running trial; allowed: "
                                                 f"{', '.join(PBT_MUTABLE)}, an op's parameter (policy.<view>.<op>.<parameter>)")
            if d.kind not in PBT_DISTRIBUTIONS:
                raise ctx.fail(f"search.{name}", f"pbt perturbs continuous values; allowed: "
                                                 f"{', '.join(PBT_DISTRIBUTIONS)}")
        if "epochs" in ctx.grid or "epochs" in ctx.search:
            raise ctx.fail(where, "pbt cannot be used while epochs is swept")

    def check_spec(self, spec, where):
        if spec.num_samples < 2:
            raise fail(spec.source, "num_samples", f"is the population of pbt and must be at least 2, "
                                                   f"got {spec.num_samples}")

    def perturbation_epochs(self, epochs: int) -> set[int]:
        first = max(self.perturbation_interval, self.burn_in_period)
        return set(range(first, epochs, self.perturbation_interval))

    def checkpoint_epochs(self, epochs: int) -> set[int]:
        # PBT copies the checkpoint a member reported with the result it judged
        return self.perturbation_epochs(epochs)

    def checkpoints_to_keep(self) -> int | None:
        # A member that copies another loads the checkpoint the other left at the perturbation; until it
        # does, the other may write one checkpoint per epoch of the next interval (synchronous PBT stops
        # it at the next perturbation; asynchronous PBT does not, so it keeps them all).
        return self.perturbation_interval + 2 if self.synch else None

    def trial_limit(self, concurrency, spec):
        # The whole population must be live for members to compare and copy each other: no limit.
        # With fewer slots than members, PBT pauses and resumes members (from their checkpoints).
        if spec.num_samples <= concurrency:
            return None, None
        return None, (f"PBT: a population of {spec.num_samples} on {concurrency} slot(s): members take turns, "
                      "paused and resumed from their checkpoints at each perturbation")

    def mutations(self, spec) -> dict[str, Any]:
        """Ray's hyperparam_mutations: each searched parameter with its search domain."""
        space = spec.param_space()
        return {k: space[k] for k in space}

    def bounds(self, spec) -> dict[str, tuple[float, float]]:
        """The search range of each Tune parameter (one_minus_<field> for one_minus_loguniform)."""
        out = {}
        for name, d in spec.search.items():
            if d.kind == "one_minus_loguniform":
                out[f"one_minus_{name}"] = (1 - d.high, 1 - d.low)
            else:
                out[name] = (d.low, d.high)
        return out

    def build(self, spec, decisions):
        from sweep.tuner.algorithms import Clip, RecordingPBT  # Ray: a space is checked without it

        return RecordingPBT(
            time_attr="epoch", perturbation_interval=self.perturbation_interval,
            burn_in_period=self.burn_in_period, hyperparam_mutations=self.mutations(spec),
            quantile_fraction=self.quantile_fraction, resample_probability=self.resample_probability,
            perturbation_factors=tuple(self.perturbation_factors), custom_explore_fn=Clip(self.bounds(spec)),
            synch=self.synch, log_config=False, require_attrs=False,  # a diverged trial's last result has no metric
            decisions=decisions, max_t=spec.max_epochs)

    def describe(self) -> str:
        return (f"PBT every {self.perturbation_interval} epoch(s) after {self.burn_in_period}, quantile "
                f"{self.quantile_fraction:g}, factors {', '.join(f'{f:g}' for f in self.perturbation_factors)}, "
                f"resample {self.resample_probability:g}{', synchronous' if self.synch else ''}")


SCHEDULERS: dict[str, type[Scheduler]] = {cls.name: cls for cls in (Fifo, Asha, HyperBand, Pbt)}
