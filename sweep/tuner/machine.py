"""This machine's CPUs and GPUs, counted without starting or importing Ray: a local sweep that asks
for more than the machine has is refused before anything is made on disk."""
from __future__ import annotations

import os
import sys

from sweep.errors import SweepError


def local_gpu_count() -> int:
    """The GPUs a local Ray would find here, counted without starting Ray."""
    try:
        import torch  # heavy, and only to count GPUs

        return torch.cuda.device_count()
    except Exception:  # a torch without CUDA support, or a broken driver: no GPU Ray could use either
        return 0


def check_local_resources(options) -> None:
    """A local sweep's --cpus-per-trial and --gpus-per-trial against this machine, before anything
    is made on disk and before Ray starts; a cluster (--address, or a Ray already started in this
    process) is checked against its own resources once connected."""
    ray = sys.modules.get("ray")
    if options.address or (ray is not None and ray.is_initialized()):
        return
    if options.gpus_per_trial:
        gpus = local_gpu_count()
        if not gpus:
            raise SweepError(f"--gpus-per-trial is {options.gpus_per_trial:g} but this machine has no GPU; "
                             "leave it at 0 here, or give --address of a Ray cluster with GPUs")
        if options.gpus_per_trial > gpus:
            raise SweepError(f"--gpus-per-trial is {options.gpus_per_trial:g} but this machine has "
                             f"{gpus} GPU{'s' if gpus > 1 else ''}; allowed: a number up to {gpus}")
    cpus = os.cpu_count() or 1
    if options.cpus_per_trial is not None and options.cpus_per_trial > cpus:
        raise SweepError(f"--cpus-per-trial is {options.cpus_per_trial:g} but this machine has {cpus} CPU"
                         f"{'s' if cpus > 1 else ''}; allowed: a number up to {cpus}")
