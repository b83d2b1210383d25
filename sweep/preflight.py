"""What a sweep must pass on the driver before anything is made on disk or Ray starts, shared by `run`
and `validate` (and, for its data, `train`): its size, its name, every dataset it reads (present and
readable, with a cache folder it can write), the device it asks for against this machine's GPUs, the
resources per trial, the search's seed, and where its results go (a simulation, `run --simulate`,
reads no data and reserves its own resources: only its size, name, seed and storage). Each refusal is
one sentence naming the space file and its key, or the flag."""
from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from sweep.errors import SweepError
from sweep.space.limits import check_size
from sweep.space.registry import fail
from sweep.space.spec import SweepSpec
from sweep.state import check_name, is_uri
from sweep.tuner.machine import check_local_resources, local_gpu_count
from trainer.config import TrainConfig

# what Ray Tune's storage reaches (through pyarrow's filesystems), by URI scheme
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
MAX_SEED = 2**32 - 1  # what Optuna's and NumPy's generators take
TORCHVISION = ("cifar10", "cifar100", "stl10")

Values = Callable[[str], list[tuple[str, Any]]]  # a field -> (the key that gives it, a value) for each value


def preflight(spec: SweepSpec, options) -> str:
    """Every check, in order; returns the sweep's name. options: a SweepOptions (sweep/runner.py) or
    `validate`'s arguments, which carry the same names."""
    check_size(spec, options.allow_large)
    name = _sweep_name(spec, options.name)
    check_storage(options.storage)
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or not 0 <= options.seed <= MAX_SEED:
        raise SweepError(f"--seed is {options.seed}; allowed: an integer from 0 to {MAX_SEED:,}")
    if getattr(options, "simulate_epoch_s", None):  # the stand-in: no data read, no device, its own resources
        return name
    check_local_resources(options)
    _check_devices(spec, options)
    check_data(lambda field: space_values(spec, field), spec.source)
    return name


def _sweep_name(spec: SweepSpec, given: str | None) -> str:
    if given:
        check_name(given, "--name")
        return given
    check_name(spec.name, f"{spec.source}: name")
    name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name, f"{spec.source}: name (with the time it starts, its default --name)")
    return name


def check_storage(storage: str) -> None:
    """--storage: a folder that is or can be made, or a URI of a filesystem Ray Tune can write to."""
    if is_uri(storage):
        scheme = urlsplit(storage).scheme
        if scheme not in STORAGE_SCHEMES:
            raise SweepError(f"--storage {storage}: {scheme!r} is not a filesystem Ray Tune can store to; allowed: "
                             f"a folder, or a URI of {', '.join(s + '://' for s in STORAGE_SCHEMES)}")
        if scheme != "file":
            return  # a remote store is reached once the sweep starts
        storage = urlsplit(storage).path
    problem = _unwritable(storage)
    if problem:
        raise SweepError(f"--storage {storage}: {problem}; give a writable folder or a URI")


def _unwritable(folder: str) -> str | None:
    """What stops folder from being made and written to, or None; nothing is left behind."""
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as err:
        return f"cannot create {path} ({err.strerror})"
    return None


def space_values(spec: SweepSpec, field: str) -> list[tuple[str, Any]]:
    """(key, value) of every value a field takes in the sweep: the grid's, a choice's, or the base's."""
    if field in spec.grid:
        return [(f"grid.{field}", v) for v in spec.grid[field]]
    if field in spec.search:
        return [(f"search.{field}", v) for v in spec.search[field].values]
    return [(f"base.{field}" if field in spec.base else field,
             spec.base.get(field, TrainConfig.fields()[field].default))]


def config_values(config: TrainConfig) -> Values:
    return lambda field: [(field, getattr(config, field))]


def _check_devices(spec: SweepSpec, options) -> None:
    """A CUDA device against this machine's GPUs (a cluster's, with --address, are its own)."""
    wanted = [(key, str(v)) for key, v in space_values(spec, "device") if str(v).startswith("cuda")]
    if not wanted or options.address:
        return
    gpus = local_gpu_count()
    for key, device in wanted:
        if options.gpus_per_trial == 0:
            raise fail(spec.source, key, f"device {device!r} needs a GPU in each trial, but --gpus-per-trial is 0; "
                                         "allowed with it: auto or cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= gpus:
            has = f"has {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "has no GPU"
            raise fail(spec.source, key, f"device {device!r} cannot be used: this machine {has}; allowed here: "
                                         "auto or cpu" + (f", or cuda:0 to cuda:{gpus - 1}" if gpus else "")
                                         + " (or --address of a Ray cluster with GPUs)")


def check_data(values: Values, source: str) -> None:
    """Every dataset the configurations read: an image folder's tree and image headers, a torchvision
    dataset's files under data_root (unless download), and the cache folder the loaders write."""
    from trainer.data import DataError, check_dataset  # torch: `validate` of a space on built-in data never loads it

    datasets = dict.fromkeys((key, str(v)) for key, v in values("dataset"))
    for key, dataset in datasets:
        try:
            check_dataset(dataset)
        except DataError as err:
            raise fail(source, key, str(err)) from None
    torchvision = [(key, d) for key, d in datasets if d in TORCHVISION]
    for (key, dataset), (root_key, root), (_, download) in itertools.product(torchvision, values("data_root"),
                                                                             values("download")):
        missing = None if download else _torchvision_missing(dataset, Path(root).expanduser())
        if missing:
            raise fail(source, key, f"{dataset} is not under {root_key} {root} ({missing}); allowed: a data_root "
                                    "that holds it, or download: true to fetch it")
    if torchvision or any(d.startswith("imagefolder:") for _, d in datasets):
        for key, folder in values("cache_dir"):
            problem = _unwritable(folder)
            if problem:
                raise fail(source, key, f"{problem}; allowed: a folder this user can write (decoded images are "
                                        "cached there)")


def _torchvision_missing(dataset: str, root: Path) -> str | None:
    """What of a torchvision dataset's files is absent or unreadable under root, or None."""
    import torchvision.datasets as tvd  # heavy, and only for torchvision's datasets

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "stl10": tvd.STL10}[dataset]
    folder = root / cls.base_folder
    for name, _ in [*cls.train_list, *cls.test_list]:
        try:
            with open(folder / name, "rb") as file:
                file.read(1)
        except OSError as err:
            return f"{folder / name}: {err.strerror}"
    return None
