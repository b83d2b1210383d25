"""A trainer's checkpoint on disk: written atomically, read with weights_only (a crafted pickle runs
nothing), its layout checked, and the random states that make a resumed run exact."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .storage import load_plain

CHECKPOINT_KEYS = ("config", "device_type", "model", "optimizer", "epoch", "step", "rng")
RNG_KEYS = ("generator", "torch", "cuda", "python", "numpy")


def write_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's state; a file that is not one raises ConfigError naming it."""
    state = load_plain(path, ConfigError, "a byol-sweep checkpoint")
    problem = checkpoint_problem(state)
    if problem:
        raise ConfigError(f"{path} is not a byol-sweep checkpoint ({problem})")
    return state


def rng_state(gen: torch.Generator) -> dict:
    """Every random state a training step reads: the trainer's generator, torch's (CPU and CUDA),
    python's and numpy's, as tensors and plain values (weights_only reads those)."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "generator": gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)],
    }


def restore_rng(rng: dict, gen: torch.Generator) -> None:
    gen.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal.tolist()), gauss_next))
    name, keys, pos, has_gauss, cached_gaussian = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))


def checkpoint_problem(state) -> str | None:
    """What makes state not a checkpoint's layout, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        return f"keys missing: {', '.join(missing)}"
    if not isinstance(state["rng"], dict) or any(k not in state["rng"] for k in RNG_KEYS):
        return f"its rng entry lacks some of {', '.join(RNG_KEYS)}"
    if not isinstance(state["config"], dict):
        return "its config entry is not a dict"
    if not all(isinstance(state[k], int) for k in ("epoch", "step")):
        return "its epoch and step are not integers"
    return None
