"""TrainConfig: defaults, types, ranges; a bad value is refused by a message that names it."""
from __future__ import annotations

import numpy as np
import pytest

from trainer import ConfigError, TrainConfig, Trainer, augment
from trainer.config import BACKBONES, FIXED_DATASETS, POLICIES, describe_range


def test_defaults_are_valid_and_the_papers():
    cfg = TrainConfig()
    assert cfg.dataset == "digits"
    assert cfg.tau_base == 0.996
    assert cfg.optimizer == "lars" and cfg.momentum == 0.9
    assert cfg.projector_hidden == 4096 and cfg.projector_out == 256
    assert cfg.policy == "byol" and cfg.aug_strength == 1.0
    assert cfg.concat_views is False


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_negative_learning_rate_is_refused_by_name():
    with pytest.raises(ConfigError, match="base_lr") as err:
        TrainConfig(base_lr=-1)
    assert "-1" in str(err.value) and "> 0" in str(err.value)


def test_open_bounds_are_open():
    with pytest.raises(ConfigError, match="base_lr"):
        TrainConfig(base_lr=0.0)
    with pytest.raises(ConfigError, match="momentum"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ConfigError, match="knn_temperature"):
        TrainConfig(knn_temperature=0)
    TrainConfig(momentum=0.0, tau_base=1.0, aug_strength=0.0, warmup_epochs=0.0)
    TrainConfig(tau_base=0.0, aug_strength=1.8)


@pytest.mark.parametrize("name, value", [
    ("tau_base", 1.01), ("tau_base", -0.1), ("aug_strength", 1.85), ("aug_strength", -1.0), ("batch_size", 1),
    ("epochs", 0), ("image_size", 4), ("image_size", 2048), ("weight_decay", -1e-6), ("seed", -1),
    ("train_limit", -5), ("knn_k", 0), ("projector_hidden", 0), ("warmup_epochs", -1.0),
])
def test_out_of_range_values_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name) as err:
        TrainConfig(**{name: value})
    assert "allowed" in str(err.value)
    assert describe_range(name) in str(err.value)


def test_unknown_field_is_refused_by_name():
    with pytest.raises(ConfigError, match="learning_rate") as err:
        TrainConfig.from_dict({"learning_rate": 0.1}, source="spaces/x.yaml")
    message = str(err.value)
    assert message.startswith("spaces/x.yaml")
    assert "base_lr" in message  # lists what is allowed


@pytest.mark.parametrize("name, value", [
    ("epochs", "ten"), ("epochs", 2.5), ("epochs", True), ("batch_size", None), ("base_lr", "0.1"),
    ("base_lr", True), ("linear_probe", "yes"), ("linear_probe", 1), ("dataset", 3), ("policy", ["byol"]),
])
def test_wrong_types_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        TrainConfig(**{name: value})
    with pytest.raises(ConfigError, match=name):
        TrainConfig.from_dict({name: value})


@pytest.mark.parametrize("name, value, allowed", [
    ("policy", "autoaugment", POLICIES), ("backbone", "vgg16", BACKBONES), ("optimizer", "rmsprop", ("lars",)),
    ("precision", "fp16", ("bf16",)), ("dataset", "mnist", FIXED_DATASETS + ("imagefolder:<path>",)),
    ("device", "gpu", ("cpu", "cuda")),
])
def test_unknown_choices_are_refused_naming_value_and_choices(name, value, allowed):
    with pytest.raises(ConfigError, match=name) as err:
        TrainConfig(**{name: value})
    message = str(err.value)
    assert value in message
    for choice in allowed:
        assert choice in message


def test_every_config_policy_is_an_augmentation_policy():
    assert set(POLICIES) == set(augment.POLICIES)


def test_coercion_of_numbers():
    cfg = TrainConfig(base_lr=1, epochs=3.0, tau_base=1)
    assert cfg.base_lr == 1.0 and isinstance(cfg.base_lr, float)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert isinstance(cfg.tau_base, float)


def test_accepted_strings():
    assert TrainConfig(dataset="imagefolder:/some/where").dataset == "imagefolder:/some/where"
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        TrainConfig(device=device)


def test_dict_round_trip():
    cfg = TrainConfig(base_lr=0.5, policy="no_blur", aug_strength=0.5, epochs=3)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert set(cfg.to_dict()) == set(TrainConfig.fields())


def test_every_field_has_help():
    for name, f in TrainConfig.fields().items():
        assert f.metadata["help"], name


def test_mutated_config_is_revalidated_by_the_trainer():
    cfg = TrainConfig()
    cfg.base_lr = -3.0
    with pytest.raises(ConfigError, match="base_lr"):
        cfg.validate()
    with pytest.raises(ConfigError, match="base_lr"):
        Trainer(cfg)


@pytest.mark.parametrize("name, value", [
    ("base_lr", float("nan")), ("tau_base", float("nan")), ("aug_strength", float("nan")),
    ("base_lr", float("inf")), ("weight_decay", float("inf")),
    ("epochs", float("inf")), ("epochs", float("nan")), ("batch_size", float("inf")),
])
def test_non_finite_numbers_are_refused_by_name(name, value):
    """YAML has .nan and .inf; they must get the same one-sentence ConfigError as any bad value.

    Today NaN passes every range check (all comparisons with NaN are false) and an infinite
    integer field escapes as OverflowError / a bare ValueError without the field's name.
    """
    with pytest.raises(ConfigError, match=name):
        TrainConfig.from_dict({name: value}, source="spaces/x.yaml")


@pytest.mark.parametrize("name, value, expected", [
    ("epochs", np.int64(3), 3), ("batch_size", np.int32(64), 64), ("base_lr", np.float32(0.5), 0.5),
    ("base_lr", np.int64(2), 2.0), ("linear_probe", np.bool_(False), False),
])
def test_numpy_scalars_are_accepted(name, value, expected):
    """Values from a sweep (np.linspace / np.arange grids, pandas) are numpy scalars."""
    cfg = TrainConfig.from_dict({name: value})
    assert getattr(cfg, name) == expected
    assert type(getattr(cfg, name)) is type(expected)
