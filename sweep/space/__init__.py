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
"""
from sweep.errors import SpaceError
from sweep.space.files import load_space, read_space, resolve_space_path, shipped_spaces
from sweep.space.parse import parse_space, space_problems
from sweep.space.spec import Distribution, FinalStage, SweepSpec

__all__ = ["Distribution", "FinalStage", "SpaceError", "SweepSpec", "load_space", "parse_space", "read_space",
           "resolve_space_path", "shipped_spaces", "space_problems"]
