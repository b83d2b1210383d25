"""Datasets generated in code (`shapes`, `digits_canvas`): deterministic, right shapes, labels and splits."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from trainer import TrainConfig
from trainer import data as D
from trainer import generated as E

pytestmark = pytest.mark.slow  # generates whole datasets: seconds each; CI runs it

N_CLASSES = len(E.SHAPES)


@pytest.fixture(scope="module")
def val():
    return D.load("shapes", eval_split="val")


@pytest.fixture(scope="module")
def test():
    return D.load("shapes", eval_split="test")


def test_shapes_is_a_known_dataset():
    assert TrainConfig(dataset="shapes").dataset == "shapes"


def test_train_val_and_test_parts(val, test):
    n = E.TRAIN_PER_CLASS * N_CLASSES
    assert val.classes == test.classes == list(E.SHAPES) and N_CLASSES == 10
    for d in (val, test):
        assert d.train_images.dtype == torch.uint8 and d.eval_images.dtype == torch.uint8
        assert d.train_images.shape == (n, 3, 32, 32)
        assert d.train_labels.dtype == torch.int64 and d.eval_labels.dtype == torch.int64
        assert torch.bincount(d.train_labels, minlength=N_CLASSES).tolist() == [E.TRAIN_PER_CLASS] * N_CLASSES
    # both splits train on the same images; val and test are generated apart from them and each other
    assert torch.equal(val.train_images, test.train_images)
    assert torch.bincount(val.eval_labels, minlength=N_CLASSES).tolist() == [E.VAL_PER_CLASS] * N_CLASSES
    assert torch.bincount(test.eval_labels, minlength=N_CLASSES).tolist() == [E.TEST_PER_CLASS] * N_CLASSES
    train = {bytes(img.numpy()) for img in val.train_images}
    assert not any(bytes(img.numpy()) in train for img in val.eval_images)
    assert not any(bytes(img.numpy()) in train for img in test.eval_images)
    assert not torch.equal(val.eval_images, test.eval_images)


def test_other_image_size():
    d = D.load("shapes", image_size=16, eval_split="test")
    assert d.train_images.shape[1:] == d.eval_images.shape[1:] == (3, 16, 16)


def test_generation_is_deterministic():
    a, la = E.generate(3, 32, seed=0)
    b, lb = E.generate(3, 32, seed=0)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, E.generate(3, 32, seed=1)[0])
    # pinned: the same bytes on every machine (numpy's PCG64 stream and float64 maths are portable)
    assert hashlib.sha256(a.tobytes()).hexdigest()[:16] == PINNED_SHA


def test_other_size_and_pictures_are_two_coloured():
    images, labels = E.generate(2, 16, seed=0)
    assert images.shape == (2 * N_CLASSES, 16, 16, 3) and images.dtype == np.uint8
    assert labels.tolist() == list(range(N_CLASSES)) * 2
    for img in images:  # a shape on a background: two dominant colours, anti-aliased edges between
        colours, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
        assert counts.max() < img.shape[0] * img.shape[1] * 0.97  # the shape covers some of the image
        assert np.sort(counts)[-2:].sum() > 0.6 * img.shape[0] * img.shape[1]


def test_colour_variants():
    fixed, _ = E.generate(1, 16, seed=0)
    assert set(np.unique(fixed)) >= {26, 230}  # 0.1 and 0.9 grey
    rgb, _ = E.generate(1, 16, seed=0, colours="rgb")
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])
    gray, _ = E.generate(1, 16, seed=0, colours="gray")
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    with pytest.raises(ValueError, match="colours"):
        E.generate(1, 16, seed=0, colours="pink")


def test_each_shape_draws_something_and_shapes_differ():
    u, v = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64))
    masks = [E._unit_mask(s, u, v) for s in E.SHAPES]
    assert all(0.05 < m.mean() < 0.8 for m in masks)
    for i in range(N_CLASSES):
        for j in range(i + 1, N_CLASSES):
            assert (masks[i] != masks[j]).mean() > 0.03, (E.SHAPES[i], E.SHAPES[j])


PINNED_SHA = "9426c4c31ecd605f"


# -- digits_canvas -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def canvas_val():
    return D.load("digits_canvas", eval_split="val")


def test_digits_canvas_parts(canvas_val):
    test = D.load("digits_canvas", eval_split="test")
    for d, split in ((canvas_val, "val"), (test, "test")):
        digits = D.load("digits", eval_split=split)  # the same 70/15/15 split of scikit-learn's digits
        assert d.classes == [str(i) for i in range(10)]
        assert d.train_images.dtype == torch.uint8 and d.train_images.shape[1:] == (3, 32, 32)
        assert d.eval_images.shape[1:] == (3, 32, 32)
        assert len(d.train_images) == len(digits.train_images) * E.CANVAS_COPIES
        assert len(d.eval_images) == len(digits.eval_images) * E.CANVAS_COPIES
        assert torch.equal(d.train_labels, digits.train_labels.repeat_interleave(E.CANVAS_COPIES))
        assert torch.equal(d.eval_labels, digits.eval_labels.repeat_interleave(E.CANVAS_COPIES))
        x = d.train_images
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey
    assert torch.equal(canvas_val.train_images, test.train_images)
    assert torch.equal(torch.bincount(canvas_val.eval_labels), torch.bincount(test.eval_labels))  # as many a class
    assert not torch.equal(canvas_val.eval_labels, test.eval_labels)  # other digits (tests/trainer/test_splits.py)
    again = D.load("digits_canvas", eval_split="val")
    assert torch.equal(again.train_images, canvas_val.train_images) and torch.equal(again.eval_images, canvas_val.eval_images)


def test_place_digits_keeps_the_digit_inside_and_varies_its_place():
    one = np.zeros((1, 8, 8))
    one[:, 1:7, 3:5] = 1.0  # a bar
    placed = E.place_digits(one, 32, copies=20, seed=0)
    assert placed.shape == (20, 32, 32) and placed.dtype == np.uint8
    assert (placed[:, 0, :] == 0).all() and (placed[:, -1, :] == 0).all()  # nothing touches the border rows
    centres = [np.argwhere(p > 128).mean(0) for p in placed]
    assert np.ptp(np.array(centres), axis=0).min() > 2  # moved by more than 2 px in both directions
