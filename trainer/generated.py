"""Datasets generated in code (no download, the same images on every machine), and `cifar10_mini`,
a CIFAR-10 subset at 16 px shipped inside the package (trainer/cifar10_mini16.npz; see
load_cifar10_mini).

`shapes`: one filled shape on a plain background. The label is the shape's identity, one of
SHAPES (10 classes, equally many of each, interleaved). The nuisances, drawn at random per image:
the centre (anywhere that keeps most of the shape inside), the size (radius 22-38% of the side),
a rotation of +-20 degrees and a mirror image. Colours: light grey 0.9 on dark grey 0.1 (the
default, `fixed`); `rgb` (independent random shape and background colours, luminances at least
0.25 apart) and `gray` (their luminances) are the variants measured in docs/main-job.md, where
BYOL learned the colours, not the shapes. Drawn 4x supersampled and box-filtered (anti-aliased)
at image_size pixels, from numpy PCG64 streams with fixed seeds: training part TRAIN_PER_CLASS a
class (seed 0), val VAL_PER_CLASS a class (seed 2), test TEST_PER_CLASS a class (seed 1); val and
test are generated apart from the training images, as held-out images.

`digits_canvas`: scikit-learn's 8x8 digits (label = the digit), each drawn at a random size
(CANVAS_SCALE of the side), rotation (+-CANVAS_ROTATION degrees) and position (wholly inside) on
a black canvas of image_size pixels: each from the same part of digits' fixed 70/15/15 split
(trainer/digits.py) as in `digits`, so training, val and test images are drawn from different digits.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainer.digits import DIGIT_CLASSES, digits_split, sklearn_digits
from trainer.images import ImageData, decode_files

SHAPES = ("disc", "ring", "square", "frame", "triangle", "diamond", "plus", "cross", "star", "crescent")
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
VAL_PER_CLASS = 100
SUPERSAMPLE = 4
COLOUR_MODES = ("rgb", "gray", "fixed")


def _polygon_mask(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for the points (x, y) (any equal shapes)."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        x0, y0 = vertices[i]
        x1, y1 = vertices[(i + 1) % n]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def _regular(n: int, r: float, start: float = -math.pi / 2) -> np.ndarray:
    a = start + 2 * math.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _unit_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v), in the shape's own frame (radius 1 around the origin), is inside it."""
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 0.85
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.75
    if shape == "frame":
        m = np.maximum(abs(u), abs(v))
        return (m <= 0.8) & (m >= 0.45)
    if shape == "triangle":
        return _polygon_mask(u, v, _regular(3, 1.0))
    if shape == "diamond":
        return abs(u) / 0.7 + abs(v) <= 1.0
    if shape == "plus":
        return ((abs(u) <= 0.28) & (abs(v) <= 0.95)) | ((abs(v) <= 0.28) & (abs(u) <= 0.95))
    if shape == "cross":
        a, b = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
        return ((abs(a) <= 0.25) & (abs(b) <= 0.95)) | ((abs(b) <= 0.25) & (abs(a) <= 0.95))
    if shape == "star":
        outer, inner = _regular(5, 1.0), _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
        return _polygon_mask(u, v, np.stack([outer, inner], 1).reshape(10, 2))
    if shape == "crescent":
        return (r <= 0.9) & (np.hypot(u - 0.45, v) >= 0.7)
    raise ValueError(f"shape {shape!r} is unknown; allowed: {', '.join(SHAPES)}")


def _luminance(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def generate(per_class: int, side: int, seed: int, colours: str = "fixed") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, side, side, 3), labels int64 (N,)), N = per_class * len(SHAPES), classes interleaved.
    colours: fixed (light grey 0.9 on dark grey 0.1, the dataset), rgb (random shape and background
    colours) or gray (their luminances): see the module's docstring."""
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours {colours!r} is unknown; allowed: {', '.join(COLOUR_MODES)}")
    rng = np.random.default_rng(seed)
    hi = side * SUPERSAMPLE
    grid = (np.arange(hi) + 0.5) / hi  # pixel centres in [0, 1]
    gx, gy = np.meshgrid(grid, grid)  # gx varies along columns (x), gy along rows (y)
    n = per_class * len(SHAPES)
    labels = np.tile(np.arange(len(SHAPES), dtype=np.int64), per_class)
    images = np.empty((n, side, side, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        while True:
            fg, bg = rng.random(3), rng.random(3)
            if abs(_luminance(fg) - _luminance(bg)) >= 0.25:
                break
        if colours == "gray":
            fg, bg = np.full(3, _luminance(fg)), np.full(3, _luminance(bg))
        elif colours == "fixed":
            fg, bg = np.full(3, 0.9), np.full(3, 0.1)
        radius = rng.uniform(0.22, 0.38)
        cx, cy = rng.uniform(radius * 0.8, 1 - radius * 0.8, size=2)
        angle = math.radians(rng.uniform(-20, 20))
        mirror = -1.0 if rng.random() < 0.5 else 1.0
        dx, dy = (gx - cx) / radius, (gy - cy) / radius
        u = (math.cos(angle) * dx + math.sin(angle) * dy) * mirror
        v = -math.sin(angle) * dx + math.cos(angle) * dy
        mask = _unit_mask(SHAPES[label], u, v).astype(np.float64)
        alpha = mask.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE).mean(axis=(1, 3))[..., None]
        images[i] = np.round((alpha * fg + (1 - alpha) * bg) * 255).astype(np.uint8)
    return images, labels


def load_shapes(image_size: int, eval_split: str = "val", colours: str = "fixed"):
    """The `shapes` dataset at image_size pixels: the training part and val or test."""
    def tensors(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = generate(per_class, image_size, seed, colours)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)

    classes = list(SHAPES)
    train_images, train_labels = tensors(TRAIN_PER_CLASS, 0)
    eval_images, eval_labels = tensors(TEST_PER_CLASS, 1) if eval_split == "test" else tensors(VAL_PER_CLASS, 2)
    return ImageData(train_images, train_labels, eval_images, eval_labels, classes)


# -- digits_canvas ------------------------------------------------------------------------------
CANVAS_COPIES = 1  # each digit is placed this many times, each time with new nuisances
CANVAS_SCALE = (0.65, 0.95)  # side of the digit's 8x8 box, as a fraction of the image side
CANVAS_ROTATION = 10.0  # degrees, either way


def place_digits(digits: np.ndarray, side: int, copies: int, seed: int,
                 scale: tuple[float, float] = CANVAS_SCALE, rotation: float = CANVAS_ROTATION) -> np.ndarray:
    """uint8 (len(digits) * copies, side, side): each 8x8 digit (floats in [0, 1]) drawn `copies`
    times at a random size, rotation and position (wholly inside) on a black side x side canvas,
    bilinearly; digit-major order (the copies of a digit are consecutive)."""
    rng = np.random.default_rng(seed)
    n = len(digits) * copies
    half = rng.uniform(*scale, size=n)  # half the box side in [-1, 1] units = its fraction of the side
    angle = np.radians(rng.uniform(-rotation, rotation, size=n))
    reach = half * (np.abs(np.cos(angle)) + np.abs(np.sin(angle)))  # half-extent of the rotated box
    centre = rng.uniform(-1, 1, size=(n, 2)) * np.clip(1 - reach, 0, None)[:, None]
    cos, sin = np.cos(angle) / half, np.sin(angle) / half
    theta = np.empty((n, 2, 3))
    theta[:, 0, :2] = np.stack([cos, sin], 1)
    theta[:, 1, :2] = np.stack([-sin, cos], 1)
    theta[:, :, 2] = -np.einsum("nij,nj->ni", theta[:, :, :2], centre)
    src = torch.from_numpy(np.repeat(digits, copies, axis=0)).float().unsqueeze(1)
    grid = F.affine_grid(torch.from_numpy(theta).float(), [n, 1, side, side], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def load_digits_canvas(image_size: int, eval_split: str = "val", copies: int = CANVAS_COPIES,
                       scale: tuple[float, float] = CANVAS_SCALE, rotation: float = CANVAS_ROTATION):
    """scikit-learn's digits, each drawn `copies` times at a random size, rotation and place: the
    training part from the digits `digits` trains on, val and test from its val and test digits
    (trainer/digits.py: 70/15/15, stratified, fixed), each part with its own nuisances (seeds 0,
    2 and 1)."""
    digits, labels = sklearn_digits()
    split = digits_split(labels)

    def part(idx: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(place_digits(digits[idx], image_size, copies, seed, scale, rotation))
        return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(np.repeat(labels[idx], copies))

    train_images, train_labels = part(split["train"], 0)
    eval_images, eval_labels = part(split[eval_split], 1 if eval_split == "test" else 2)
    return ImageData(train_images, train_labels, eval_images, eval_labels, list(DIGIT_CLASSES))


# -- cifar10_mini (shipped) ---------------------------------------------------------------------
CIFAR_MINI_FILE = "cifar10_mini16.npz"  # package data beside this module
CIFAR_MINI_SIDE = 16
CIFAR_MINI_PER_CLASS = {"train": 500, "val": 100, "test": 1000}  # test: all of CIFAR-10's test split
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def build_cifar10_mini(tree, out) -> None:
    """Write the `cifar10_mini` file from a CIFAR-10 ImageFolder tree (train/<class>/, test/<class>/;
    /work/shared/data/cifar10-jpeg.tar.gz unpacked): per class, the first 500 training files by
    name (train), the next 100 (val) and all 1,000 test files (test), each downscaled from 32
    to 16 pixels (bilinear, antialiased), stored as uint8 (N, 16, 16, 3) with int64 labels."""

    tree = Path(tree)
    arrays = {}
    for split, (folder, start) in {"train": ("train", 0), "val": ("train", CIFAR_MINI_PER_CLASS["train"]),
                                   "test": ("test", 0)}.items():
        n = CIFAR_MINI_PER_CLASS[split]
        files, labels = [], []
        for i, c in enumerate(CIFAR10_CLASSES):
            chosen = sorted((tree / folder / c).iterdir())[start : start + n]
            if len(chosen) != n:
                raise ValueError(f"{tree / folder / c} holds fewer than {start + n} images")
            files += chosen
            labels += [i] * n
        x = F.interpolate(decode_files(files, 32).float(), size=(CIFAR_MINI_SIDE, CIFAR_MINI_SIDE), mode="bilinear",
                          antialias=True, align_corners=False)
        arrays[f"{split}_images"] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    np.savez_compressed(out, **arrays)


def load_cifar10_mini(image_size: int, eval_split: str = "val"):
    """`cifar10_mini`: 5,000 CIFAR-10 training images (500 a class) at 16 px, shipped inside the
    package (trainer/cifar10_mini16.npz); val: 1,000 other CIFAR-10 training images (100 a class),
    test: CIFAR-10's whole test split, 10,000 images (1,000 a class), so that a test-split accuracy
    has a binomial noise of about +-0.01 (1,000 queries gave +-0.03, wider than the differences the
    main job measures). Resized (bilinear) when image_size is not 16."""
    with resources.files(__package__).joinpath(CIFAR_MINI_FILE).open("rb") as f, np.load(f) as z:
        parts = {k: torch.from_numpy(z[k].copy()) for k in z.files}

    def images(split: str) -> torch.Tensor:
        x = parts[f"{split}_images"].permute(0, 3, 1, 2).contiguous()
        if image_size != CIFAR_MINI_SIDE:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x

    return ImageData(images("train"), parts["train_labels"], images(eval_split), parts[f"{eval_split}_labels"],
                     list(CIFAR10_CLASSES))
