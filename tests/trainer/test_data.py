"""Datasets: digits (embedded) and imagefolder trees of real PNG/JPEG files; errors name the path."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer import DataError, TrainConfig, Trainer
from trainer import data as D

# -- digits --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return D.load("digits")


def test_digits_are_uint8_rgb_32px_with_ten_classes(digits):
    assert digits.train_images.dtype == torch.uint8 and digits.eval_images.dtype == torch.uint8
    assert digits.train_images.shape[1:] == (3, 32, 32) and digits.eval_images.shape[1:] == (3, 32, 32)
    assert (len(digits.train_images), len(digits.eval_images)) == (1259, 269)  # 70/15/15 of 1,797: val shown
    assert len(digits.train_labels) == len(digits.train_images)
    assert len(digits.eval_labels) == len(digits.eval_images)
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.train_labels.dtype == torch.int64
    assert set(digits.train_labels.tolist()) == set(range(10)) == set(digits.eval_labels.tolist())
    # stratified: every class has about 15% of its images in val (and as many in test)
    test = D.load("digits", eval_split="test")
    assert torch.equal(test.train_images, digits.train_images) and len(test.eval_images) == 269
    for c in range(10):
        n_class = int((digits.train_labels == c).sum() + (digits.eval_labels == c).sum() + (test.eval_labels == c).sum())
        for held in (digits.eval_labels, test.eval_labels):
            assert 0.13 < int((held == c).sum()) / n_class < 0.17
    # real pictures: grey (equal channels), dark background, bright strokes
    x = digits.train_images
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert x.min() == 0 and x.max() >= 250


def test_digits_split_is_fixed_and_disjoint(digits):
    again = D.load("digits")
    assert torch.equal(again.train_images, digits.train_images)
    assert torch.equal(again.eval_images, digits.eval_images)
    assert torch.equal(again.train_labels, digits.train_labels)
    # no val or test image is also a training image, and val is not test (sklearn's digits hold no
    # exact duplicates; tests/trainer/test_splits.py checks the indices)
    test = D.load("digits", eval_split="test")
    train, val, held = ({bytes(img.numpy()) for img in x} for x in (digits.train_images, digits.eval_images,
                                                                     test.eval_images))
    assert not train & val and not train & held and not val & held


def test_digits_other_size():
    small = D.load("digits", image_size=16)
    assert small.train_images.shape[1:] == (3, 16, 16) and small.train_images.dtype == torch.uint8


def test_image_data_to_device(digits):
    moved = digits.to("cpu")
    assert torch.equal(moved.train_images, digits.train_images) and moved.classes == digits.classes


def test_unknown_dataset_is_refused():
    with pytest.raises(DataError, match="mnist"):
        D.load("mnist")


def test_missing_torchvision_dataset_names_the_root(tmp_path):
    root = tmp_path / "nothing-here"
    with pytest.raises(DataError, match="cifar10") as err:
        D.load("cifar10", data_root=str(root), download=False)
    assert str(root) in str(err.value)
    assert "download" in str(err.value)


# -- imagefolder ---------------------------------------------------------------------------------

COLOURS = {"cat": (200, 40, 30), "dog": (20, 180, 60), "owl": (30, 60, 220)}


def _write(path: Path, size: tuple[int, int], colour, fmt: str, seed: int) -> None:
    """A real image file: a flat colour with a noisy band, saved by PIL."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[:] = colour
    arr[: h // 5] = rng.integers(0, 256, size=(h // 5, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def make_tree(root: Path, per_class: int = 5) -> Path:
    sizes = [(32, 32), (48, 40), (40, 64), (100, 80), (20, 24)]
    for c, colour in COLOURS.items():
        for i in range(per_class):
            fmt, ext = (("PNG", "png"), ("JPEG", "jpg"))[i % 2]
            _write(root / c / f"img{i}.{ext}", sizes[i % len(sizes)], colour, fmt, seed=i)
    return root


def count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = D.decode_files

    def wrapped(files, side):
        calls.append(len(files))
        return real(files, side)

    monkeypatch.setattr(D, "decode_files", wrapped)
    return calls


def test_imagefolder_loads_real_png_and_jpeg(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    calls = count_decodes(monkeypatch)
    data = D.load(f"imagefolder:{root}", cache_dir=str(cache), image_size=32)
    assert sorted(calls) == [3, 9]  # the training and val images, each decoded once (test: not asked for)
    assert data.classes == ["cat", "dog", "owl"]
    assert data.train_images.dtype == torch.uint8
    assert data.train_images.shape == (9, 3, 32, 32) and data.eval_images.shape == (3, 3, 32, 32)
    assert sorted(data.eval_labels.tolist()) == [0, 1, 2]  # stratified: of five a class, one val, one test
    assert sorted(data.train_labels.tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    # pixels are the files' pixels: the bottom of every image is its class colour (JPEG: nearly)
    for images, labels in ((data.train_images, data.train_labels), (data.eval_images, data.eval_labels)):
        for img, label in zip(images, labels):
            colour = torch.tensor(COLOURS[data.classes[label]], dtype=torch.float32)
            bottom = img[:, -8:, :].float().mean(dim=(1, 2))
            assert (bottom - colour).abs().max() < 12


def test_imagefolder_png_pixels_are_exact(tmp_path):
    root = tmp_path / "tree"
    rng = np.random.default_rng(0)
    arrays = {}
    for c in ("a", "b"):
        for i in range(5):
            arr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            arrays[(c, i)] = arr
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    data = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    test = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), eval_split="test")
    everything = torch.cat([data.train_images, data.eval_images, test.eval_images])
    expected = {bytes(torch.from_numpy(a).permute(2, 0, 1).contiguous().numpy()) for a in arrays.values()}
    assert {bytes(img.numpy()) for img in everything} == expected


def test_imagefolder_grey_and_rgba_become_rgb(tmp_path):
    root = tmp_path / "modes"
    (root / "grey").mkdir(parents=True)
    (root / "alpha").mkdir(parents=True)
    Image.fromarray(np.full((40, 40), 77, dtype=np.uint8), mode="L").save(root / "grey" / "g.png")
    Image.fromarray(np.full((36, 36, 4), 150, dtype=np.uint8), mode="RGBA").save(root / "alpha" / "a.png")
    data = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    everything = torch.cat([data.train_images, data.eval_images])
    assert everything.shape == (2, 3, 32, 32)
    grey = everything[torch.cat([data.train_labels, data.eval_labels]) == data.classes.index("grey")][0]
    assert bool((grey == 77).all())


def test_imagefolder_second_load_reads_the_cache(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    first = D.load(f"imagefolder:{root}", cache_dir=str(cache))
    cached = list(cache.glob("*.pt"))
    assert len(cached) == 2  # the training part and the held-out part
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]

    def no_decoding(files, side):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(D, "decode_files", no_decoding)
    second = D.load(f"imagefolder:{root}", cache_dir=str(cache))
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.eval_images, second.eval_images)
    assert torch.equal(first.train_labels, second.train_labels)


def test_imagefolder_cache_is_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    D.load(f"imagefolder:{root}", cache_dir=str(cache))
    calls = count_decodes(monkeypatch)
    target = root / "dog" / "img0.png"
    _write(target, (32, 32), (255, 255, 255), "PNG", seed=99)
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    data = D.load(f"imagefolder:{root}", cache_dir=str(cache))
    assert len(calls) == 1 and calls[0] in (3, 9)  # only the part that holds the changed file
    everything = torch.cat([data.train_images, data.eval_images])
    assert any(bool((img[:, -8:] == 255).all()) for img in everything)
    # another image size is another cache entry
    D.load(f"imagefolder:{root}", cache_dir=str(cache), image_size=48)
    assert sum(calls[1:]) == 12
    assert len(list(cache.glob("*.pt"))) == 5


def test_imagefolder_train_and_test_subfolders_are_the_splits(tmp_path):
    root = tmp_path / "split"
    make_tree(root / "train", per_class=10)
    make_tree(root / "test", per_class=2)
    test = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), eval_split="test")
    assert test.classes == ["cat", "dog", "owl"]
    assert len(test.train_images) == 30 and len(test.eval_images) == 6
    assert sorted(test.eval_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    # val (the default): a fixed 10% of train/, held out of training; test/ is never touched
    val = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    assert len(val.train_images) == 27 and sorted(val.eval_labels.tolist()) == [0, 1, 2]
    as_bytes = lambda images: {bytes(img.numpy()) for img in images}  # noqa: E731
    assert as_bytes(val.train_images) | as_bytes(val.eval_images) == as_bytes(test.train_images)
    assert not as_bytes(val.train_images) & as_bytes(val.eval_images)
    assert not as_bytes(val.eval_images) & as_bytes(test.eval_images)


def test_imagefolder_with_val_and_test_folders_uses_the_one_asked_for(tmp_path):
    root = tmp_path / "three"
    make_tree(root / "train", per_class=3)
    make_tree(root / "val", per_class=1)
    make_tree(root / "test", per_class=2)
    assert len(D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "c")).eval_images) == 3
    assert len(D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "c"), eval_split="test").eval_images) == 6
    assert len(D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "c")).train_images) == 9


def test_imagefolder_without_a_test_folder_tests_on_a_fixed_part_of_train_never_trained_on(tmp_path):
    root = tmp_path / "valonly"
    make_tree(root / "train", per_class=3)
    make_tree(root / "val", per_class=1)
    val = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "c"))
    test = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "c"), eval_split="test")
    assert torch.equal(val.train_images, test.train_images) and len(val.train_images) == 6
    assert len(val.eval_images) == 3 and sorted(test.eval_labels.tolist()) == [0, 1, 2]  # 10% (one) a class
    as_bytes = lambda images: {bytes(img.numpy()) for img in images}  # noqa: E731
    assert not as_bytes(test.eval_images) & (as_bytes(val.train_images) | as_bytes(val.eval_images))


def _fake_cifar10(root: Path, per_batch: int = 40) -> None:
    """The python pickle layout torchvision's CIFAR10 reads, with random pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 "labels": [i % 10 for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))


def test_cifar10_evaluates_on_a_held_out_part_of_train_unless_test_is_asked_for(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _fake_cifar10(tmp_path / "data")
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # the fake has no official md5
    test = D.load("cifar10", data_root=str(tmp_path / "data"), eval_split="test")
    assert len(test.train_images) == 200 and len(test.eval_images) == 40
    val = D.load("cifar10", data_root=str(tmp_path / "data"))
    assert len(val.train_images) == 180 and len(val.eval_images) == 20
    assert torch.bincount(val.eval_labels, minlength=10).tolist() == [2] * 10  # stratified
    as_bytes = lambda images: {bytes(img.numpy()) for img in images}  # noqa: E731
    assert not as_bytes(val.train_images) & as_bytes(val.eval_images)
    assert not as_bytes(val.eval_images) & as_bytes(test.eval_images)  # the test split stays unseen
    assert D.load("cifar10", data_root=str(tmp_path / "data")).eval_images.equal(val.eval_images)  # fixed


def test_imagefolder_val_subfolder_is_the_eval_split(tmp_path):
    root = tmp_path / "split"
    make_tree(root / "train", per_class=3)
    make_tree(root / "val", per_class=1)
    data = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    assert len(data.train_images) == 6 and len(data.eval_images) == 3  # train/ less its test part: 1 of 3 a class


def test_imagefolder_mismatched_split_classes_are_refused(tmp_path):
    root = tmp_path / "split"
    make_tree(root / "train", per_class=2)
    make_tree(root / "test", per_class=2)
    for f in (root / "test" / "owl").iterdir():
        f.unlink()
    (root / "test" / "owl").rmdir()
    with pytest.raises(DataError, match="classes") as err:
        D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    assert str(root / "test") in str(err.value)


def test_imagefolder_with_only_a_train_subfolder_keeps_its_classes(tmp_path):
    """root/train/<class>/... without test/ or val/: the classes are train's subfolders, not 'train'.

    Today the tree is read as one class called 'train' (every label 0, kNN accuracy trivially 1.0).
    """
    root = tmp_path / "only-train"
    make_tree(root / "train", per_class=5)
    try:
        data = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    except DataError:
        return  # refusing the layout with a clear message is also acceptable
    assert data.classes == ["cat", "dog", "owl"]


def test_missing_imagefolder_is_refused_naming_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "tree"
    with pytest.raises(DataError) as err:
        D.load(f"imagefolder:{missing}", cache_dir=str(tmp_path / "cache"))
    assert str(missing) in str(err.value)
    # and the same through the public entry point
    with pytest.raises(DataError) as err:
        Trainer(TrainConfig(dataset=f"imagefolder:{missing}", cache_dir=str(tmp_path / "cache"), device="cpu"))
    assert str(missing) in str(err.value)


def test_a_file_instead_of_a_folder_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("not a tree")
    with pytest.raises(DataError) as err:
        D.load(f"imagefolder:{f}", cache_dir=str(tmp_path / "cache"))
    assert str(f) in str(err.value)


def test_unreadable_image_is_refused_naming_the_file(tmp_path):
    root = make_tree(tmp_path / "pets", per_class=2)
    bad = root / "dog" / "x.jpg"
    bad.write_bytes(b"\x00\x01garbage, not a JPEG at all" * 10)
    split = next(s for s in ("val", "test") if bad in D.tree_split(root, s)[0] + D.tree_split(root, s)[2])
    with pytest.raises(DataError) as err:
        D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), eval_split=split)
    assert str(bad) in str(err.value)
    # nothing half-decoded was cached: at most the other part, which decoded whole
    assert len(list(tmp_path.glob("cache/*.pt"))) <= 1 and not list(tmp_path.glob("cache/*.tmp*"))


def test_empty_class_folder_is_refused_naming_it(tmp_path):
    root = make_tree(tmp_path / "pets", per_class=2)
    empty = root / "zebra"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    assert str(empty) in str(err.value)


def test_folder_without_class_subfolders_is_refused(tmp_path):
    root = tmp_path / "flat"
    _write(root / "a.png", (32, 32), (1, 2, 3), "PNG", seed=0)
    with pytest.raises(DataError) as err:
        D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))
    assert str(root) in str(err.value)


def test_trainer_trains_on_an_imagefolder(tmp_path):
    root = make_tree(tmp_path / "pets", per_class=6)
    cfg = TrainConfig(dataset=f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), device="cpu",
                      epochs=1, batch_size=8, projector_hidden=16, projector_out=8, linear_probe=False,
                      image_size=16)
    trainer = Trainer(cfg)
    assert trainer.data.train_images.shape[1:] == (3, 32, 32)  # stored at >= 32 px, viewed at 16
    (result,) = list(trainer.fit())
    assert np.isfinite(result.loss) and 0.0 <= result.knn_acc <= 1.0


def test_imagefolder_cache_that_is_not_one_is_refused_naming_it(tmp_path):
    root = make_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    D.load(f"imagefolder:{root}", cache_dir=str(cache))
    path = max(cache.glob("*.pt"), key=lambda p: p.stat().st_size)  # the 9 training images
    marker = tmp_path / "pwned"

    class TouchOnLoad:
        def __reduce__(self):
            return Path.touch, (marker,)

    for content, reason in ((lambda: torch.save(TouchOnLoad(), path), "never loaded"),
                            (lambda: torch.save(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), path), "of these 9 images"),
                            (lambda: path.write_bytes(b"PK\x03\x04 cut short"), "truncated or corrupt")):
        content()
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))} is not a byol-sweep image cache.*{reason}"):
            D.load(f"imagefolder:{root}", cache_dir=str(cache))
    assert not marker.exists()


# -- train_limit: a fixed, stratified subset -----------------------------------------------------

def test_stratified_subset_keeps_every_class_in_proportion_on_class_sorted_labels():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 150 + [-1] * 50)  # sorted by class, as ImageFolder lists
    idx = D.stratified_subset(labels, 100)
    assert len(idx) == len(set(idx.tolist())) == 100
    assert torch.equal(idx, idx.sort().values)
    counts = {c: int((labels[idx] == c).sum()) for c in (0, 1, 2, -1)}
    assert counts == {0: 50, 1: 30, 2: 15, -1: 5}
    # drawn at random within each class, not its first images
    assert not torch.equal(idx[labels[idx] == 0], torch.arange(50))
    # fixed: the same images on every call, whatever torch's global seed; another seed draws others
    torch.manual_seed(123)
    assert torch.equal(D.stratified_subset(labels, 100), idx)
    assert not torch.equal(D.stratified_subset(labels, 100, seed=1), idx)


def test_stratified_subset_rounds_to_exactly_the_size_asked():
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 7)
    for size in range(1, 21):
        idx = D.stratified_subset(labels, size)
        counts = torch.bincount(labels[idx], minlength=3)
        assert len(idx) == size and int(counts.max() - counts.min()) <= 1
    assert torch.equal(D.stratified_subset(labels, 21), torch.arange(21))
    assert torch.equal(D.stratified_subset(labels, 50), torch.arange(21))


def test_train_limit_trains_every_trial_on_the_same_stratified_images():
    images = (torch.arange(300) % 256).to(torch.uint8).view(300, 1, 1, 1).expand(300, 3, 8, 8).contiguous()
    labels = torch.arange(300) // 100  # sorted by class: the first 30 images are all class 0
    data = D.ImageData(images, labels, images[:20], labels[:20], ["a", "b", "c"])
    base = dict(dataset="digits", train_limit=30, image_size=8, batch_size=16, projector_hidden=16,
                projector_out=8, knn_bank_size=20, knn_queries=10, linear_probe=False, device="cpu")
    seen = [Trainer(TrainConfig(**base, seed=seed), data=data).data for seed in (0, 1)]
    assert torch.bincount(seen[0].train_labels).tolist() == [10, 10, 10]
    assert torch.equal(seen[0].train_images, seen[1].train_images)
    assert torch.equal(seen[0].train_images, images[D.stratified_subset(labels, 30)])


def test_a_cached_dataset_is_mapped_from_one_file_per_node_not_copied(tmp_path):
    root = make_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    first = D.load(f"imagefolder:{root}", cache_dir=str(cache))
    second = D.load(f"imagefolder:{root}", cache_dir=str(cache))
    assert torch.equal(first.train_images, second.train_images)
    maps = Path("/proc/self/maps").read_text()
    for path in cache.glob("imagefolder-*.pt"):
        assert str(path) in maps  # read-only pages shared by every trial of the node
    assert not list(cache.glob("*.tmp*"))


def test_the_held_out_split_is_the_same_whether_decoded_whole_or_in_parts(tmp_path):
    root = make_tree(tmp_path / "pets")
    files, labels, classes = D._list_tree(root)
    whole, y = D.decode_files(files, 32), torch.tensor(labels)
    parts = {k: torch.from_numpy(v) for k, v in D.three_way_split(y.numpy()).items()}
    for split in ("val", "test"):
        data = D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), eval_split=split)
        assert torch.equal(whole[parts["train"]], data.train_images) and torch.equal(y[parts["train"]], data.train_labels)
        assert torch.equal(whole[parts[split]], data.eval_images) and torch.equal(y[parts[split]], data.eval_labels)
