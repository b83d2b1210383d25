"""A parsed space checked against what it would cost, on the driver before Ray starts: its size (a
typo must not start a sweep that never ends). The rest of what a sweep is checked for before Ray
starts (name, data, device, resources, storage) is sweep/preflight.py."""
from __future__ import annotations

import math

from sweep.errors import SweepError
from sweep.space.spec import SweepSpec

# sizes above which a sweep is refused unless asked for on purpose (--allow-large)
MAX_TRIALS = 10_000
MAX_GRID = 1_000

def check_size(spec: SweepSpec, allow_large: bool = False) -> None:
    """Refuse a sweep of more than MAX_TRIALS trials or a grid of more than MAX_GRID combinations,
    unless allow_large: a typo (num_samples: 1000000000000) must not start a sweep that never ends."""
    if allow_large:
        return
    grid = math.prod(len(v) for v in spec.grid.values()) if spec.grid else 1
    if grid > MAX_GRID:
        raise SweepError(f"{spec.source}: grid has {grid:,} combinations; allowed: at most {MAX_GRID:,} "
                         "(pass --allow-large to run it on purpose)")
    total = spec.num_samples * grid
    if total > MAX_TRIALS:
        raise SweepError(f"{spec.source}: {total:,} trials (num_samples {spec.num_samples:,} x {grid:,} grid "
                         f"combinations); allowed: at most {MAX_TRIALS:,} (pass --allow-large to run it on purpose)")

