"""Train, val and test are never the same images, for every dataset the package loads (its registry,
trainer.config.FIXED_DATASETS) and for image-folder trees of every layout.

For each dataset: the images a val run trains on, val, the images a test run trains on, and test
are non-empty; val and test are disjoint, no run evaluates on an image it trains on, and the runs
that select on val never train on test. (A dataset with a test split of its own trains its test
runs on all of its training images, val included, as final runs do.)

Identity is exact wherever the images have one: indices into scikit-learn's digits for `digits`
and `digits_canvas`; a serial number written into every image of a tree (PNG files) and of the
torchvision formats (cifar10, cifar100, stl10, faked in tmp_path). The generated `shapes` and
the shipped `cifar10_mini` (its 16-px file is all that is kept of the source) have no identity
but their bytes, which are unique in each.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.stl10 as tv_stl10
from PIL import Image

from trainer import data as D
from trainer import digits as digits_module
from trainer import generated as G
from trainer.config import FIXED_DATASETS
from trainer.images import three_way_split

EVAL_SPLITS = ("val", "test")
CLASSES = ("cat", "dog", "owl")


def check_splits(runs: dict[str, tuple[set, set]]) -> None:
    """runs: eval_split -> (identities trained on, identities evaluated on)."""
    (train_val, val), (train_test, test) = runs["val"], runs["test"]
    for name, ids in {"train (val runs)": train_val, "val": val, "train (test runs)": train_test,
                      "test": test}.items():
        assert ids, f"{name} is empty"
    assert not val & test, f"{len(val & test)} images are both val and test"
    assert not train_val & val, f"{len(train_val & val)} val images are trained on"
    assert not train_test & test, f"{len(train_test & test)} test images are trained on"
    assert not train_val & test, f"{len(train_val & test)} test images are trained on by the runs that select"


def serial_of(images: torch.Tensor) -> list[int]:
    """The serial numbers painted by painted(): every pixel of an image holds its number."""
    flat = images.flatten(2).long()
    assert bool((flat == flat[:, :, :1]).all()), "an image is not the one painted"
    first = flat[:, :, 0]
    return (first[:, 0] + 256 * first[:, 1] + 65536 * first[:, 2]).tolist()


def painted(serial: int, side: int) -> np.ndarray:
    """uint8 (side, side, 3): a flat image whose channels spell serial (base 256)."""
    return np.broadcast_to(np.array([serial % 256, serial // 256 % 256, serial // 65536], dtype=np.uint8),
                           (side, side, 3)).copy()


# -- the registry's datasets ---------------------------------------------------------------------

def digits_runs(tmp_path, monkeypatch) -> dict[str, tuple[set, set]]:
    pool, labels = digits_module.digit_images(16)
    split = digits_module.digits_split(labels.numpy())
    runs = {}
    for eval_split in EVAL_SPLITS:
        data = D.load("digits", image_size=16, eval_split=eval_split)
        assert torch.equal(data.train_images, pool[split["train"]])
        assert torch.equal(data.eval_images, pool[split[eval_split]])
        runs[eval_split] = set(split["train"].tolist()), set(split[eval_split].tolist())
    return runs


def digits_canvas_runs(tmp_path, monkeypatch) -> dict[str, tuple[set, set]]:
    drawn: list[np.ndarray] = []
    real = G.place_digits
    monkeypatch.setattr(G, "place_digits", lambda digits, *args: drawn.append(digits) or real(digits, *args))
    images, labels = digits_module.sklearn_digits()
    split = digits_module.digits_split(labels)
    runs = {}
    for eval_split in EVAL_SPLITS:
        drawn.clear()
        data = D.load("digits_canvas", image_size=8, eval_split=eval_split)
        # the loader draws exactly these digits, in this order: training part, then evaluation part
        assert len(drawn) == 2 and np.array_equal(drawn[0], images[split["train"]])
        assert np.array_equal(drawn[1], images[split[eval_split]])
        assert len(data.train_images) == len(split["train"]) * G.CANVAS_COPIES
        runs[eval_split] = set(split["train"].tolist()), set(split[eval_split].tolist())
    return runs


def fake_cifar(root: Path, name: str, per_class: int = 4) -> None:
    """torchvision's CIFAR pickles; record i of the train file and then of the test file holds
    serial i."""
    folder, labels_key, meta, meta_key = {
        "cifar10": ("cifar-10-batches-py", "labels", "batches.meta", "label_names"),
        "cifar100": ("cifar-100-python", "fine_labels", "meta", "fine_label_names"),
    }[name]
    n_classes = 10 if name == "cifar10" else 100
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
    (root / folder).mkdir(parents=True)
    serial = 0
    for file in files:
        n = n_classes * per_class // (5 if file.startswith("data_batch") else 1)
        rows = np.stack([painted(serial + i, 32).transpose(2, 0, 1).reshape(-1) for i in range(n)])
        batch = {"data": rows, labels_key: [i % n_classes for i in range(n)]}
        (root / folder / file).write_bytes(pickle.dumps(batch))
        serial += n
    (root / folder / meta).write_bytes(pickle.dumps({meta_key: [f"class{i}" for i in range(n_classes)]}))


def fake_stl10(root: Path, per_class: int = 4, unlabelled: int = 20) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    serial = 0
    for images, labels in (("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", None), ("test_X.bin", "test_y.bin")):
        n = 10 * per_class if labels else unlabelled
        (folder / images).write_bytes(np.stack([painted(serial + i, 96).transpose(2, 0, 1) for i in range(n)]).tobytes())
        if labels:
            (folder / labels).write_bytes(np.asarray([1 + i % 10 for i in range(n)], dtype=np.uint8).tobytes())
        serial += n
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))


def torchvision_runs(name: str, tmp_path, monkeypatch) -> dict[str, tuple[set, set]]:
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # the fakes have no official md5
    monkeypatch.setattr(tv_stl10, "check_integrity", lambda *args, **kwargs: True)
    root = tmp_path / "data"
    fake_stl10(root) if name == "stl10" else fake_cifar(root, name)
    runs = {}
    for eval_split in EVAL_SPLITS:
        data = D.load(name, data_root=str(root), cache_dir=str(tmp_path / "cache"), eval_split=eval_split)
        runs[eval_split] = set(serial_of(data.train_images)), set(serial_of(data.eval_images))
    return runs


def bytes_runs(name: str, tmp_path, monkeypatch) -> dict[str, tuple[set, set]]:
    """By the images' bytes: for datasets that keep no other identity (see the module's docstring)."""
    runs = {}
    for eval_split in EVAL_SPLITS:
        data = D.load(name, image_size=8, eval_split=eval_split)
        train, held = ({bytes(img.numpy()) for img in x} for x in (data.train_images, data.eval_images))
        assert len(train) == len(data.train_images) and len(held) == len(data.eval_images), "duplicate images"
        runs[eval_split] = train, held
    return runs


RUNS = {
    "digits": digits_runs,
    "digits_canvas": digits_canvas_runs,
    "cifar10": lambda *a: torchvision_runs("cifar10", *a),
    "cifar100": lambda *a: torchvision_runs("cifar100", *a),
    "stl10": lambda *a: torchvision_runs("stl10", *a),
}


@pytest.mark.parametrize("dataset", FIXED_DATASETS)
def test_every_dataset_has_disjoint_train_val_and_test(dataset, tmp_path, monkeypatch):
    runs = RUNS[dataset](tmp_path, monkeypatch) if dataset in RUNS else bytes_runs(dataset, tmp_path, monkeypatch)
    check_splits(runs)


# -- image-folder trees --------------------------------------------------------------------------

def paint_tree(root: Path, per_class: dict[str, int]) -> dict[int, Path]:
    """Real PNG files: per_class images in each class folder of each split folder ("" = the class
    folders directly in root), each painted with its own serial number; serial -> file."""
    files = {}
    for split, n in per_class.items():
        for c in CLASSES:
            for i in range(n):
                path = root / split / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(painted(len(files), 32)).save(path)
                files[len(files)] = path
    return files


@pytest.mark.parametrize("layout", [
    {"": 10},  # no split folders
    {"train": 10},  # a train/ folder alone
    {"train": 10, "test": 3},
    {"train": 10, "val": 3},
    {"train": 10, "val": 3, "test": 3},
], ids=lambda layout: "+".join(layout) or "classes")
def test_every_tree_layout_has_disjoint_train_val_and_test(layout, tmp_path):
    root = tmp_path / "tree"
    files = paint_tree(root, layout)
    runs = {}
    for eval_split in EVAL_SPLITS:
        data = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), eval_split=eval_split)
        train, held = ([files[s] for s in serial_of(x)] for x in (data.train_images, data.eval_images))
        train_files, _, eval_files, _, classes = D.tree_split(root, eval_split)
        assert (train, held) == (train_files, eval_files)  # the files tree_split names, in its order
        assert classes == list(CLASSES)
        for part, labels in ((train, data.train_labels), (held, data.eval_labels)):
            assert [CLASSES[i] for i in labels.tolist()] == [f.parent.name for f in part]
        runs[eval_split] = set(train), set(held)
    check_splits(runs)
    for split in ("val", "test"):  # a split folder, when there is one, is that split
        if split in layout:
            assert runs[split][1] == {f for f in files.values() if f.parts[-3] == split}
    assert not {f for f in runs["val"][0] | runs["test"][0] if f.parts[-3] in ("val", "test")}


def test_tree_split_folders_keep_their_old_parts(tmp_path):
    """train/ + test/: val is a fixed 10% of train/, trained on by test runs (as for cifar10);
    train/ + val/: test is a fixed 10% of train/, never trained on."""
    root = tmp_path / "tree"
    paint_tree(root, {"train": 10, "test": 3})
    val_train, _, val, _, _ = D.tree_split(root, "val")
    test_train, _, _, _, _ = D.tree_split(root, "test")
    assert len(val) == 3 and len(val_train) == 27 and sorted(val_train + val) == sorted(test_train)
    other = tmp_path / "other"
    paint_tree(other, {"train": 10, "val": 3})
    runs = {s: D.tree_split(other, s) for s in EVAL_SPLITS}
    assert runs["val"][0] == runs["test"][0] and len(runs["val"][0]) == 27 and len(runs["test"][2]) == 3


# -- three_way_split -----------------------------------------------------------------------------

def test_three_way_split_is_stratified_fixed_and_covers_every_image():
    labels = np.repeat(np.arange(4), [100, 60, 7, 2])
    parts = three_way_split(labels)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    counts = {k: np.bincount(labels[v], minlength=4).tolist() for k, v in parts.items()}
    assert counts == {"train": [70, 42, 5, 2], "val": [15, 9, 1, 0], "test": [15, 9, 1, 0]}
    assert all(np.array_equal(v, np.sort(v)) for v in parts.values())
    again = three_way_split(labels)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["val"], three_way_split(labels, seed=1)["val"])
