"""The TrainConfig of `byol-sweep train` (and `views`): a YAML file of fields (--config), --set
FIELD=VALUE, one flag per field, and --policy-file, in that order of precedence (later wins)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from sweep.space.policies import policies_json
from sweep.space.yaml_input import read_sets, read_yaml
from trainer.config import ConfigError, TrainConfig


def config_from_args(args) -> TrainConfig:
    values: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                              "give a YAML file of TrainConfig fields")
        try:
            loaded = read_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: cannot be read as UTF-8 text ({err})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {getattr(err, 'problem', err)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of TrainConfig fields")
        values.update(loaded)
    values.update(read_sets(args.set, ConfigError))
    for name in TrainConfig.fields():
        value = getattr(args, f"field_{name}")
        if value is not None:
            values[name] = value
    if args.policy_file:
        own = policies_json(str(Path(args.policy_file).resolve()), "--policy-file", "policies")
        values["policies"] = own
        if "policy" not in values and len(json.loads(own)) == 1:
            values["policy"] = next(iter(json.loads(own)))
    if isinstance(values.get("dataset"), str) is False and "dataset" in values:
        values["dataset"] = str(values["dataset"])
    return TrainConfig.from_dict(values, source=args.config or "command line")
