"""Issue 28, item 5: nothing a user asked for is silently changed. A batch larger than the training
set is refused; every image mode decodes to its true 8-bit RGB (16-bit scaled, not clipped); an
image folder's files are checked by their headers before anything starts, and a FIFO, socket,
device file or dangling link named like an image is refused without ever being opened for reading."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer import ConfigError, DataError, TrainConfig, Trainer
from trainer import data as D
from trainer.images import decode_files

TINY = dict(dataset="digits", device="cpu", image_size=8, projector_hidden=16, projector_out=8, epochs=1,
            linear_probe=False)
SIDE = 32

# -- batch_size larger than the training set --------------------------------------------------------


@pytest.mark.parametrize("settings, size", [(dict(batch_size=65536), 1259), (dict(batch_size=64, train_limit=40), 40)])
def test_a_batch_larger_than_the_training_set_is_refused(settings, size):
    with pytest.raises(ConfigError) as err:
        Trainer(TrainConfig(**{**TINY, **settings}))
    message = str(err.value)
    assert f"batch_size {settings['batch_size']}" in message and f"{size} training images" in message, message
    assert "\n" not in message


def test_a_batch_as_large_as_the_training_set_trains_with_that_batch():
    trainer = Trainer(TrainConfig(**TINY, batch_size=40, train_limit=40))
    assert trainer.batch_size == 40 and trainer.steps_per_epoch == 1


def test_train_refuses_a_batch_larger_than_the_training_set_in_one_sentence(tmp_path, monkeypatch, capsys):
    from sweep.cli import main  # the command itself, in this process

    monkeypatch.chdir(tmp_path)
    code = main(["train", "--batch-size", "65536", "--epochs", "1", "--device", "cpu", "--out", "run"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("byol-sweep train: error:") and err.count("\n") == 1, err
    assert "batch_size 65536" in err and "1259 training images" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -- every image mode decodes to its true 8-bit RGB --------------------------------------------------

RNG = np.random.default_rng(0)
GREY16 = RNG.integers(0, 65536, size=(SIDE, SIDE), dtype=np.uint16)
GREY8 = RNG.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)
CMYK = RNG.integers(0, 256, size=(SIDE, SIDE, 4), dtype=np.uint8)
PALETTE = RNG.integers(0, 256, size=(16, 3), dtype=np.uint8)
INDEX = RNG.integers(0, 16, size=(SIDE, SIDE), dtype=np.uint8)
BITS = RNG.integers(0, 2, size=(SIDE, SIDE)).astype(bool)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def _palette_image() -> Image.Image:
    im = Image.fromarray(INDEX, mode="P")
    im.putpalette(PALETTE.flatten().tolist())
    return im


def _write_png16(path: Path) -> None:
    Image.fromarray(GREY16).save(path)


def _write_pgm16(path: Path) -> None:  # PIL reads a 16-bit PGM as mode I
    Image.fromarray(GREY16).save(path)


def _write_tiff16(path: Path) -> None:
    Image.fromarray(GREY16).save(path)


def _write_palette(path: Path) -> None:
    _palette_image().save(path)


def _write_palette_transparent(path: Path) -> None:
    _palette_image().save(path, transparency=bytes(range(0, 256, 16)))


def _write_palette_one_transparent(path: Path) -> None:
    _palette_image().save(path, transparency=3)


def _write_cmyk(path: Path) -> None:
    Image.fromarray(CMYK, mode="CMYK").save(path)


def _write_la(path: Path) -> None:
    Image.fromarray(np.stack([GREY8, ALPHA], axis=2), mode="LA").save(path)


def _write_rgba(path: Path) -> None:
    Image.fromarray(np.concatenate([RGB8, ALPHA[..., None]], axis=2), mode="RGBA").save(path)


def _write_bits(path: Path) -> None:
    Image.fromarray(BITS).save(path)


def _write_grey(path: Path) -> None:
    Image.fromarray(GREY8, mode="L").save(path)


CMYK_RGB = np.round((255 - CMYK[..., :3].astype(np.float64)) * (255 - CMYK[..., 3:].astype(np.float64)) / 255)

MODES = [  # (file name, the mode PIL reads it as, writer, the expected (SIDE, SIDE, 3) uint8 pixels)
    ("grey16.png", "I;16", _write_png16, _grey((GREY16 >> 8).astype(np.uint8))),
    ("grey16.pgm", "I", _write_pgm16, _grey((GREY16 >> 8).astype(np.uint8))),
    ("grey16.tif", "I;16", _write_tiff16, _grey((GREY16 >> 8).astype(np.uint8))),
    ("palette.png", "P", _write_palette, PALETTE[INDEX]),
    ("palette-alpha.png", "P", _write_palette_transparent, PALETTE[INDEX]),
    ("palette-one-clear.png", "P", _write_palette_one_transparent, PALETTE[INDEX]),
    ("palette.gif", "P", _write_palette, PALETTE[INDEX]),
    ("cmyk.tif", "CMYK", _write_cmyk, CMYK_RGB.astype(np.uint8)),
    ("la.png", "LA", _write_la, _grey(GREY8)),
    ("rgba.png", "RGBA", _write_rgba, RGB8),
    ("bits.png", "1", _write_bits, _grey(np.where(BITS, 255, 0).astype(np.uint8))),
    ("grey.png", "L", _write_grey, _grey(GREY8)),
]


@pytest.mark.parametrize("name, mode, write, expected", MODES, ids=[m[0] for m in MODES])
def test_every_image_mode_decodes_to_its_true_rgb(tmp_path, name, mode, write, expected):
    path = tmp_path / name
    write(path)
    with Image.open(path) as im:
        assert im.mode == mode  # the file really is of the mode under test
    if name.endswith(".gif"):  # not a format an image folder reads
        with pytest.raises(DataError, match=rf"{name}.*allowed: JPEG, PNG"):
            decode_files([path], SIDE)
        return
    decoded = decode_files([path], SIDE)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(decoded, expected)


def test_a_16_bit_image_keeps_its_range(tmp_path):
    """The measured bug: 16-bit greys were clipped at 255, so almost every pixel read as white."""
    ramp = (np.arange(SIDE * SIDE, dtype=np.uint32).reshape(SIDE, SIDE) * 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    decoded = decode_files([tmp_path / "ramp.png"], SIDE)
    assert float((decoded == 255).float().mean()) < 0.01 and int(decoded.min()) == 0 and int(decoded.max()) == 255


def test_floating_point_pixels_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((SIDE, SIDE), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(DataError, match=rf"{path}.*floating-point.*allowed"):
        decode_files([path], SIDE)


# -- an image folder: headers checked before anything starts, special files refused ------------------

def _tree(root: Path, per_class: int = 3) -> Path:
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 40 * i + (c == "dogs"), np.uint8)).save(root / c / f"{i}.png")
    return root


def _in_thread(call, seconds: float = 20.0):
    """call() in a thread; fails the test (rather than hanging it) if call has not returned in time."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} did not return within {seconds} s (it waits on a FIFO?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_text_file_named_like_an_image_is_refused_before_anything_starts(tmp_path):
    root = _tree(tmp_path / "pets")
    bad = root / "dogs" / "x.jpg"
    bad.write_text("hello, I am not a JPEG\n")
    with pytest.raises(DataError) as err:
        D.check_dataset(f"imagefolder:{root}")
    assert str(bad) in str(err.value) and "allowed: JPEG, PNG" in str(err.value)


def test_a_folder_named_like_an_image_is_not_an_image(tmp_path):
    root = _tree(tmp_path / "pets")
    (root / "dogs" / "folder.jpg").mkdir()
    D.check_dataset(f"imagefolder:{root}")  # a folder is walked, never decoded
    files, _, _ = D._list_tree(root)
    assert root / "dogs" / "folder.jpg" not in files and len(files) == 6
    only_folder = tmp_path / "only"
    _tree(only_folder)
    for f in (only_folder / "dogs").iterdir():
        f.unlink()
    (only_folder / "dogs" / "x.jpg").mkdir()
    with pytest.raises(DataError, match=rf"class folder {only_folder / 'dogs'} holds no images"):
        D.check_dataset(f"imagefolder:{only_folder}")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


def _dangling(path: Path) -> Path:
    path.symlink_to(path.parent / "gone.png")
    return path


SPECIAL = [("pipe.png", _fifo, "FIFO"), ("sock.jpg", _socket, "socket"), ("link.png", _dangling, "dangling")]


@pytest.mark.parametrize("name, make, kind", SPECIAL, ids=[s[0] for s in SPECIAL])
def test_special_files_named_like_images_are_refused_and_never_waited_on(tmp_path, name, make, kind):
    root = _tree(tmp_path / "pets")
    special = make(root / "cats" / name)
    for call in (lambda: D.check_dataset(f"imagefolder:{root}"),
                 lambda: D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"))):
        with pytest.raises(DataError) as err:
            _in_thread(call)
        assert str(special) in str(err.value) and kind in str(err.value) and "allowed" in str(err.value)


def test_a_device_file_named_like_an_image_is_refused(tmp_path):
    root = _tree(tmp_path / "pets")
    device = root / "cats" / "null.png"
    device.symlink_to("/dev/null")  # a link is followed: what it names is a character device
    with pytest.raises(DataError, match=rf"{device}.*device"):
        _in_thread(lambda: D.check_dataset(f"imagefolder:{root}"))


def test_the_decoder_never_waits_on_a_fifo(tmp_path):
    pipe = _fifo(tmp_path / "pipe.png")
    with pytest.raises(DataError, match=rf"{pipe}.*FIFO"):
        _in_thread(lambda: decode_files([pipe], SIDE))


def test_a_readable_tree_passes_and_every_header_is_checked_in_a_small_tree(tmp_path, monkeypatch):
    from trainer import images  # to count what the check opens

    root = _tree(tmp_path / "pets")
    opened: list[Path] = []
    real = images.check_header
    monkeypatch.setattr(D, "check_header", lambda path: (opened.append(path), real(path)))
    D.check_dataset(f"imagefolder:{root}")
    assert sorted(opened) == sorted(root.rglob("*.png"))


def test_a_large_tree_checks_a_sample_that_holds_every_class(tmp_path, monkeypatch):
    root = _tree(tmp_path / "pets", per_class=2)
    monkeypatch.setattr(D, "HEADER_SAMPLE", 1)
    opened: list[Path] = []
    monkeypatch.setattr(D, "check_header", opened.append)
    D.check_dataset(f"imagefolder:{root}")
    assert {p.parent.name for p in opened} == {"cats", "dogs"} and len(opened) == 2


def test_a_truncated_image_passes_the_header_check_and_the_loader_names_it(tmp_path):
    root = _tree(tmp_path / "pets", per_class=6)
    cut = root / "dogs" / "0.png"
    Image.fromarray(RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(cut)  # noise: a long IDAT
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    D.check_dataset(f"imagefolder:{root}")  # a header is all the driver reads
    loaded = []
    for split in ("val", "test"):
        try:
            loaded.append(D.load(f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), eval_split=split))
        except DataError as err:
            assert str(cut) in str(err) and "cannot read image" in str(err)
    assert len(loaded) < 2  # the file is in training or in one held-out part: that load names it
    assert all(isinstance(d.train_images, torch.Tensor) for d in loaded)
