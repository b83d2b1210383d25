"""Where a space comes from: a shipped space's name or a YAML file, read within the input limits."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sweep.errors import SpaceError
from sweep.space.parse import parse_space
from sweep.space.spec import SweepSpec
from sweep.space.yaml_input import read_sets, read_yaml, read_yaml_file
from vocabulary.suggest import did_you_mean


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
        f"search space {name_or_path!r} is neither a file nor a shipped space{did_you_mean(name_or_path, spaces)}; "
        f"shipped: {', '.join(sorted(spaces))}"
    )


def load_space(name_or_path: str) -> SweepSpec:
    path, data, text = read_space(name_or_path)
    return parse_space(data, str(path), text)


def read_space(name_or_path: str) -> tuple[Path, Any, str]:
    """(its path, the parsed YAML document, its text) of a space file or shipped space's name."""
    path = resolve_space_path(name_or_path)
    data, text = read_yaml_file(path)
    return path, data, text


def ablation_space(policy: str, seeds: int, base_space: str, sets: list[str], policy_file: str | None) -> SweepSpec:
    """The space of `byol-sweep ablate`: base_space's base (its policy left out), with `sets`
    (FIELD=VALUE) on top, the policy ablated over seeds 0..seeds-1."""
    if not 2 <= seeds <= 1000:
        raise SpaceError(f"--seeds is {seeds}; allowed: an integer from 2 to 1000 (the arms pair by seed)")
    base = {k: v for k, v in load_space(base_space).base.items() if k not in ("policy", "policies")}
    names = [item.split("=", 1)[0].strip() for item in sets]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise SpaceError(f"--set {twice} is given twice; give each field once")
    base.update(read_sets(sets, SpaceError))
    data = {"name": f"ablate-{policy}", "base": base, "grid": {"seed": list(range(seeds))}, "ablate": policy}
    if policy_file:
        data["policies"] = str(Path(policy_file).expanduser().resolve())
    text = yaml.safe_dump(data, sort_keys=False)
    return parse_space(read_yaml(text), f"byol-sweep ablate {policy}", text)
