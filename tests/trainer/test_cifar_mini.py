"""`cifar10_mini`: the CIFAR-10 subset shipped inside the package (works offline, no download)."""
from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch

from trainer import TrainConfig
from trainer import data as D
from trainer import generated as E


@pytest.fixture(scope="module")
def val():
    return D.load("cifar10_mini", image_size=16, eval_split="val")


def test_cifar10_mini_is_a_known_dataset_and_ships_with_the_package():
    assert TrainConfig(dataset="cifar10_mini").dataset == "cifar10_mini"
    assert resources.files("trainer").joinpath(E.CIFAR_MINI_FILE).is_file()


def test_parts_shapes_labels_and_classes(val):
    test = D.load("cifar10_mini", image_size=16, eval_split="test")
    per = E.CIFAR_MINI_PER_CLASS
    assert val.classes == test.classes == list(E.CIFAR10_CLASSES)
    assert val.train_images.shape == (10 * per["train"], 3, 16, 16) and val.train_images.dtype == torch.uint8
    assert val.eval_images.shape == (10 * per["val"], 3, 16, 16)
    assert test.eval_images.shape == (10 * per["test"], 3, 16, 16)
    assert torch.equal(val.train_images, test.train_images)
    for labels, n in ((val.train_labels, per["train"]), (val.eval_labels, per["val"]), (test.eval_labels, per["test"])):
        assert labels.dtype == torch.int64 and torch.bincount(labels, minlength=10).tolist() == [n] * 10
    # val and test are other images than the training ones (none equal to any training image)
    train = {hashlib.sha1(x.numpy().tobytes()).digest() for x in val.train_images}
    for held in (val.eval_images, test.eval_images):
        assert not any(hashlib.sha1(x.numpy().tobytes()).digest() in train for x in held)


def test_other_image_sizes_are_resized(val):
    big = D.load("cifar10_mini", image_size=32, eval_split="val")
    assert big.train_images.shape == (len(val.train_images), 3, 32, 32) and big.train_images.dtype == torch.uint8
    assert torch.equal(big.train_labels, val.train_labels)
    # natural images: not constant, every channel used
    assert val.train_images.float().std(dim=(0, 2, 3)).min() > 20


def test_the_shipped_file_is_the_one_documented():
    with resources.files("trainer").joinpath(E.CIFAR_MINI_FILE).open("rb") as f, np.load(f) as z:
        assert sorted(z.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
        assert z["train_images"].shape == (5000, 16, 16, 3) and z["train_images"].dtype == np.uint8
        # the test split is CIFAR-10's whole test split: 10,000 queries, binomial noise about +-0.01
        assert z["val_images"].shape == (1000, 16, 16, 3) and z["test_images"].shape == (10000, 16, 16, 3)
