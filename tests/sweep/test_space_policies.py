"""A space's own augmentation policies: inline or in a file beside it, checked before Ray starts,
compared in a grid like the shipped ones; `train --policy-file` trains one."""
from __future__ import annotations

import json

import pytest
import yaml

from sweep.cli import main
from sweep.errors import SpaceError
from sweep.space import load_space, parse_space
from trainer.policies import policy_views

MINE = {"from": "byol_small", "T_prime": {"solarize": {"p": 0.4}}, "T": {"erase": {"p": 0.25}}}


def space(**extra) -> dict:
    return {"name": "own", "base": {"epochs": 2}, "grid": {"policy": ["byol_small", "mine"], "seed": [0, 1]},
            "algorithm": "grid", "asha": False, "final": False, **extra}


def test_an_inline_policy_is_compared_in_a_grid_and_reaches_each_trial():
    spec = parse_space(space(policies={"mine": MINE}), "own.yaml")
    config = spec.train_config({"policy": "mine", "seed": 0})
    t, t_prime = policy_views(config.policy, config.aug_strength, config.policies)
    assert t_prime.solarize_p == 0.4 and "erase" in t.ops
    assert json.loads(config.policies) == {"mine": MINE}  # MLflow records it as the param `policies`
    assert spec.compared_fields == ["policy"]


def test_a_policy_file_beside_the_space(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"mine": MINE}))
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(space(policies="mine.yaml")))
    spec = load_space(str(tmp_path / "own.yaml"))
    assert json.loads(spec.train_config({"policy": "mine", "seed": 1}).policies) == {"mine": MINE}


@pytest.mark.parametrize("extra, message", [
    ({"policies": {"mine": {"from": "byol", "T": {"sharpen": {}}}}}, r"own\.yaml: policies\.mine\.T\.sharpen: unknown op"),
    ({"policies": "missing.yaml"}, r"own\.yaml: policies: policy file .*missing\.yaml does not exist"),
    ({"policies": {"other": MINE}}, r"own\.yaml: grid\.policy: policy 'mine' is unknown; allowed: byol, .*, other"),
    ({}, r"own\.yaml: grid\.policy: policy 'mine' is unknown; allowed: byol, "),
])
def test_a_bad_policy_in_a_space_names_the_file_and_the_key(extra, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(space(**extra), "own.yaml")


def test_validate_refuses_a_bad_policy_file_in_one_sentence(tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("mine: {from: byol, T_prime: {solarize: {p: 1.4}}}\n")
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(space(policies="mine.yaml")))
    assert main(["validate", str(tmp_path / "own.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mine.yaml: mine.T_prime.solarize.p: 1.4 is outside [0, 1] (probability)" in err


def test_train_with_a_policy_file_trains_its_policy(tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"mine": MINE}))
    rc = main(["train", "--policy-file", str(tmp_path / "mine.yaml"), "--out", str(tmp_path / "out"),
               "--set", "epochs=1", "--set", "train_limit=128", "--set", "batch_size=64", "--set", "knn_queries=100",
               "--set", "knn_bank_size=128", "--set", "projector_hidden=32", "--set", "projector_out=16",
               "--set", "linear_probe=false"])
    assert rc == 0
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["policy"] == "mine" and json.loads(saved["policies"]) == {"mine": MINE}
    assert main(["train", "--policy-file", str(tmp_path / "nope.yaml")]) == 2
    assert "policy file" in capsys.readouterr().err


def test_the_readme_policy_file_is_valid():
    import re
    from pathlib import Path

    from trainer.policies import parse_policies

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"```yaml\n# my_policies.yaml\n(.*?)```", readme, re.S).group(1)
    resolved = parse_policies(yaml.safe_load(example))
    assert set(resolved) == {"strong_solar", "gentle"} and "blur" not in resolved["gentle"]["T"]


def test_views_draws_a_policys_views_to_a_png(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"mine": MINE}))
    out = tmp_path / "views.png"
    assert main(["views", "mine", "--policy-file", str(tmp_path / "mine.yaml"), "--dataset", "digits",
                 "--draws", "1", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 200  # 8 images wide, 3 rows
    assert main(["views", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "policy 'nope' is unknown" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("index", range(31))
def test_every_bad_policy_file_is_refused_by_validate_in_one_sentence(index, tmp_path, capsys):
    """The bad definitions of tests/trainer/test_policies.py, each in a policy file beside a space."""
    from tests.trainer.test_policies import BAD

    definitions, message = BAD[index]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(definitions, sort_keys=False))
    (tmp_path / "own.yaml").write_text(yaml.safe_dump({"name": "own", "base": {"epochs": 2}, "policies": "bad.yaml",
                                                       "grid": {"seed": [0, 1]}, "algorithm": "grid", "asha": False,
                                                       "final": False}))
    assert main(["validate", str(tmp_path / "own.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("byol-sweep validate: error: ")
    import re

    assert re.search(message.replace(r"policies\.", "").replace("policies: ", ""), err), err
    assert str(tmp_path / "bad.yaml") in err
