"""A trained encoder as one file, and back as a network ready for feature extraction.

The file holds only tensors and plain values ({"config": TrainConfig fields, "encoder": state
dict, "epoch", "normalisation": per-channel mean and std of the training images}), so it loads
with torch.load(weights_only=True): no code runs when a file is opened.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .config import ConfigError, TrainConfig
from .models import build_encoder
from .storage import load_plain


def encoder_file_from_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the online encoder of a trainer checkpoint (trainer.pt / checkpoint.pt) to `out`."""
    state = load_plain(checkpoint, ConfigError, "a byol-sweep checkpoint")
    try:
        weights = {k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")}
        config = dict(state["config"])
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(f"{checkpoint} is not a byol-sweep checkpoint (it has no model or config)") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    norm = state.get("normalisation") or {}
    torch.save({"config": config, "encoder": weights, "epoch": int(state.get("epoch", 0)),
                "normalisation": {k: v for k, v in norm.items() if k in ("mean", "std")}}, tmp)
    os.replace(tmp, out)
    return out


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """The encoder a file written by `byol-sweep export` (or logged as a run's `model/encoder.pt`)
    holds, in eval mode: images (N, 3, S, S) in [0, 1] to features (N, D), normalising them with
    the training images' per-channel mean and std as training did. Its TrainConfig is on `.config`."""
    saved = load_plain(path, ConfigError, "a byol-sweep encoder file")
    try:
        config = TrainConfig.from_dict(saved["config"], source=str(path))
        weights = saved["encoder"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path} is not a byol-sweep encoder file (it has no config or encoder)") from None
    encoder = build_encoder(config.backbone)
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"{path}: its weights do not fit a {config.backbone} ({str(err).splitlines()[0]})") from None
    norm = saved.get("normalisation") or {}
    if "mean" in norm and "std" in norm:
        encoder = Normalised(encoder, norm["mean"], norm["std"])
    encoder.config = config
    return encoder.eval()


class Normalised(nn.Module):
    """An encoder that takes images in [0, 1] and normalises them as training did."""

    def __init__(self, encoder: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", mean.float().view(1, -1, 1, 1))
        self.register_buffer("std", std.float().view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder((images - self.mean) / self.std)
