"""A validated search space: SweepSpec and its parts, and how it becomes Ray Tune's param space and
one TrainConfig per trial. Parsing is in sweep/space/parse.py."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from sweep.space.schedulers import Asha, Scheduler
from sweep.space.searchers import Optuna, Searcher
from trainer.config import TrainConfig

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "one_minus_loguniform", "choice")
POLICY_DIMENSION = "policy."  # policy.<view>.<op>.<parameter>: an op's parameter, searched like a field
ONE_MINUS = "one_minus_"  # a searched 1 - value (one_minus_loguniform) travels in Tune's config under this prefix


@dataclass(frozen=True)
class Distribution:
    kind: str  # one of DISTRIBUTIONS
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple = ()

    def to_json(self) -> str:
        if self.kind == "choice":
            return json.dumps({"type": "choice", "values": list(self.values)})
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.q is not None:
            out["q"] = self.q
        return json.dumps(out)


@dataclass
class FinalStage:
    """After the search: the top_k configurations by the objective (per value of `per`, when set)
    trained again with `seeds` new seeds, for the full budget, evaluated on the test split."""

    top_k: int = 1
    seeds: int = 3
    per: str | None = None

    def seed_values(self) -> list[int]:
        """The new seeds, the same for every configuration (so runs pair by seed), far from the
        small seeds a search uses."""
        return [10_000 + i for i in range(self.seeds)]


@dataclass
class SweepSpec:
    name: str
    source: str
    base: dict[str, Any]
    search: dict[str, Distribution] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    metric: str = "knn_acc"
    mode: str = "max"
    searcher: Searcher = field(default_factory=Optuna)
    num_samples: int = 8
    scheduler: Scheduler = field(default_factory=Asha)
    final: FinalStage | None = field(default_factory=FinalStage)
    description: str = ""
    text: str = ""
    ablation: str | None = None  # the policy an `ablate:` space takes apart (its arms: the policy and its variants)

    @property
    def algorithm(self) -> str:
        """The search algorithm's name (optuna, random, grid)."""
        return self.searcher.name

    @property
    def asha(self) -> Asha | None:
        """The ASHA scheduler's settings when the sweep uses ASHA, else None."""
        return self.scheduler if isinstance(self.scheduler, Asha) else None

    @property
    def swept(self) -> list[str]:
        return [*self.search, *self.grid]

    @property
    def compared_fields(self) -> list[str]:
        """The grid fields a comparison sweep compares across its seeds: one that samples nothing and
        has no final stage, so its result is the arms paired by seed, not a best trial."""
        if self.search or self.final is not None:
            return []
        return [f for f in self.grid if f != "seed"]

    @property
    def max_epochs(self) -> int:
        return int(self.base["epochs"]) if "epochs" in self.base else TrainConfig().epochs

    @property
    def total_trials(self) -> int:
        grid_size = math.prod(len(v) for v in self.grid.values()) if self.grid else 1
        return self.num_samples * grid_size

    def tracking_params(self) -> dict[str, Any]:
        """The parent run's params that record the search algorithm and the scheduler with their
        settings: `search`, `scheduler`, `scheduler.<key>` (and each entry's own, e.g. asha.*)."""
        return {"search": self.searcher.name, **self.searcher.run_params(self), **self.scheduler.params("scheduler"),
                **({"ablation": self.ablation} if self.ablation else {})}

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune param space of the swept fields (the base travels separately)."""
        from ray import tune  # Ray: a space is checked without it

        space: dict[str, Any] = {}
        for name, d in self.search.items():
            is_int = field_type_of(name) in (int, "int")
            if d.kind == "choice":
                space[name] = tune.choice(list(d.values))
            elif d.kind == "uniform":
                space[name] = tune.randint(int(d.low), int(d.high) + 1) if is_int else tune.uniform(d.low, d.high)
            elif d.kind == "loguniform":
                space[name] = tune.lograndint(int(d.low), int(d.high) + 1) if is_int else tune.loguniform(d.low, d.high)
            elif d.kind == "quniform":
                space[name] = tune.qrandint(int(d.low), int(d.high), int(d.q)) if is_int else tune.quniform(d.low, d.high, d.q)
            elif d.kind == "one_minus_loguniform":
                space[ONE_MINUS + name] = tune.loguniform(1 - d.high, 1 - d.low)
        for name, values in self.grid.items():
            space[name] = tune.grid_search(list(values))
        return space

    def train_config(self, trial_config: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: the base with the trial's sampled values on top (an op's
        parameters, policy.<view>.<op>.<parameter>, in its policy_params)."""
        values, policy_params = dict(self.base), {}
        for key, value in trial_config.items():
            if key.startswith(ONE_MINUS):
                key, value = key[len(ONE_MINUS):], 1 - value
            if key.startswith(POLICY_DIMENSION):
                policy_params[key] = float(value)
            else:
                values[key] = value
        if policy_params:
            values["policy_params"] = json.dumps(policy_params, sort_keys=True)
        return TrainConfig.from_dict(values, source=f"trial config of sweep {self.name}")

    @staticmethod
    def values(config: TrainConfig) -> dict[str, Any]:
        """A trial's TrainConfig as {field: value}, with each searched op parameter by its dotted name."""
        return {**config.to_dict(), **(json.loads(config.policy_params) if config.policy_params else {})}


def field_type_of(name: str):
    """A swept name's type: a TrainConfig field's, or float for an op's parameter."""
    return float if name.startswith(POLICY_DIMENSION) else TrainConfig.fields()[name].type
