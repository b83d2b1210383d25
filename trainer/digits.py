"""`digits`: scikit-learn's 1,797 real 8x8 handwritten digits (10 classes), and their one fixed
train/val/test split, which `digits_canvas` (trainer/generated.py) shares.

The split is images.three_way_split's 70/15/15 (stratified, seed 0): 1,259 training images, 269
val and 269 test. Until then digits had one held-out 20% (359 images) that served as both val
and test, so a final number was measured on the images that had selected it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.images import ImageData, three_way_split

DIGIT_CLASSES = [str(i) for i in range(10)]


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images float64 (1797, 8, 8) in [0, 1], labels int64 (1797,)), scikit-learn's order."""
    from sklearn.datasets import load_digits  # scikit-learn: heavy, and only for digits

    bunch = load_digits()
    return bunch.images / 16.0, np.asarray(bunch.target, dtype=np.int64)


def digits_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Sorted indices {"train", "val", "test"} into sklearn_digits(): pairwise disjoint, fixed."""
    return three_way_split(labels)


def digit_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit upscaled to image_size (bilinear), 3 channels: (uint8 (1797, 3, s, s), int64 labels)."""
    images, labels = sklearn_digits()
    x = F.interpolate(torch.from_numpy(images).float().unsqueeze(1), size=(image_size, image_size),
                      mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return x, torch.from_numpy(labels)


def load_digits(image_size: int, eval_split: str = "val") -> ImageData:
    """The training part and val or test, at image_size pixels."""
    x, labels = digit_images(image_size)
    split = {k: torch.from_numpy(v) for k, v in digits_split(labels.numpy()).items()}
    train, held = split["train"], split[eval_split]
    return ImageData(x[train], labels[train], x[held], labels[held], list(DIGIT_CLASSES))
