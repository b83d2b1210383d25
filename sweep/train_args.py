"""The `byol-sweep train` command's arguments (one flag per TrainConfig field) and the TrainConfig
they give (also for `views`): a YAML file of fields (--config), then the command line on top of it: --set FIELD=VALUE, one flag per field, and --policy-file.

The file is a base the command line may override. On the command line each field is given once:
a field named by a flag and by --set, by --set twice, or `policies` by --set or its flag and by
--policy-file, is refused, whether the values agree or not (one rule to remember; no "which one
wins"). Every value is checked where it was given, so a bad one is reported even when another
source names the same field."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from sweep.space.policies import policies_json
from sweep.space.yaml_input import read_sets, read_yaml
from trainer.config import ConfigError, TrainConfig, check_range, coerce, describe_range
from vocabulary.suggest import did_you_mean


def config_from_args(args) -> TrainConfig:
    values = _config_file(args.config) if args.config else {}
    values.update(_command_line(args))
    if args.policy_file:
        own = policies_json(str(Path(args.policy_file).resolve()), "--policy-file", "policies")
        values["policies"] = own
        if "policy" not in values and len(json.loads(own)) == 1:
            values["policy"] = next(iter(json.loads(own)))
    return TrainConfig.from_dict(values, source=args.config or "command line")


def _config_file(name: str) -> dict[str, Any]:
    path = Path(name)
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
    return _checked(loaded, str(path))


def _command_line(args) -> dict[str, Any]:
    """The fields --set and the flags give, each checked, each given once."""
    given: dict[str, str] = {}  # field -> how the command line gave it
    values: dict[str, Any] = {}
    for item in args.set:
        one = _checked(read_sets([item], ConfigError), "--set")
        for name, value in one.items():
            _once(given, name, f"--set {item.strip()}")
            values[name] = value
    for name in TrainConfig.fields():
        value = getattr(args, f"field_{name}")
        if value is not None:
            flag = f"--{name.replace('_', '-')}"
            if isinstance(value, bool):
                _once(given, name, flag if value else f"--no-{flag[2:]}")
            else:
                _once(given, name, f"{flag} {value}")
            values[name] = value
    if args.policy_file:
        _once(given, "policies", f"--policy-file {args.policy_file}")
    return _checked(values, "command line")


def _once(given: dict[str, str], name: str, how: str) -> None:
    if name in given:
        raise ConfigError(f"command line: {name} is given twice ({given[name]} and {how}); give each field once")
    given[name] = how


def _checked(values: dict[str, Any], source: str) -> dict[str, Any]:
    """values with each field's value converted to its type, or ConfigError naming the source, the
    field and what is allowed."""
    known = TrainConfig.fields()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], known)}; allowed fields: "
                          f"{', '.join(known)}")
    checked = {}
    for name, value in values.items():
        if name == "dataset" and not isinstance(value, str):
            value = str(value)  # YAML reads `dataset: 10` as a number; the dataset check names what is allowed
        checked[name] = coerce(name, value, source)
        check_range(name, checked[name], source)
    return checked


def _field_argument(name: str, f) -> tuple[list[str], dict]:
    """The train command's flag for one TrainConfig field, from its metadata: choices, a metavar
    that says what it takes, --x/--no-x for booleans."""

    kind = f.type if isinstance(f.type, str) else f.type.__name__
    flag = f"--{name.replace('_', '-')}"
    help_text = f"{f.metadata['help']} (default {f.default})".replace("%", "%%")
    if kind == "bool":
        return [flag], dict(action=argparse.BooleanOptionalAction, default=None, help=help_text)
    options = dict(type={"int": int, "float": float, "str": str}[kind], default=None, help=help_text)
    if f.metadata["choices"]:
        options.update(choices=f.metadata["choices"], metavar="{" + ",".join(f.metadata["choices"]) + "}")
    elif kind in ("int", "float"):
        options["metavar"] = ("N" if kind == "int" else "X") + (f" in {describe_range(name)}"
                                                                 if describe_range(name) != "any value" else "")
    else:
        options["metavar"] = name.upper().replace("_", "-").split("-")[-1]
    return [flag], options


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one configuration (flags, --set or a YAML file)",
                       description="Train one BYOL configuration; prints one line per epoch and writes "
                                   "metrics.json and checkpoint.pt to --out.")
    p.add_argument("--config", help="YAML file of TrainConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="set one field (repeatable)")
    p.add_argument("--out", help="output folder (default byol-runs/train-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--tracking-uri", help="also log the run to MLflow here (its metrics per epoch, the encoder as "
                                          "model/encoder.pt); default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                                          "here, when --experiment is given")
    p.add_argument("--experiment", help="MLflow experiment of the run (default byol-train); logs to MLflow")
    p.add_argument("--policy-file", help="YAML file of your own augmentation policies {name: definition}; train the "
                                         "one --policy names (or the file's only one)")
    fields = p.add_argument_group("configuration fields")
    for name, f in TrainConfig.fields().items():
        flags, options = _field_argument(name, f)
        fields.add_argument(*flags, dest=f"field_{name}", **options)
