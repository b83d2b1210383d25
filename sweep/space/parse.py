"""YAML document -> SweepSpec: every field checked, every error naming the file, the key and what is
allowed (parse_space stops at the first problem, space_problems lists them all)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.errors import SpaceError
from sweep.space.ablation import expand_ablation
from sweep.space.policies import check_policy_names, policies_json
from sweep.space.registry import Context, fail
from sweep.space.schedulers import SCHEDULERS, Asha, Fifo, Scheduler
from sweep.space.searchers import SEARCHERS, Searcher
from sweep.space.selection import check_selection
from sweep.space.spec import DISTRIBUTIONS, Distribution, FinalStage, SweepSpec, field_type_of
from trainer.config import ConfigError, TrainConfig, check_range, coerce
from trainer.policies import DIMENSION, Param, PolicyError, dimension
from vocabulary import MODES, OBJECTIVES, default_mode
from vocabulary.suggest import did_you_mean

TOP_KEYS = ("name", "description", "base", "search", "grid", "metric", "mode", "algorithm", "num_samples",
            "scheduler", "asha", "final", "policies", "ablate")
FINAL_KEYS = ("top_k", "seeds", "per")
MAX_FINAL_SEEDS = 100


def _fail(source: str, key: str, message: str) -> SpaceError:
    return fail(source, key, message)


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(source, key, f"expected a number, got {value!r}")
    return float(value)


def _check_value(source: str, key: str, name: str, value: Any) -> Any:
    if name.startswith(DIMENSION):
        param = _dimension(source, key, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not param.low <= value <= param.high:
            raise _fail(source, key, f"{value!r} is not a number in [{param.low:g}, {param.high:g}] ({param.doc})")
        return float(value)
    try:
        value = coerce(name, value, source)
        check_range(name, value, source)
        if name == "dataset" or name == "device":
            TrainConfig(**{name: value})
    except ConfigError as err:
        raise _fail(source, key, str(err).split(": ", 1)[-1]) from None
    return value


def _dimension(source: str, key: str, name: str) -> Param:
    try:
        return dimension(name)
    except PolicyError as err:
        raise _fail(source, key, str(err).split(": ", 1)[-1]) from None


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
    field_type = field_type_of(name)
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
        _check_top_key(source, key)
    ablation = data.get("ablate")
    data = expand_ablation(data, source)
    base = _parse_base(source, data.get("base"))
    if "policies" in data:
        if "policies" in base:
            raise _fail(source, "base.policies", "give your policies once, as the top-level policies: key")
        base["policies"] = policies_json(data["policies"], source)
    search, grid = _parse_swept(source, data.get("search"), data.get("grid"), base)
    _check_policies(source, base, search, grid)
    metric, mode = _parse_objective(source, data)
    ctx = Context(source=source, epochs=int(base.get("epochs", TrainConfig().epochs)), epochs_set="epochs" in base,
                  search=search, grid=grid)
    scheduler = _parse_scheduler(data, ctx)
    if scheduler.max_epochs is not None:
        base["epochs"] = scheduler.max_epochs
    ctx.scheduler = scheduler.name
    searcher = _parse_searcher(data.get("algorithm"), ctx, scheduler)
    num_samples = _parse_num_samples(source, data.get("num_samples", searcher.default_samples))
    final = _parse_final(source, data.get("final", {}), search, grid, scheduler)
    name = _parse_name(source, data.get("name", Path(source).stem))
    spec = SweepSpec(name=name, source=source, base=base, search=search, grid=grid, metric=metric, mode=mode,
                     searcher=searcher, num_samples=num_samples, scheduler=scheduler, final=final,
                     description=str(data.get("description", "")), text=text, ablation=ablation)
    scheduler.check_spec(spec, "scheduler")
    spec.train_config({})  # the base itself must be a valid TrainConfig
    check_selection(spec)
    return spec


def _check_policies(source: str, base: dict, search: dict, grid: dict) -> None:
    named = {"base.policy": [base["policy"]] if "policy" in base else [], "grid.policy": grid.get("policy", [])}
    if "policy" in search:
        named["search.policy"] = list(search["policy"].values)
    check_policy_names(named, base.get("policies", ""), source)


def _check_top_key(source: str, key: Any) -> None:
    if key not in TOP_KEYS:
        raise _fail(source, str(key), f"unknown key{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")


def _parse_num_samples(source: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(source, "num_samples", f"expected an integer >= 1, got {value!r}")
    return value


def _parse_name(source: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise _fail(source, "name", f"expected a non-empty string, got {name!r}")
    return name


def space_problems(data: Any, source: str) -> list[str]:
    """Every problem of a parsed space, one message each; parse_space stops at the first (which
    this list always holds, first). Each part is checked on its own, and each base field, search
    entry and grid entry alone; a part that depends on another (the scheduler on base.epochs, the
    searcher on the scheduler) is checked on what parsed, and what it says about a part that
    already has problems is left out, as it may only follow from them."""
    problems: list[str] = []

    def attempt(fn, *args):
        try:
            return True, fn(*args)
        except SpaceError as err:
            problems.append(str(err))
            return False, None

    def key_of(message: str) -> str:
        return message[len(source) + 2:].split(": ", 1)[0]

    try:
        parse_space(data, source)
        return []
    except SpaceError as err:
        first = str(err)
    if not isinstance(data, dict):
        return [first]
    for key in data:
        attempt(_check_top_key, source, key)
    base, bad_base = {}, set()
    raw_base = data.get("base")
    if isinstance(raw_base or {}, dict):
        for name, value in (raw_base or {}).items():
            ok, part = attempt(_parse_base, source, {name: value})
            base.update(part or {})
            bad_base |= set() if ok else {name}
    else:
        attempt(_parse_base, source, raw_base)
        bad_base.add("epochs")
    parts: dict[str, dict] = {}
    bad_swept = False
    for part, parse in (("search", _parse_search), ("grid", _parse_grid)):
        raw, parts[part] = data.get(part), {}
        entries = [{name: spec} for name, spec in raw.items()] if isinstance(raw, dict) else [raw]
        for entry in entries:
            ok, parsed = attempt(parse, source, entry)
            parts[part].update(parsed or {})
            bad_swept |= not ok
    search, grid = parts["search"], parts["grid"]
    attempt(_check_swept, source, search, grid, base)
    attempt(_parse_objective, source, data)

    dependent: list[str] = []  # problems of the parts that read others
    scheduler = None
    if "epochs" not in bad_base:
        ctx = Context(source=source, epochs=int(base.get("epochs", TrainConfig().epochs)),
                      epochs_set="epochs" in base, search=search, grid=grid)
        before = len(problems)
        ok, scheduler = attempt(_parse_scheduler, data, ctx)
        if ok:
            ctx.scheduler = scheduler.name
            attempt(_parse_searcher, data.get("algorithm"), ctx, scheduler)
        dependent += problems[before:]
        del problems[before:]
    if "num_samples" in data:
        attempt(_parse_num_samples, source, data["num_samples"])
    before = len(problems)
    attempt(_parse_final, source, data.get("final", {}), search, grid, scheduler or Asha())
    dependent += problems[before:]
    del problems[before:]
    swept_keys = ("search", "grid", "final.per")
    problems += [p for p in dependent if not (bad_swept and key_of(p).startswith(swept_keys))]
    if "name" in data:
        attempt(_parse_name, source, data["name"])

    unique = list(dict.fromkeys(problems))
    return [first, *(p for p in unique if p != first)]


def _parse_base(source: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw or {}, dict):
        raise _fail(source, "base", "expected a mapping of TrainConfig fields")
    fields = TrainConfig.fields()
    base = {}
    for name, value in (raw or {}).items():
        if name not in fields:
            raise _fail(source, f"base.{name}", f"unknown field{did_you_mean(name, fields)}; allowed: {', '.join(fields)}")
        base[name] = _check_value(source, f"base.{name}", name, value)
    return base


def _parse_swept(source: str, search_raw: Any, grid_raw: Any, base: dict) -> tuple[dict, dict]:
    """(search: field -> Distribution, grid: field -> values), checked against each other and the base."""
    search, grid = _parse_search(source, search_raw), _parse_grid(source, grid_raw)
    _check_swept(source, search, grid, base)
    return search, grid


def _parse_search(source: str, raw: Any) -> dict[str, Distribution]:
    fields = TrainConfig.fields()
    if not isinstance(raw or {}, dict):
        raise _fail(source, "search", "expected a mapping of TrainConfig fields to distributions")
    search = {}
    for name, spec in (raw or {}).items():
        if name not in fields and not str(name).startswith(DIMENSION):
            raise _fail(source, f"search.{name}", f"unknown field{did_you_mean(name, fields)}; allowed: "
                                                  f"{', '.join(fields)}, or an op's parameter "
                                                  "policy.<view>.<op>.<parameter>")
        search[name] = _parse_distribution(source, name, spec)
    return search


def _parse_grid(source: str, raw: Any) -> dict[str, list]:
    fields = TrainConfig.fields()
    if not isinstance(raw or {}, dict):
        raise _fail(source, "grid", "expected a mapping of TrainConfig fields to lists of values")
    grid = {}
    for name, values in (raw or {}).items():
        if name not in fields and not str(name).startswith(DIMENSION):
            raise _fail(source, f"grid.{name}", f"unknown field{did_you_mean(name, fields)}; allowed: "
                                                f"{', '.join(fields)}, or an op's parameter "
                                                "policy.<view>.<op>.<parameter>")
        if not isinstance(values, list) or not values:
            raise _fail(source, f"grid.{name}", "expected a non-empty list of values")
        grid[name] = [_check_value(source, f"grid.{name}", name, v) for v in values]
    return grid


def _check_swept(source: str, search: dict, grid: dict, base: dict) -> None:
    for name in set(search) & set(grid):
        raise _fail(source, f"grid.{name}", "is also under search; a field is either searched or gridded")
    for part, swept in (("search", search), ("grid", grid)):
        if "epochs" in swept:
            raise _fail(source, f"{part}.epochs", "epochs cannot be swept: it spans the learning-rate and momentum "
                        "schedules and is the scheduler's budget; set it in base")
    for name in set(base) & (set(search) | set(grid)):
        raise _fail(source, f"base.{name}", "is also swept; remove it from base or from search/grid")


def _parse_objective(source: str, data: dict) -> tuple[str, str]:
    metric = data.get("metric", "knn_acc")
    if metric not in OBJECTIVES:
        raise _fail(source, "metric", f"{metric!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
    mode = data.get("mode", default_mode(metric))
    if mode not in MODES:
        raise _fail(source, "mode", f"{mode!r} is unknown; allowed: {', '.join(MODES)}")
    return metric, mode


def _named(raw: Any, where: str, registry: dict, ctx: Context) -> tuple[type, dict]:
    """`name` or `{name: ..., <settings>}` -> (the registry's entry class, its settings)."""
    if isinstance(raw, str):
        name, settings = raw, {}
    elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
        name, settings = raw["name"], {k: v for k, v in raw.items() if k != "name"}
    else:
        raise ctx.fail(where, f"expected a name or a mapping with name: and its settings; allowed names: "
                              f"{', '.join(registry)}")
    if name not in registry:
        key = where if isinstance(raw, str) else f"{where}.name"
        raise ctx.fail(key, f"{name!r} is unknown{did_you_mean(name, registry)}; allowed: {', '.join(registry)}")
    return registry[name], settings


def _parse_scheduler(data: dict, ctx: Context) -> Scheduler:
    """`scheduler: {name: ..., ...}`, or the older `asha: {...}` (ASHA) / `asha: false` (FIFO);
    neither: ASHA with its defaults."""
    if "scheduler" in data and "asha" in data:
        raise ctx.fail("asha", "give the scheduler once: either scheduler: {name: ...} or the older asha: key")
    if "scheduler" in data:
        cls, settings = _named(data["scheduler"], "scheduler", SCHEDULERS, ctx)
        return cls.from_yaml(settings, ctx, "scheduler")
    raw = data.get("asha", {})
    if raw is False or raw is None:
        return Fifo()
    if not isinstance(raw, dict):
        raise ctx.fail("asha", f"expected a mapping with {', '.join(Asha.keys())}, or false")
    return Asha.from_yaml(raw, ctx, "asha")


def _parse_searcher(raw: Any, ctx: Context, scheduler: Scheduler) -> Searcher:
    if raw is None:
        cls, settings = SEARCHERS[scheduler.default_searcher], {}
    else:
        cls, settings = _named(raw, "algorithm", SEARCHERS, ctx)
    if scheduler.searchers is not None and cls.name not in scheduler.searchers:
        raise ctx.fail("algorithm", f"{cls.name} cannot drive {scheduler.name}; allowed: "
                                    f"{', '.join(scheduler.searchers)}")
    return cls.from_yaml(settings, ctx, "algorithm")


def _parse_final(source: str, raw: Any, search: dict, grid: dict, scheduler: Scheduler) -> FinalStage | None:
    if raw is False:
        return None
    if scheduler.final_stage is not None:  # this scheduler's results have no configuration to re-train
        if raw is None or raw == {}:
            return None
        raise _fail(source, "final", f"{scheduler.final_stage}; allowed with scheduler {scheduler.name}: false")
    if raw is None or raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(source, "final", "expected a mapping with top_k, seeds and per, or false to skip the final stage")
    for key in raw:
        if key not in FINAL_KEYS:
            raise _fail(source, f"final.{key}", f"unknown key{did_you_mean(key, FINAL_KEYS)}; allowed: {', '.join(FINAL_KEYS)}")
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
