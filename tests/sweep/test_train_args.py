"""`byol-sweep train`'s configuration from the command line: a field given by a flag and by --set,
or by --set twice, is refused in one sentence; a --set value is always checked, whatever else is
given."""
from __future__ import annotations

import pytest

from sweep.cli import build_parser, main
from sweep.train_args import config_from_args
from trainer.config import ConfigError


def config_of(*argv: str):
    return config_from_args(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("argv, words", [
    (["--set", "epochs=abc", "--epochs", "1"], ["epochs", "abc"]),
    (["--set", "epochs=2", "--epochs", "2"], ["epochs", "--set epochs=2", "--epochs 2"]),
    (["--epochs", "3", "--set", "epochs=1"], ["epochs", "--set epochs=1", "--epochs 3"]),
    (["--set", "base_lr=0.1", "--set", "base_lr=0.2"], ["base_lr", "--set base_lr=0.1", "--set base_lr=0.2"]),
    (["--set", "linear_probe=false", "--linear-probe"], ["linear_probe", "--linear-probe"]),
])
def test_a_field_given_twice_on_the_command_line_is_refused(argv, words):
    with pytest.raises(ConfigError) as err:
        config_of(*argv)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["--set", "epochs=abc", "--set", "seed=1"], "epochs must be an integer, got 'abc'"),
    (["--set", "batch_size=1"], "batch_size is 1; allowed: [2, 65536]"),
    (["--set", "epochs"], "expected FIELD=VALUE"),
])
def test_a_bad_set_value_is_always_reported(argv, message):
    with pytest.raises(ConfigError) as err:
        config_of(*argv)
    assert message in str(err.value), str(err.value)


def test_a_bad_set_value_is_reported_before_the_conflict(tmp_path):
    with pytest.raises(ConfigError) as err:
        config_of("--set", "epochs=abc", "--epochs", "1")
    assert "--set: epochs must be an integer, got 'abc'" in str(err.value)


def test_a_bad_value_in_the_config_file_is_reported_even_when_a_flag_replaces_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match="epochs must be an integer, got 'ten'"):
        config_of("--config", str(path), "--epochs", "1")


def test_a_flag_still_overrides_the_config_file_and_sets_combine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nseed: 3\n")
    config = config_of("--config", str(path), "--epochs", "2", "--set", "base_lr=0.5", "--set", "seed=4")
    assert (config.epochs, config.seed, config.base_lr) == (2, 4, 0.5)


def test_a_policy_file_and_a_policies_value_are_refused_together(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("mine: {view1: [{op: crop}], view2: [{op: crop}]}\n")
    with pytest.raises(ConfigError, match="policies.*--policy-file"):
        config_of("--policy-file", str(path), "--policies", "{}")


def test_train_names_the_conflict_in_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--set", "epochs=abc", "--epochs", "1", "--out", "run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "epochs must be an integer, got 'abc'" in err, err
    assert not (tmp_path / "run").exists()


def test_ablate_refuses_a_field_set_twice():
    from sweep.errors import SpaceError
    from sweep.space import ablation_space

    with pytest.raises(SpaceError, match="--set epochs is given twice; give each field once"):
        ablation_space("byol", 2, "quick", ["epochs=2", "epochs=3"], None)
    assert ablation_space("byol", 2, "quick", ["epochs=2", "base_lr=0.3"], None).base["epochs"] == 2
