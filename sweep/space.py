"""Search spaces: YAML -> validated SweepSpec -> Ray Tune param space and TrainConfig per trial."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from trainer.config import ConfigError, TrainConfig, check_range, coerce
from vocabulary import MODES, OBJECTIVES, asha_rungs, default_mode

from .yaml_input import read_yaml  # noqa: F401  (re-exported: callers import it from here too)

TOP_KEYS = ("name", "description", "base", "search", "grid", "metric", "mode", "algorithm", "num_samples", "asha",
            "final")
FINAL_KEYS = ("top_k", "seeds", "per")
MAX_FINAL_SEEDS = 100
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "one_minus_loguniform", "choice")
ALGORITHMS = ("optuna", "random", "grid")
ASHA_KEYS = ("grace_period", "reduction_factor", "max_epochs")
ONE_MINUS = "one_minus_"


class SpaceError(ValueError):
    """A search space file is invalid; the message names the file, the key and what is allowed."""


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
class Asha:
    grace_period: int
    reduction_factor: int
    max_epochs: int

    def rungs(self) -> list[int]:
        """Epochs at which ASHA compares trials (below max_epochs)."""
        return asha_rungs(self.grace_period, self.reduction_factor, self.max_epochs)


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
    algorithm: str = "optuna"
    num_samples: int = 8
    asha: Asha | None = None
    final: FinalStage | None = field(default_factory=FinalStage)
    description: str = ""
    text: str = ""

    @property
    def swept(self) -> list[str]:
        return [*self.search, *self.grid]

    @property
    def max_epochs(self) -> int:
        return int(self.base.get("epochs", TrainConfig().epochs))

    @property
    def total_trials(self) -> int:
        grid_size = math.prod(len(v) for v in self.grid.values()) if self.grid else 1
        return self.num_samples * grid_size

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune param space of the swept fields (the base travels separately)."""
        from ray import tune

        space: dict[str, Any] = {}
        for name, d in self.search.items():
            is_int = TrainConfig.fields()[name].type in (int, "int")
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
        """The TrainConfig of one trial: the base with the trial's sampled values on top."""
        values = dict(self.base)
        for key, value in trial_config.items():
            if key.startswith(ONE_MINUS):
                values[key[len(ONE_MINUS):]] = 1 - value
            else:
                values[key] = value
        return TrainConfig.from_dict(values, source=f"trial config of sweep {self.name}")


def _fail(source: str, key: str, message: str) -> SpaceError:
    return SpaceError(f"{source}: {key}: {message}")


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(source, key, f"expected a number, got {value!r}")
    return float(value)


def _check_value(source: str, key: str, name: str, value: Any) -> Any:
    try:
        value = coerce(name, value, source)
        check_range(name, value, source)
        if name == "dataset" or name == "device":
            TrainConfig(**{name: value})
    except ConfigError as err:
        raise _fail(source, key, str(err).split(": ", 1)[-1]) from None
    return value


def _parse_distribution(source: str, name: str, spec: Any) -> Distribution:
    key = f"search.{name}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _fail(source, key, f"expected one distribution such as {{loguniform: [0.01, 1.0]}}; allowed: {', '.join(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise _fail(source, key, f"unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise _fail(source, key, "choice needs a non-empty list of values")
        return Distribution("choice", values=tuple(_check_value(source, key, name, v) for v in args))
    expected = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != expected:
        form = "[low, high, q]" if kind == "quniform" else "[low, high]"
        raise _fail(source, key, f"{kind} needs {form}, got {args!r}")
    low, high = _number(source, key, args[0]), _number(source, key, args[1])
    if not low < high:
        raise _fail(source, key, f"range [{args[0]}, {args[1]}] is empty or inverted; low must be below high")
    field_type = TrainConfig.fields()[name].type
    if field_type in (bool, "bool", str, "str"):
        raise _fail(source, key, f"{name} is not numeric; use choice: [...]")
    if kind in ("loguniform", "one_minus_loguniform") and low <= 0:
        raise _fail(source, key, f"{kind} needs low > 0, got {args[0]}")
    if kind == "one_minus_loguniform" and high >= 1:
        raise _fail(source, key, f"one_minus_loguniform needs high < 1 (1 - value must stay positive), got {args[1]}")
    q = None
    if kind == "quniform":
        q = _number(source, key, args[2])
        if q <= 0:
            raise _fail(source, key, f"quniform needs q > 0, got {args[2]}")
        if field_type in (int, "int") and not all(float(v).is_integer() for v in (low, high, q)):
            raise _fail(source, key, f"{name} is an integer field: quniform needs whole low, high and q, got {args!r}")
        for bound, text in ((low, args[0]), (high, args[1])):
            if abs(bound / q - round(bound / q)) > 1e-9 * max(1.0, abs(bound / q)):
                raise _fail(source, key, f"quniform's low and high must be multiples of q; {text} is not a multiple of {args[2]}")
    for bound in (low, high):
        _check_value(source, key, name, int(bound) if field_type in (int, "int") else bound)
    return Distribution(kind, low, high, q)


def parse_space(data: Any, source: str, text: str = "") -> SweepSpec:
    """Validate a parsed YAML document; every error names the source, the key and what is allowed."""
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    for key in data:
        if key not in TOP_KEYS:
            raise _fail(source, str(key), f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    fields = TrainConfig.fields()

    base_raw = data.get("base") or {}
    if not isinstance(base_raw, dict):
        raise _fail(source, "base", "expected a mapping of TrainConfig fields")
    base = {}
    for name, value in base_raw.items():
        if name not in fields:
            raise _fail(source, f"base.{name}", f"unknown field; allowed: {', '.join(fields)}")
        base[name] = _check_value(source, f"base.{name}", name, value)

    search_raw = data.get("search") or {}
    if not isinstance(search_raw, dict):
        raise _fail(source, "search", "expected a mapping of TrainConfig fields to distributions")
    search = {}
    for name, spec in search_raw.items():
        if name not in fields:
            raise _fail(source, f"search.{name}", f"unknown field; allowed: {', '.join(fields)}")
        search[name] = _parse_distribution(source, name, spec)

    grid_raw = data.get("grid") or {}
    if not isinstance(grid_raw, dict):
        raise _fail(source, "grid", "expected a mapping of TrainConfig fields to lists of values")
    grid = {}
    for name, values in grid_raw.items():
        if name not in fields:
            raise _fail(source, f"grid.{name}", f"unknown field; allowed: {', '.join(fields)}")
        if not isinstance(values, list) or not values:
            raise _fail(source, f"grid.{name}", "expected a non-empty list of values")
        grid[name] = [_check_value(source, f"grid.{name}", name, v) for v in values]
    for name in set(search) & set(grid):
        raise _fail(source, f"grid.{name}", "is also under search; a field is either searched or gridded")
    for part, swept in (("search", search), ("grid", grid)):
        if "epochs" in swept:
            raise _fail(source, f"{part}.epochs", "epochs cannot be swept: it spans the learning-rate and momentum "
                        "schedules and is ASHA's max_epochs; set it in base")
    for name in set(base) & (set(search) | set(grid)):
        raise _fail(source, f"base.{name}", "is also swept; remove it from base or from search/grid")

    metric = data.get("metric", "knn_acc")
    if metric not in OBJECTIVES:
        raise _fail(source, "metric", f"{metric!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
    mode = data.get("mode", default_mode(metric))
    if mode not in MODES:
        raise _fail(source, "mode", f"{mode!r} is unknown; allowed: {', '.join(MODES)}")
    algorithm = data.get("algorithm", "optuna")
    if algorithm not in ALGORITHMS:
        raise _fail(source, "algorithm", f"{algorithm!r} is unknown; allowed: {', '.join(ALGORITHMS)}")
    if algorithm == "optuna" and grid:
        raise _fail(source, "grid", "Optuna cannot search a grid; use algorithm: grid or random with a grid")
    if algorithm == "optuna" and not search:
        raise _fail(source, "search", "algorithm optuna needs at least one searched field")
    if algorithm == "grid" and search:
        raise _fail(source, "search", "algorithm grid takes only grid: values; move these to grid or use random")
    if algorithm == "grid" and not grid:
        raise _fail(source, "grid", "algorithm grid needs at least one grid field")
    num_samples = data.get("num_samples", 1 if algorithm == "grid" else 8)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise _fail(source, "num_samples", f"expected an integer >= 1, got {num_samples!r}")

    asha = None
    asha_raw = data.get("asha", {})
    epochs = int(base.get("epochs", TrainConfig().epochs))
    if asha_raw is not False and asha_raw is not None:
        if not isinstance(asha_raw, dict):
            raise _fail(source, "asha", "expected a mapping with grace_period, reduction_factor, max_epochs, or false")
        for key in asha_raw:
            if key not in ASHA_KEYS:
                raise _fail(source, f"asha.{key}", f"unknown key; allowed: {', '.join(ASHA_KEYS)}")
        values = {"grace_period": 1, "reduction_factor": 2, "max_epochs": epochs, **asha_raw}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(source, f"asha.{key}", f"expected an integer >= 1, got {value!r}")
        if values["reduction_factor"] < 2:
            raise _fail(source, "asha.reduction_factor", f"expected an integer >= 2, got {values['reduction_factor']}")
        if values["grace_period"] >= values["max_epochs"]:
            raise _fail(source, "asha.grace_period", f"must be below max_epochs ({values['max_epochs']}), got {values['grace_period']}")
        if "epochs" in base and values["max_epochs"] != epochs:
            raise _fail(source, "asha.max_epochs", f"is {values['max_epochs']} but base.epochs is {epochs}; they must agree (the schedules span all epochs)")
        if "epochs" in search or "epochs" in grid:
            raise _fail(source, "asha", "cannot be used while epochs is swept; set asha: false")
        asha = Asha(**values)
        base["epochs"] = asha.max_epochs

    final = _parse_final(source, data.get("final", {}), search, grid)

    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise _fail(source, "name", f"expected a non-empty string, got {name!r}")
    description = data.get("description", "")
    spec = SweepSpec(name=name, source=source, base=base, search=search, grid=grid, metric=metric, mode=mode,
                     algorithm=algorithm, num_samples=num_samples, asha=asha, final=final, description=str(description),
                     text=text)
    spec.train_config({})  # the base itself must be a valid TrainConfig
    return spec


def _parse_final(source: str, raw: Any, search: dict, grid: dict) -> FinalStage | None:
    if raw is False:
        return None
    if raw is None or raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(source, "final", "expected a mapping with top_k, seeds and per, or false to skip the final stage")
    for key in raw:
        if key not in FINAL_KEYS:
            raise _fail(source, f"final.{key}", f"unknown key; allowed: {', '.join(FINAL_KEYS)}")
    final = FinalStage(**raw)
    for key, value, high in (("top_k", final.top_k, 100), ("seeds", final.seeds, MAX_FINAL_SEEDS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise _fail(source, f"final.{key}", f"expected an integer from 1 to {high}, got {value!r}")
    if final.per is not None and final.per not in {*search, *grid}:
        swept = ", ".join([*search, *grid]) or "none"
        raise _fail(source, "final.per", f"{final.per!r} is not swept; allowed: a swept field ({swept})")
    if final.per == "seed":
        raise _fail(source, "final.per", "seed cannot be a final-stage group: the final stage draws its own seeds")
    return final


def shipped_spaces() -> dict[str, Path]:
    """The search spaces that ship with byol-sweep, by name."""
    folder = resources.files("search_spaces")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def resolve_space_path(name_or_path: str) -> Path:
    """A shipped space name (`quick`) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    spaces = shipped_spaces()
    if name_or_path in spaces:
        return spaces[name_or_path]
    raise SpaceError(
        f"search space {name_or_path!r} is neither a file nor a shipped space; shipped: {', '.join(sorted(spaces))}"
    )


def load_space(name_or_path: str) -> SweepSpec:
    path = resolve_space_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(f"{path}: cannot be read as UTF-8 text ({err})") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    return parse_space(data, str(path), text)
