"""Images as the trainer holds them: uint8 tensors in a training split and a labelled evaluation
split (ImageData), the fixed stratified splits every trial shares, and image files decoded."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

VAL_FRACTION = 0.1  # val, carved from the training images of a dataset that has a test split
TEST_FRACTION = 0.1  # test, carved from train/ of a tree that has a val/ folder but no test/
# digits and trees without split folders: val and test both carved, see three_way_split
THREE_WAY_FRACTIONS = {"val": 0.15, "test": 0.15}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
# the formats PIL may read a user's file as (those of the suffixes; JPEG's reader also reads MPO):
# no other reader is ever tried, e.g. EPS's, which runs Ghostscript
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP")
ALLOWED_IMAGES = "JPEG, PNG, BMP, PPM/PGM, TIFF or WebP files of 1-, 8- or 16-bit pixels"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # mode I: PIL's 16-bit PGM, 0..65535


class DataError(ValueError):
    """A dataset cannot be loaded; the message names the file or folder."""


@dataclass
class ImageData:
    train_images: torch.Tensor  # uint8 (N, 3, H, W)
    train_labels: torch.Tensor  # int64 (N,), -1 for unlabelled images
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    classes: list[str]

    def to(self, device) -> "ImageData":
        return ImageData(
            self.train_images.to(device), self.train_labels.to(device),
            self.eval_images.to(device), self.eval_labels.to(device), self.classes,
        )


def stratified_split(labels: np.ndarray, eval_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, eval); fixed seed so every trial is evaluated on the same images."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_eval = max(1, int(round(len(idx) * eval_fraction)))
        held.append(idx[:n_eval])
        train.append(idx[n_eval:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def three_way_split(labels: np.ndarray, fractions: dict[str, float] = THREE_WAY_FRACTIONS,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted indices {"train", "val", "test"} of a fixed (seed), stratified split of a dataset that
    has no split of its own; val (what a search selects on) and test (what final numbers are
    measured on) are never the same images. Within each label, a permutation gives its first
    round(count * fractions["test"]) images to test, the next round(count * fractions["val"]) to
    val (each at least one) and the rest to train; a label with fewer than 3 images trains on all.

    Why 70/15/15: on a small dataset the size of a held-out part sets the noise of every number
    measured on it. On digits (1,797 images) 15% is 269 images a part, 27 a class: a kNN accuracy
    near 0.9 has a binomial 95% noise of +-0.036 there, against +-0.044 on 10% parts (180 images),
    while 20% parts would leave only 60% to train on. The training part is the same whichever
    part a run evaluates on."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test, n_val = (max(1, int(round(len(idx) * fractions[k]))) if len(idx) >= 3 else 0 for k in ("test", "val"))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def stratified_subset(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of `size` images drawn at random within each label (unlabelled -1 is a label
    too), each label in proportion to its count (largest remainders get the rounding); a fixed seed
    gives the same images every time."""
    y = labels.cpu().numpy()
    if size >= len(y):
        return torch.arange(len(y))
    values, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[: size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == v))[:k] for v, k in zip(values, take)]
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def held_out_indices(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held) indices: a fixed, stratified fraction of the labelled images is held out;
    unlabelled images (label -1, STL-10's) all stay in training."""
    labelled = np.flatnonzero(labels >= 0)
    _, held = stratified_split(labels[labelled], fraction)
    held = labelled[held]
    keep = np.ones(len(labels), dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), held


def hold_out(images: torch.Tensor, labels: torch.Tensor, classes: list[str], fraction: float) -> ImageData:
    """Train on all but a fixed, stratified fraction of the labelled images; evaluate on those."""
    train, held = (torch.from_numpy(i) for i in held_out_indices(labels.numpy(), fraction))
    return ImageData(images[train], labels[train], images[held], labels[held], classes)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def special_file(path: Path) -> str | None:
    """What path is when it is not a regular file (a symbolic link is followed): "a FIFO (named
    pipe)", "a socket", "a dangling symbolic link", ...; None for a regular file. Never opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    return None if stat.S_ISREG(mode) else _kind(mode)


def check_regular(path: Path) -> None:
    """DataError naming path unless it is a regular file (or a symbolic link to one); never opens it."""
    kind = special_file(path)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not an image file; allowed in an image folder: {ALLOWED_IMAGES}, "
                        "and folders")


def open_regular(path: Path) -> BinaryIO:
    """path opened for reading, or DataError naming it when it is not a regular file. A FIFO is
    never waited on: the file is looked at (os.stat) before it is opened, and opened without
    blocking, so a file swapped for a FIFO in between is refused too."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err.strerror}; allowed: {ALLOWED_IMAGES}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file; allowed in an image folder: {ALLOWED_IMAGES}, and folders")
    return os.fdopen(fd, "rb")


def _open_image(f: BinaryIO, path: Path) -> Image.Image:
    try:
        return Image.open(f, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: its contents are not an image of an allowed format; "
                        f"allowed: {ALLOWED_IMAGES}") from None


def check_header(path: Path) -> None:
    """DataError naming path unless it is a regular file whose header PIL reads as one of
    IMAGE_FORMATS (the header alone: its size and mode, no pixel is decoded)."""
    with open_regular(path) as f:
        try:
            _open_image(f, path).close()
        except DataError:
            raise
        except Exception as err:  # PIL raises many types for a bad header
            raise DataError(f"cannot read image {path}: {err}; allowed: {ALLOWED_IMAGES}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """The image's 8-bit RGB: 16-bit greys scaled (v >> 8, so 65535 is 255), palette colours looked
    up (transparency dropped), CMYK converted, alpha dropped. PIL's own convert("RGB") clips 16-bit
    values at 255; this never clips."""
    if im.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(im).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"its 32-bit pixels ({values.min()} to {values.max()}) exceed 16 bits")
        return Image.fromarray((values >> 8).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "F":
        raise ValueError("its pixels are 32-bit floating-point numbers")
    if im.mode in ("P", "PA"):  # through RGBA: a palette's transparency is then only dropped
        im = im.convert("RGBA")
    return im.convert("RGB")


def decode_files(files: list[Path], side: int) -> torch.Tensor:
    """Decode files to uint8 (N, 3, side, side): shorter side resized to side, centre crop."""
    out = np.empty((len(files), side, side, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        with open_regular(path) as f:
            try:
                with _open_image(f, path) as im:
                    im = to_rgb(im)
                    w, h = im.size
                    scale = side / min(w, h)
                    if (w, h) != (side, side):
                        im = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
                        w, h = im.size
                        left, top = (w - side) // 2, (h - side) // 2
                        im = im.crop((left, top, left + side, top + side))
                    out[i] = np.asarray(im)
            except DataError:
                raise
            except Exception as err:  # PIL raises many types for a bad file
                raise DataError(f"cannot read image {path}: {err}; allowed: {ALLOWED_IMAGES}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
