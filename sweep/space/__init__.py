"""Search spaces: a YAML file -> a validated SweepSpec. No Ray and no MLflow at import: `validate`
checks a space without starting anything.

    spec.py        SweepSpec, FinalStage, Distribution: a space once checked
    parse.py       the YAML document -> SweepSpec, every error naming file, key and what is allowed
    files.py       shipped spaces and YAML files
    yaml_input.py  the YAML reader with its size, depth and alias limits
    registry.py    what a scheduler or searcher entry is made of
    schedulers.py  the schedulers (fifo, asha, hyperband, pbt), one entry each
    searchers.py   the searchers (optuna, random, grid), one entry each
    limits.py      a sweep's size and its datasets, checked before Ray starts
    policies.py    a space's own augmentation policies; ablation.py: `ablate:` as the grid it stands for
"""
from sweep.errors import SpaceError
from sweep.space.files import ablation_space, load_space, read_space, resolve_space_path, shipped_spaces
from sweep.space.parse import parse_space, space_problems
from sweep.space.spec import Distribution, FinalStage, SweepSpec

__all__ = ["Distribution", "ablation_space", "FinalStage", "SpaceError", "SweepSpec", "load_space", "parse_space", "read_space",
           "resolve_space_path", "shipped_spaces", "space_problems"]
