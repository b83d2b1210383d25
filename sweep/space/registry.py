"""What a scheduler or searcher entry is made of: its YAML keys (each with a default and a check),
the context a space gives it to validate against, and the one error a bad space raises.

No Ray here: a space is validated without starting or importing Ray; an entry imports Ray only
when it builds its Ray object."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar

from sweep.errors import SpaceError
from vocabulary.suggest import did_you_mean


def fail(source: str, key: str, message: str) -> SpaceError:
    return SpaceError(f"{source}: {key}: {message}")


@dataclass
class Context:
    """What an entry may check itself against: the rest of the space, already validated."""

    source: str
    epochs: int  # the training budget: base.epochs, or TrainConfig's default
    epochs_set: bool  # base names epochs
    search: dict[str, Any]  # field -> Distribution
    grid: dict[str, list]
    scheduler: str = "asha"  # the scheduler's name (for the searcher's checks)

    def fail(self, key: str, message: str) -> SpaceError:
        return fail(self.source, key, message)


# -- key checks: each returns what is wrong with a value, or None -------------------------------
Check = Callable[[Any], "str | None"]


def whole(low: int = 1) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            return f"expected an integer >= {low}, got {v!r}"
        return None
    return check


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"expected a number, got {v!r}"
        if (v <= low if low_open else v < low) or (v >= high if high_open else v > high):
            return (f"expected a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                    f"got {v!r}")
        return None
    return check


def flag(v) -> str | None:
    return None if isinstance(v, bool) else f"expected true or false, got {v!r}"


def positive_numbers(v) -> str | None:
    if (not isinstance(v, list) or not v
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0 for x in v)):
        return f"expected a non-empty list of numbers > 0, got {v!r}"
    return None


def key(default: Any, check: Check, doc: str = "") -> Any:
    """A YAML key of an entry: a dataclass field with its default and its check."""
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass
class Entry:
    """A registry entry; subclasses are dataclasses whose fields are their YAML keys."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_yaml(cls, raw: dict, ctx: Context, where: str):
        """Check each key against the entry's schema, then the entry's own rules (`check`)."""
        allowed = cls.keys()
        for k in raw:
            if k not in allowed:
                listing = ", ".join(allowed) if allowed else "none (it takes no settings)"
                raise ctx.fail(f"{where}.{k}", f"unknown key for {cls.name}{did_you_mean(k, allowed)}; allowed: {listing}")
        for f in fields(cls):
            if f.name in raw:
                problem = f.metadata["check"](raw[f.name])
                if problem:
                    raise ctx.fail(f"{where}.{f.name}", problem)
        entry = cls(**raw)
        entry.check(ctx, where)
        return entry

    def check(self, ctx: Context, where: str) -> None:
        """Rules across keys and against the rest of the space; raise ctx.fail(...)."""

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def params(self, prefix: str) -> dict[str, Any]:
        """The MLflow params that record the entry and its settings."""
        return {prefix: self.name, **{f"{prefix}.{k}": v for k, v in self.settings().items() if v is not None}}


def defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}
