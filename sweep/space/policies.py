"""A space's own augmentation policies (`policies:` inline, or the path of a YAML file beside the
space), and `train --policy-file`: read, resolved and checked by trainer/policies.py before Ray
starts; they travel to the trials as TrainConfig.policies (JSON), which MLflow records."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweep.errors import SpaceError
from sweep.space.yaml_input import read_yaml_file
from trainer.policies import SHIPPED, PolicyError, definition, parse_policies
from vocabulary.suggest import did_you_mean


def read_policy_file(path: Path, what: str) -> Any:
    """The parsed YAML of a policy file; `what` names who points at it (for the message)."""
    if not path.is_file():
        raise SpaceError(f"{what}: policy file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                         "give a YAML file of {name: definition}")
    return read_yaml_file(path)[0]


def policies_json(raw: Any, source: str, key: str = "policies") -> str:
    """The user's policies as TrainConfig.policies: `raw` is a mapping {name: definition}, or the path
    of a YAML file holding one (relative to the space's folder). Every field is checked here."""
    where = f"{source}: {key}"
    if isinstance(raw, str):
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path(source).parent / path
        raw, where = read_policy_file(path, where), f"{path}:"
    try:
        parse_policies(raw, where)
    except PolicyError as err:
        raise SpaceError(str(err)) from None
    return json.dumps(raw, sort_keys=False)


def check_policy_names(values: dict[str, list], own: str, source: str) -> None:
    """Each policy a space names ({key: [names]}) is shipped or one of its own."""
    for key, names in values.items():
        for name in names:
            try:
                definition(str(name), own)
            except PolicyError:
                allowed = [*SHIPPED, *(json.loads(own) if own else {})]
                raise SpaceError(f"{source}: {key}: policy {name!r} is unknown{did_you_mean(name, allowed)}; "
                                 f"allowed: {', '.join(allowed)}") from None
