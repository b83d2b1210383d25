"""TrainConfig: the single source of truth for every hyperparameter, its default and range."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from vocabulary.suggest import did_you_mean

from . import policies as aug_policies

BACKBONES = ("small_cnn", "small_cnn_half", "resnet18_cifar", "resnet18", "resnet50")
OPTIMIZERS = ("lars", "sgd", "adamw")
POLICIES = tuple(aug_policies.POLICIES)
PRECISIONS = ("auto", "fp32", "bf16")
EVAL_SPLITS = ("val", "test")
FIXED_DATASETS = ("digits", "digits_canvas", "shapes", "cifar10_mini", "cifar10", "cifar100", "stl10")
# upper bounds on sizes: far above any real run, low enough that a typo (1e20) is refused at once
MAX_IMAGES = 100_000_000


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


def _spec(default, help: str, low=None, high=None, choices=None, low_open=False, high_open=False):
    return field(
        default=default,
        metadata=dict(help=help, low=low, high=high, choices=choices, low_open=low_open, high_open=high_open),
    )


@dataclass
class TrainConfig:
    # data
    dataset: str = _spec("digits", "digits | digits_canvas | shapes (generated in code) | cifar10_mini (5,000 CIFAR-10 images at 16 px, shipped) | cifar10 | cifar100 | stl10 | imagefolder:<path>")
    data_root: str = _spec("~/.cache/byol-sweep/data", "where torchvision datasets live")
    download: bool = _spec(False, "allow torchvision to download cifar10/cifar100/stl10")
    cache_dir: str = _spec("~/.cache/byol-sweep/cache", "where decoded imagefolder trees are cached")
    image_size: int = _spec(32, "side of the augmented views in pixels", low=8, high=1024)
    train_limit: int = _spec(0, "train on N of the training images (0 = all): a stratified random subset, every "
                                "class in proportion, drawn with a fixed seed (not the training seed), so every "
                                "trial and seed with the same N trains on the same images", low=0, high=MAX_IMAGES)
    # model
    backbone: str = _spec("small_cnn", "encoder network", choices=BACKBONES)
    projector_hidden: int = _spec(4096, "projector/predictor hidden width", low=1, high=65536)
    projector_out: int = _spec(256, "projection size", low=1, high=65536)
    # optimisation
    batch_size: int = _spec(256, "images per step (each gives two views)", low=2, high=65536)
    epochs: int = _spec(10, "training epochs", low=1, high=10_000)
    optimizer: str = _spec("lars", "optimiser", choices=OPTIMIZERS)
    base_lr: float = _spec(0.2, "learning rate at batch 256 (lr = base_lr * batch / 256)", low=0.0, low_open=True)
    weight_decay: float = _spec(1.5e-6, "weight decay (not on biases or norm parameters)", low=0.0)
    momentum: float = _spec(0.9, "optimiser momentum (LARS/SGD)", low=0.0, high=1.0, high_open=True)
    predictor_lr_scale: float = _spec(1.0, "the predictor's learning rate as a multiple of the rest's (a faster "
                                           "predictor: Tian et al. 2021, DirectPred)", low=0.0, high=100.0, low_open=True)
    warmup_epochs: float = _spec(1.0, "linear learning-rate warmup, in epochs", low=0.0, high=10_000.0)
    tau_base: float = _spec(0.996, "EMA momentum at step 0; rises to 1 on a cosine", low=0.0, high=1.0)
    concat_views: bool = _spec(False, "run both views as one batch (shared BatchNorm statistics)")
    # augmentation
    policy: str = _spec("byol", f"augmentation policy: {', '.join(POLICIES)}, or one of `policies`")
    policies: str = _spec("", "your own augmentation policies, as JSON {name: definition} (a space's policies: key "
                              "or train --policy-file writes it; see trainer/policies.py)")
    policy_params: str = _spec("", "values of the policy's searched parameters, as JSON {policy.<view>.<op>.<param>: "
                                   "value} (a space's search writes it)")
    aug_strength: float = _spec(1.0, "scales the policy's magnitudes (crop area and aspect, jitter, blur sigma, "
                                     "solarize threshold), not its probabilities: 1 the recipe, 0 no crop, jitter or "
                                     "blur; the range ends before a crop could fall under 1% of the image",
                                low=0.0, high=aug_policies.MAX_STRENGTH)
    # evaluation
    knn_k: int = _spec(200, "neighbours in the kNN monitor (capped by the bank size)", low=1, high=10_000)
    knn_temperature: float = _spec(0.1, "kNN vote temperature", low=0.0, low_open=True)
    knn_bank_size: int = _spec(5000, "labelled training images in the kNN bank (0 = all)", low=0, high=MAX_IMAGES)
    knn_queries: int = _spec(2000, "held-out images the kNN monitor classifies (0 = all)", low=0, high=MAX_IMAGES)
    eval_split: str = _spec("val", "what the kNN monitor and linear probe evaluate on: val (select on this: a "
                            "fixed, stratified part of the labelled images held out of training, or a tree's "
                            "val/ folder) or test (final numbers: the dataset's test split, never the val "
                            "images; digits and trees without split folders: 70/15/15 train/val/test)",
                            choices=EVAL_SPLITS)
    linear_probe: bool = _spec(True, "after the last epoch, fit a linear probe on the frozen features of the kNN "
                                     "bank's images and score it on the kNN queries (a quick probe, not the full protocol)")
    # runtime
    seed: int = _spec(0, "random seed", low=0, high=2**32 - 1)
    device: str = _spec("auto", "auto | cpu | cuda | cuda:N")
    precision: str = _spec("auto", "auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16", choices=PRECISIONS)
    channels_last: bool = _spec(True, "channels_last memory format for images and weights")
    compile: bool = _spec(False, "torch.compile the networks")

    def __post_init__(self):
        self.validate()

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = cls.fields()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], known)}; allowed fields: "
                f"{', '.join(known)}"
            )
        coerced = {name: coerce(name, value, source) for name, value in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name, f in self.fields().items():
            value = coerce(name, getattr(self, name), "config")
            setattr(self, name, value)
            check_range(name, value, "config")
        if not (self.dataset in FIXED_DATASETS or self.dataset.startswith("imagefolder:")):
            raise ConfigError(
                f"config: dataset {self.dataset!r} is unknown{did_you_mean(self.dataset, FIXED_DATASETS)}; allowed: "
                f"{', '.join(FIXED_DATASETS)} or imagefolder:<path>"
            )
        if self.dataset == "imagefolder:":
            raise ConfigError("config: dataset 'imagefolder:' names no folder; write imagefolder:<path>")
        try:
            names = [*aug_policies.SHIPPED, *aug_policies.user_policies(self.policies)]
            if self.policy not in names:
                raise ConfigError(f"config: augmentation policy {self.policy!r} is unknown"
                                  f"{did_you_mean(self.policy, names)}; allowed: {', '.join(names)}")
            aug_policies.definition(self.policy, self.policies, self.policy_params)
        except aug_policies.PolicyError as err:
            raise ConfigError(f"config: {err}") from None
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"config: device {self.device!r} is unknown; allowed: auto, cpu, cuda, cuda:N")


def coerce(name: str, value: Any, source: str) -> Any:
    """Return value converted to the field's type, or raise ConfigError naming the field."""
    f = TrainConfig.fields()[name]
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalars, as Ray Tune and Optuna hand them out
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{source}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind in (int, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {name} must be a finite number, got {value!r}")
    if kind is int:
        if int(value) != value:
            raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
    return value


def check_range(name: str, value: Any, source: str) -> None:
    """Raise ConfigError if value is outside the field's declared range or choices."""
    meta = TrainConfig.fields()[name].metadata
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{source}: {name} is {value!r}{did_you_mean(value, meta['choices'])}; allowed: "
                          f"{', '.join(meta['choices'])}")
    low, high = meta["low"], meta["high"]
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        raise ConfigError(f"{source}: {name} is {value!r}; allowed: {describe_range(name)}")
    if high is not None and (value > high or (meta["high_open"] and value == high)):
        raise ConfigError(f"{source}: {name} is {value!r}; allowed: {describe_range(name)}")


def describe_range(name: str) -> str:
    meta = TrainConfig.fields()[name].metadata
    if meta["choices"] is not None:
        return ", ".join(meta["choices"])
    low, high = meta["low"], meta["high"]
    left = "(" if meta["low_open"] else "["
    right = ")" if meta["high_open"] else "]"
    if low is not None and high is not None:
        return f"{left}{low}, {high}{right}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low}"
    if high is not None:
        return f"{'<' if meta['high_open'] else '<='} {high}"
    return "any value"
