"""The BYOL core: configuration, data, augmentation, networks and the training loop."""
from .config import ConfigError, TrainConfig
from .data import DataError
from .loop import Diverged, EpochResult, Trainer

__all__ = ["ConfigError", "DataError", "Diverged", "EpochResult", "TrainConfig", "Trainer"]
