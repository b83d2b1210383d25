"""The BYOL core: configuration, data, augmentation, networks and the training loop.

The configuration imports no torch (a report or a space check need not load it); the rest loads
on first use."""
from .config import ConfigError, TrainConfig

__all__ = ["ConfigError", "DataError", "Diverged", "EpochResult", "TrainConfig", "Trainer"]


def __getattr__(name: str):
    if name == "DataError":
        from .data import DataError  # torch: loaded on first use

        return DataError
    if name in ("Diverged", "EpochResult", "Trainer"):
        from . import loop  # torch: loaded on first use

        return getattr(loop, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
