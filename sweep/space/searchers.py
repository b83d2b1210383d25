"""Search algorithms as registry entries: one dataclass each, its fields its YAML keys, `check`
its rules against the space, `build` the Ray object, and where the concurrency limit goes
(`limits_itself`: the searcher takes it, or Tune wraps the searcher in its limiter).

YAML: `algorithm: optuna` or `algorithm: {name: optuna, n_startup_trials: 4}`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sweep.space.registry import Context, Entry, key, whole

if TYPE_CHECKING:  # a type hint only: the spec holds its searcher
    from sweep.space.spec import SweepSpec


@dataclass
class Searcher(Entry):
    limits_itself: ClassVar[bool] = True  # False: Tune's max_concurrent_trials limits it
    default_samples: ClassVar[int] = 8

    def build(self, spec: SweepSpec, limit: int | None, seed: int = 0, state_dir: Path | None = None):
        raise NotImplementedError

    def tune_limit(self, limit: int | None) -> int | None:
        """The value of TuneConfig.max_concurrent_trials."""
        return None if self.limits_itself else limit

    def describe(self, spec: SweepSpec) -> str:
        return self.name

    def run_params(self, spec: SweepSpec) -> dict[str, Any]:
        """The parent run's params beyond `search` (the searcher's name)."""
        return {}


@dataclass
class Optuna(Searcher):
    """Optuna's seeded TPE, multivariate with a constant liar; its study in memory, checkpointed with
    Tune's and written to <state>/optuna.db at each checkpoint (sweep/tuner/algorithms.py)."""

    name: ClassVar[str] = "optuna"
    limits_itself: ClassVar[bool] = False
    n_startup_trials: int | None = key(None, whole(1), "TPE's first trials drawn at random "
                                                       "(default num_samples // 3, from 2 to 10)")

    def check(self, ctx: Context, where: str) -> None:
        if ctx.grid:
            raise ctx.fail("grid", "Optuna cannot search a grid; use algorithm: grid or random with a grid")
        if not ctx.search:
            raise ctx.fail("search", "algorithm optuna needs at least one searched field")

    def startup_trials(self, spec: SweepSpec) -> int:
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        return max(2, min(10, spec.num_samples // 3))

    def build(self, spec, limit, seed=0, state_dir=None):
        import optuna  # heavy: a space is checked without it

        from sweep.tuner.algorithms import PruningOptunaSearch  # Ray: a space is checked without it

        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials(spec), multivariate=True,
                                             constant_liar=True)
        return PruningOptunaSearch(sampler=sampler, study_name=spec.name, max_epochs=spec.max_epochs,
                                   study_file=state_dir / "optuna.db" if state_dir else None)

    def run_params(self, spec) -> dict[str, Any]:
        return {"optuna.n_startup_trials": self.startup_trials(spec)}

    def describe(self, spec) -> str:
        return f"optuna (TPE, {self.startup_trials(spec)} random start-up trials)"


@dataclass
class Random(Searcher):
    """Tune's random generator: each trial samples the search distributions (and walks any grid)."""

    name: ClassVar[str] = "random"

    def build(self, spec, limit, seed=0, state_dir=None):
        from ray.tune.search import BasicVariantGenerator  # Ray: a space is checked without it

        return BasicVariantGenerator(max_concurrent=limit or 0, random_state=seed)


@dataclass
class Grid(Random):
    """Every combination of the grid values, num_samples times each."""

    name: ClassVar[str] = "grid"
    default_samples: ClassVar[int] = 1

    def check(self, ctx: Context, where: str) -> None:
        if ctx.search:
            raise ctx.fail("search", "algorithm grid takes only grid: values; move these to grid or use random")
        if not ctx.grid:
            raise ctx.fail("grid", "algorithm grid needs at least one grid field")


SEARCHERS: dict[str, type[Searcher]] = {cls.name: cls for cls in (Optuna, Random, Grid)}
