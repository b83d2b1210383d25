"""`ablate: POLICY` in a space (and `byol-sweep ablate`): the policy and each of its leave-one-op-out
variants (trainer/policies.py ablation_variants) as the arms of a grid over seeds, with no search, no
early stopping and no final stage, so the report can pair every variant with the full policy by seed.
The variants differ from the policy in the policy alone: the comparison rule holds for them."""
from __future__ import annotations

import json
from typing import Any

from sweep.errors import SpaceError
from sweep.space.policies import policies_json
from trainer.policies import PolicyError, ablation_variants


def expand_ablation(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The space an `ablate:` key stands for (data unchanged without one)."""
    if "ablate" not in data:
        return data
    policy = data["ablate"]
    if not isinstance(policy, str) or not policy:
        raise SpaceError(f"{source}: ablate: expected the name of a policy, got {policy!r}")
    grid = data.get("grid") or {}
    base = data.get("base") or {}
    if not isinstance(grid, dict) or not isinstance(base, dict):
        return data  # parse_space says what is wrong with them
    if data.get("search"):
        raise SpaceError(f"{source}: search: an ablation trains fixed arms on the same seeds; remove search "
                         "(set its fields in base)")
    for where, part in (("base.policy", base), ("grid.policy", grid)):
        if "policy" in part:
            raise SpaceError(f"{source}: {where}: ablate sets the policy arms itself; remove {where}")
    seeds = grid.get("seed")
    if not isinstance(seeds, list) or len(set(map(str, seeds))) < 2:
        raise SpaceError(f"{source}: grid.seed: an ablation pairs its arms by seed; give at least 2 seeds "
                         "(grid: {seed: [0, 1, 2, 3]})")
    if data.get("final") not in (None, False):
        raise SpaceError(f"{source}: final: an ablation selects nothing, so it has no final stage; allowed: false")
    scheduler = data.get("scheduler", "fifo" if data.get("asha", False) is False else "asha")
    if scheduler not in ("fifo", {"name": "fifo"}):
        raise SpaceError(f"{source}: scheduler: an ablation runs every arm for the full budget; allowed: fifo "
                         "(or asha: false)")
    own = json.loads(policies_json(data["policies"], source)) if "policies" in data else {}
    try:
        variants = ablation_variants(policy, json.dumps(own) if own else "")
    except PolicyError as err:
        raise SpaceError(f"{source}: ablate: {err}") from None
    expanded = {k: v for k, v in data.items() if k not in ("ablate", "asha", "scheduler")}
    return {**expanded, "policies": {**own, **variants}, "grid": {"policy": [policy, *variants], **grid},
            "algorithm": data.get("algorithm", "grid"), "asha": False, "final": False}
