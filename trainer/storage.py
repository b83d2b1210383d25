"""Reading torch files safely: tensors and plain values only, so a crafted file cannot run code."""
from __future__ import annotations

import os
import pickle

import torch


def load_plain(path: str | os.PathLike, error: type[Exception], what: str, mmap: bool = False):
    """torch.load(path, weights_only=True) on the CPU; a file that cannot be read as one raises
    error with one sentence naming the file and saying it is not `what`. With mmap the tensors are
    mapped from the file, read-only pages the processes of a node share, instead of read into memory."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as err:
        raise error(f"{path} cannot be read ({err.strerror or err})") from None
    except pickle.UnpicklingError:
        raise error(f"{path} is not {what} (it is corrupt, or holds objects other than tensors and plain "
                    "values, which are never loaded)") from None
    except Exception:  # a truncated or damaged archive: RuntimeError, EOFError, ...
        raise error(f"{path} is not {what} (it is truncated or corrupt)") from None
