"""Datasets as uint8 tensors: a training split and a labelled evaluation split.

`digits` (scikit-learn's handwritten digits, the embedded default: trainer/digits.py), `cifar10`,
`cifar100`, `stl10` (torchvision, from a local root, downloaded only when allowed) and
`imagefolder:<path>` (any ImageFolder tree, decoded once and cached).

The evaluation split is `val` (what a sweep selects on) or `test` (for final numbers), never the
same images. A dataset with a test split of its own (cifar10, cifar100, stl10, a tree with a
test/ folder) evaluates on it; its val is a fixed, stratified 10% of the labelled training images,
held out of training (or a tree's val/ folder). digits and a tree without split folders are split
70/15/15 into train, val and test (images.three_way_split); a tree with val/ but no test/ has a
fixed 10% of train/ as its test split, never trained on.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from trainer.config import EVAL_SPLITS, FIXED_DATASETS
from trainer.digits import load_digits
from trainer.generated import load_cifar10_mini, load_digits_canvas, load_shapes
from trainer.images import (
    IMAGE_SUFFIXES,
    TEST_FRACTION,
    VAL_FRACTION,
    DataError,
    ImageData,
    check_header,
    check_regular,
    decode_files,
    held_out_indices,
    hold_out,
    stratified_subset,
    three_way_split,
)
from trainer.storage import load_plain

HEADER_SAMPLE = 1000  # image headers check_dataset reads at most (besides each class folder's first)

__all__ = ["DataError", "ImageData", "check_dataset", "hold_out", "load", "load_imagefolder", "stratified_subset",
           "tree_split"]


def load(dataset: str, *, data_root: str = "~/.cache/byol-sweep/data", download: bool = False,
         cache_dir: str = "~/.cache/byol-sweep/cache", image_size: int = 32, eval_split: str = "val") -> ImageData:
    if eval_split not in EVAL_SPLITS:
        raise DataError(f"eval split {eval_split!r} is unknown; allowed: {', '.join(EVAL_SPLITS)}")
    if dataset == "digits":
        return load_digits(image_size, eval_split)
    if dataset == "shapes":  # generated in code: trainer/generated.py
        return load_shapes(image_size, eval_split)
    if dataset == "digits_canvas":  # generated in code: trainer/generated.py
        return load_digits_canvas(image_size, eval_split)
    if dataset == "cifar10_mini":  # a CIFAR-10 subset shipped inside the package: trainer/generated.py
        return load_cifar10_mini(image_size, eval_split)
    if dataset in ("cifar10", "cifar100", "stl10"):
        return load_torchvision(dataset, Path(data_root).expanduser(), download, eval_split,
                                Path(cache_dir).expanduser())
    if dataset.startswith("imagefolder:"):
        return load_imagefolder(Path(dataset[len("imagefolder:"):]).expanduser(), Path(cache_dir).expanduser(),
                                image_size, eval_split)
    raise DataError(f"dataset {dataset!r} is unknown; allowed: {', '.join(FIXED_DATASETS)}, imagefolder:<path>")


def _from_torchvision(ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.asarray(ds.data)
    if data.ndim == 4 and data.shape[-1] == 3:  # CIFAR: NHWC
        data = data.transpose(0, 3, 1, 2)
    labels = np.asarray(getattr(ds, "targets", getattr(ds, "labels", None)), dtype=np.int64)
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels)


def load_torchvision(name: str, root: Path, download: bool, eval_split: str = "val",
                     cache_dir: Path | None = None) -> ImageData:
    """A torchvision dataset, read once per node: its decoded arrays are cached in cache_dir as one
    uint8 file that every later trial maps read-only instead of reading the pickles again."""
    if cache_dir is not None and root.is_dir():
        key = _files_key(sorted(p for p in root.rglob("*") if p.is_file()), f"{name}|{eval_split}")
        return _cached_dataset(cache_dir / f"{name}-{eval_split}-{key}.pt",
                               lambda: load_torchvision(name, root, download, eval_split))
    import torchvision.datasets as tvd  # heavy, and only for torchvision's datasets

    try:
        if name == "stl10":
            train = tvd.STL10(str(root), split="train+unlabeled", download=download)
            test = tvd.STL10(str(root), split="test", download=download)
            classes = list(train.classes)
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
            classes = list(train.classes)
    except RuntimeError as err:
        hint = "" if download else " (pass download=true / --download to fetch it)"
        raise DataError(f"dataset {name} was not found under {root}{hint}: {err}") from None
    (xt, yt), (xe, ye) = _from_torchvision(train), _from_torchvision(test)
    if eval_split == "test":
        return ImageData(xt, yt, xe, ye, classes)
    return hold_out(xt, yt, classes, VAL_FRACTION)


def _files_key(files: list[Path], extra: str) -> str:
    """A short key that changes when any file's path, size or modification time does."""
    key = hashlib.sha256(extra.encode())
    for f in files:
        st = f.stat()
        key.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return key.hexdigest()[:20]


def _write_once(path: Path, build) -> None:
    """Write build()'s value to path unless it is there; one process of a node builds it while
    the others wait on the lock, then find it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(build(), tmp)
            os.replace(tmp, path)


def _cached_dataset(path: Path, build) -> ImageData:
    def arrays():
        d = build()
        return {"train_images": d.train_images, "train_labels": d.train_labels, "eval_images": d.eval_images,
                "eval_labels": d.eval_labels, "classes": list(d.classes)}

    _write_once(path, arrays)
    saved = load_plain(path, DataError, "a byol-sweep dataset cache", mmap=True)
    try:
        return ImageData(saved["train_images"], saved["train_labels"], saved["eval_images"], saved["eval_labels"],
                         [str(c) for c in saved["classes"]])
    except (KeyError, TypeError):
        raise DataError(f"{path} is not a byol-sweep dataset cache; delete it to read the dataset again") from None


def _classes(root: Path) -> list[str]:
    """The class folders of a tree, at least two (one class teaches a kNN monitor nothing)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"image folder {root} has no class subfolders (expected {root}/<class>/<image>)")
    if len(classes) < 2:
        raise DataError(f"image folder {root} has one class folder ({classes[0]}); at least 2 classes are needed "
                        "(the kNN monitor and the linear probe classify)")
    return classes


def image_files(folder: Path) -> list[Path]:
    """The image files under folder, sorted: every regular file whose name ends in one of
    IMAGE_SUFFIXES, in folder or any folder below it (folders reached through symbolic links are not
    walked, as Path.rglob does not). A folder named like an image is a folder; anything else named
    like an image that is not a regular file (a FIFO, socket, device file, dangling symbolic link)
    raises DataError naming it. Nothing is opened: the directory entries and os.stat say it all."""
    found, folders = [], [folder]
    while folders:
        current = folders.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as err:
            raise DataError(f"image folder {current} cannot be listed: {err.strerror}") from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and not entry.is_dir():
                if not entry.is_file():
                    check_regular(Path(entry.path))
                found.append(Path(entry.path))
    return sorted(found)


def _header_sample(per_class: list[list[Path]]) -> list[Path]:
    """Every file when there are at most HEADER_SAMPLE; else each class folder's first file and
    HEADER_SAMPLE files evenly spaced over all of them (a fixed choice: the same files every time)."""
    files = [f for class_files in per_class for f in class_files]
    if len(files) <= HEADER_SAMPLE:
        return files
    spaced = np.unique(np.linspace(0, len(files) - 1, HEADER_SAMPLE).round().astype(np.int64))
    return list(dict.fromkeys([*(c[0] for c in per_class), *(files[i] for i in spaced)]))


def check_dataset(dataset: str) -> None:
    """The checks of a dataset on a sweep's driver, before Ray starts; nothing is decoded. An
    imagefolder path exists, is a folder, and has at least two class folders that each hold an image file; no
    FIFO, socket, device file or dangling link is named like an image (image_files; none is opened);
    and the headers of the image files are read (check_header): all of them in a tree of at most
    HEADER_SAMPLE files, else each class folder's first file and HEADER_SAMPLE files evenly spaced
    over the sorted list. One header that is not an allowed image fails the check, naming the file;
    a bad file the sample does not reach, or one whose pixels are cut short behind a good header, is
    named by the loader when a trial decodes it."""
    if not dataset.startswith("imagefolder:"):
        return
    root = Path(dataset[len("imagefolder:"):]).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"image folder {root} is not a directory")
    splits = [root / d for d in ("val", "test") if (root / d).is_dir()]
    if (root / "train").is_dir() and splits:  # as load_imagefolder reads a tree
        trees = [root / "train", *splits]
    elif [d.name for d in root.iterdir() if d.is_dir()] == ["train"]:
        trees = [root / "train"]
    else:
        trees = [root]
    per_class = [_class_images(tree / c) for tree in trees for c in _classes(tree)]
    for path in _header_sample(per_class):
        check_header(path)


def _class_images(folder: Path) -> list[Path]:
    images = image_files(folder)
    if not images:
        raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _list_tree(root: Path) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    classes = _classes(root)
    files, labels = [], []
    for i, c in enumerate(classes):
        images = _class_images(root / c)
        files += images
        labels += [i] * len(images)
    return files, labels, classes


def _cached_decode(files: list[Path], side: int, cache_dir: Path) -> torch.Tensor:
    """The files decoded once per node into a uint8 cache file, which every trial maps read-only."""
    path = cache_dir / f"imagefolder-{_files_key(files, str(side))}.pt"
    _write_once(path, lambda: decode_files(files, side))
    images = load_plain(path, DataError, "a byol-sweep image cache", mmap=True)
    expected = (len(files), 3, side, side)
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape) == expected):
        raise DataError(f"{path} is not a byol-sweep image cache of these {len(files)} images "
                        f"(expected a uint8 tensor of shape {expected}); delete it to decode them again")
    return images


def _pick(files: list[Path], labels: list[int], idx: np.ndarray) -> tuple[list[Path], list[int]]:
    return [files[i] for i in idx], [labels[i] for i in idx]


def tree_split(root: Path, eval_split: str = "val") -> tuple[list[Path], list[int], list[Path], list[int], list[str]]:
    """(training files, their labels, evaluation files, their labels, classes) of an ImageFolder
    tree, as load_imagefolder reads it."""
    splits = {d: root / d for d in ("val", "test") if (root / d).is_dir()}
    if not ((root / "train").is_dir() and splits):
        if root.is_dir() and [d.name for d in root.iterdir() if d.is_dir()] == ["train"]:
            root = root / "train"  # a train split alone: its subfolders are the classes
        files, labels, classes = _list_tree(root)
        parts = three_way_split(np.asarray(labels, dtype=np.int64))
        return *_pick(files, labels, parts["train"]), *_pick(files, labels, parts[eval_split]), classes
    files, labels, classes = _list_tree(root / "train")
    listed = {name: _list_tree(folder) for name, folder in splits.items()}
    for name, (_, _, split_classes) in listed.items():
        if split_classes != classes:
            raise DataError(f"{splits[name]} has classes {split_classes}, but {root / 'train'} has {classes}")
    if eval_split in listed and "test" in listed:
        return files, labels, *listed[eval_split][:2], classes
    y = np.asarray(labels, dtype=np.int64)
    if "test" in listed:  # val, without a val/ folder
        train, held = held_out_indices(y, VAL_FRACTION)
        return *_pick(files, labels, train), *_pick(files, labels, held), classes
    train, test = held_out_indices(y, TEST_FRACTION)  # test, without a test/ folder: never trained on
    held = listed["val"][:2] if eval_split == "val" else _pick(files, labels, test)
    return *_pick(files, labels, train), *held, classes


def load_imagefolder(root: Path, cache_dir: Path, image_size: int, eval_split: str = "val") -> ImageData:
    """An ImageFolder tree. With a train/ folder and a val/ or test/ folder beside it, those folders
    are the splits; a split without its folder is a fixed, stratified 10% of train/: val is held
    out of training only when it is evaluated on (as for cifar10), test is never trained on.
    Otherwise (a train/ folder alone, or the class folders themselves) a fixed, stratified
    70/15/15 train/val/test split (images.three_way_split). Images are stored at
    max(image_size, 32) pixels; the training and evaluation files are decoded (and mapped) apart,
    so no trial copies either part."""
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    side = max(image_size, 32)
    train_files, train_labels, eval_files, eval_labels, classes = tree_split(root, eval_split)
    return ImageData(_cached_decode(train_files, side, cache_dir), torch.tensor(train_labels, dtype=torch.int64),
                     _cached_decode(eval_files, side, cache_dir), torch.tensor(eval_labels, dtype=torch.int64), classes)
