"""Hostile or mistaken inputs are refused at once, with one sentence, before Ray starts."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sweep.errors import SweepError
from sweep.runner import SweepOptions, run_sweep
from sweep.space import SpaceError, load_space
from sweep.space.limits import check_size
from sweep.space.yaml_input import read_yaml
from sweep.state import check_name
from tests.conftest import write_space
from trainer.config import ConfigError, TrainConfig
from trainer.data import DataError, check_dataset, load_imagefolder

CLI = [sys.executable, "-m", "sweep.cli"]
ROOT = str(Path(__file__).resolve().parents[2])


def cli(*args, cwd, timeout=120):
    """The command from this checkout (not whichever one is installed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr and "usage:" not in stderr, stderr
    return lines[0]


# -- sizes ------------------------------------------------------------------------------------
def test_num_samples_1e12_is_refused_unless_allowed(tmp_path):
    spec = load_space(str(write_space(tmp_path, "huge", search={"base_lr": {"uniform": [0.1, 1.0]}},
                                      num_samples=10**12)))
    with pytest.raises(SweepError, match=r"1,000,000,000,000 trials .* at most 10,000 \(pass --allow-large"):
        check_size(spec)
    check_size(spec, allow_large=True)


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_a_1000_by_1000_grid_is_refused_at_once(tmp_path):
    path = write_space(tmp_path, "wide", algorithm="grid",
                       grid={"seed": list(range(1000)), "knn_k": list(range(1, 1001))})
    started = time.monotonic()
    proc = cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "grid has 1,000,000 combinations; allowed: at most 1,000" in one_sentence(proc.stderr)
    assert time.monotonic() - started < 60  # refused, not expanded


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_run_refuses_a_huge_sweep_before_ray_starts(tmp_path):
    path = write_space(tmp_path, "many", search={"base_lr": {"uniform": [0.1, 1.0]}}, num_samples=10**12)
    proc = cli("run", str(path), "--storage", "s", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert proc.returncode == 2 and "--allow-large" in one_sentence(proc.stderr)
    assert not (tmp_path / "s").exists() and not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("field, value", [("epochs", 1e20), ("epochs", 10_001), ("batch_size", 10**9),
                                          ("projector_hidden", 10**7), ("knn_k", 10**9), ("knn_bank_size", 10**12),
                                          ("image_size", 10**5), ("seed", 2**64), ("warmup_epochs", 1e30)])
def test_sizes_have_upper_bounds(field, value):
    with pytest.raises(ConfigError, match=f"{field} is .*; allowed: "):
        TrainConfig.from_dict({field: value})


def test_epochs_1e20_in_a_space_names_the_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: {epochs: 1e20}\nsearch: {base_lr: {uniform: [0.1, 1]}}\n")
    with pytest.raises(SpaceError, match=r"base.epochs: epochs is 100000000000000000000; allowed: \[1, 10000\]"):
        load_space(str(path))


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../evil", ".hidden", "a/b", "x" * 101, "", "sp ace", "semi;colon", "quo'te"])
def test_unsafe_sweep_names_are_refused(name):
    with pytest.raises(SweepError, match="not a safe sweep name"):
        check_name(name, "--name")


def test_safe_sweep_names_pass():
    for name in ("quick-20250101-120000", "a.b_c-D9", "x" * 100):
        check_name(name, "--name")


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_name_with_dots_and_slashes_is_refused_by_the_cli(tmp_path):
    proc = cli("run", "quick", "--name", "../../evil", "--storage", "s", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--name '../../evil' is not a safe sweep name" in one_sentence(proc.stderr)
    assert not (tmp_path / "s").exists() and not (tmp_path.parent / "evil").exists()
    proc = cli("resume", "../../evil", "--storage", "s", cwd=tmp_path)
    assert proc.returncode == 2 and "not a safe sweep name" in one_sentence(proc.stderr)


# -- YAML -------------------------------------------------------------------------------------
def test_deeply_nested_yaml_is_refused():
    with pytest.raises(yaml.YAMLError, match="nesting deeper than 50 levels"):
        read_yaml("description: " + "[" * 10_000 + "]" * 10_000)


def test_an_alias_bomb_under_description_is_refused_quickly(tmp_path):
    lines = ['name: bomb', 'description:', '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  {name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("search: {base_lr: {uniform: [0.1, 1]}}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(SpaceError, match=r"bomb.yaml: not valid YAML at line \d+, column \d+: aliases expand to "
                                         r"more than 100,000 values"):
        load_space(str(path))
    assert time.monotonic() - started < 10


def test_a_few_aliases_still_work():
    data = read_yaml("x: &v {p: 1}\ny: *v\nz:\n  <<: *v\n  q: 2\n")
    assert data == {"x": {"p": 1}, "y": {"p": 1}, "z": {"p": 1, "q": 2}}


def test_duplicate_keys_are_refused_with_the_key_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("search:\n  base_lr: {uniform: [0.1, 1]}\nnum_samples: 2\nnum_samples: 3\n")
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert str(err.value) == (f"{path}: not valid YAML at line 4, column 1: duplicate key 'num_samples' (first at "
                              "line 3); each key may appear once")


def test_a_10_mb_space_file_is_refused_at_once(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("description: |\n" + ("  " + "x" * 1000 + "\n") * 10_000)
    started = time.monotonic()
    with pytest.raises(SpaceError, match=r"big.yaml: not valid YAML: the text is 10.\d MB; allowed: at most 1 MB"):
        load_space(str(path))
    assert time.monotonic() - started < 5


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_train_config_yaml_has_the_same_limits(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 2\nepochs: 3\n")
    proc = cli("train", "--config", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "duplicate key 'epochs'" in one_sentence(proc.stderr)


# -- data -------------------------------------------------------------------------------------
def _tree(root, classes, per=2):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_a_one_class_image_folder_is_refused(tmp_path):
    root = _tree(tmp_path / "one", ["cats"])
    with pytest.raises(DataError, match="has one class folder \\(cats\\); at least 2 classes are needed"):
        check_dataset(f"imagefolder:{root}")
    with pytest.raises(DataError, match="at least 2 classes"):
        load_imagefolder(root, tmp_path / "cache", 32)
    check_dataset(f"imagefolder:{_tree(tmp_path / 'two', ['cats', 'dogs'])}")


def test_image_folder_checks_follow_the_split_layout(tmp_path):
    _tree(tmp_path / "t" / "train", ["a", "b"])
    _tree(tmp_path / "t" / "val", ["a"])
    with pytest.raises(DataError, match="val has one class folder"):
        check_dataset(f"imagefolder:{tmp_path / 't'}")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        check_dataset(f"imagefolder:{tmp_path / 'f'}")


def test_a_missing_image_folder_is_refused_before_ray_starts(tmp_path):
    path = write_space(tmp_path, "missing", base={"dataset": f"imagefolder:{tmp_path}/nowhere"},
                       search={"base_lr": {"uniform": [0.1, 1.0]}}, num_samples=1)
    started = time.monotonic()
    with pytest.raises(SpaceError, match=f"missing.yaml: base.dataset: image folder {tmp_path}/nowhere does not exist"):
        run_sweep(str(path), SweepOptions(storage=str(tmp_path / "runs"), tracking_uri=f"sqlite:///{tmp_path}/m.db"))
    assert time.monotonic() - started < 30
    import ray

    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.db").exists()


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_a_one_class_folder_in_a_grid_is_refused_by_run(tmp_path):
    one = _tree(tmp_path / "one", ["cats"])
    two = _tree(tmp_path / "two", ["cats", "dogs"])
    path = write_space(tmp_path, "g", algorithm="grid", grid={"dataset": [f"imagefolder:{two}", f"imagefolder:{one}"]})
    proc = cli("run", str(path), "--storage", "runs", cwd=tmp_path)
    assert proc.returncode == 2 and "has one class folder (cats)" in one_sentence(proc.stderr)
    assert not (tmp_path / "runs").exists()


def test_an_unreadable_cache_is_named_in_one_sentence(tmp_path):
    from trainer.data import _cached_decode

    root = _tree(tmp_path / "two", ["a", "b"])
    files = sorted(root.rglob("*.png"))
    _cached_decode(files, 32, tmp_path / "cache")
    cache = next((tmp_path / "cache").glob("*.pt"))
    cache.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=f"{cache} is not a byol-sweep image cache"):
        _cached_decode(files, 32, tmp_path / "cache")


# -- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "abc"], "byol-sweep train: error: argument --epochs: invalid int value: 'abc'"),
    (["run", "--max-concurrent", "two"], "byol-sweep run: error: argument --max-concurrent: invalid int value"),
    (["frobnicate"], "byol-sweep: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_argument_type_errors_are_one_sentence(tmp_path, args, message):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in one_sentence(proc.stderr)


def test_private_folders(tmp_path):
    from sweep.state import make_private_dir

    make_private_dir(tmp_path / "a" / "b")
    assert os.stat(tmp_path / "a" / "b").st_mode & 0o777 == 0o700


# -- the pre-flight: every bad input `run` meets before Ray, said by `validate` too ---------------
def _bad_trees(root: Path) -> dict[str, Path]:
    garbage = root / "garbage"
    dangling = root / "dangling"
    named_like_images = root / "named"
    for c in ("a", "b"):
        (garbage / c).mkdir(parents=True)
        (garbage / c / "x.png").write_bytes(b"not an image" * 8)
        (dangling / c).mkdir(parents=True)
        os.symlink(root / "nowhere.png", dangling / c / "x.png")
        (named_like_images / c / "x.png").mkdir(parents=True)
    return {"garbage": garbage, "dangling": dangling, "named": named_like_images, "good": _tree(root / "good", "ab")}


BAD_SPACES = [  # (what the space's base sets, what the one sentence says after "<file>: ")
    ({"name": "bad name!"}, "name 'bad name!' is not a safe sweep name"),
    ({"dataset": "imagefolder:/nonexistent"}, "base.dataset: image folder /nonexistent does not exist"),
    ({"dataset": "cifar10", "data_root": "{tmp}/empty"}, "base.dataset: cifar10 is not under base.data_root {tmp}/empty"),
    ({"device": "cuda:99"}, "base.device: device 'cuda:99' cannot be used: this machine has"),
    ({"dataset": "imagefolder:{tmp}/garbage"}, "base.dataset: cannot read image {tmp}/garbage/a/x.png"),
    ({"dataset": "imagefolder:{tmp}/named"}, "base.dataset: class folder {tmp}/named/a holds no images"),
    ({"dataset": "imagefolder:{tmp}/dangling"}, "base.dataset: {tmp}/dangling/a/x.png is a dangling symbolic link"),
    ({"dataset": "imagefolder:{tmp}/good/a/0.png"}, "base.dataset: image folder {tmp}/good/a/0.png is not a directory"),
    ({"dataset": "imagefolder:{tmp}/good", "cache_dir": "/proc/byol-cache"},
     "base.cache_dir: cannot create /proc/byol-cache"),
]


def _bad_space(tmp_path: Path, base: dict) -> Path:
    _bad_trees(tmp_path)
    (tmp_path / "empty").mkdir()
    base = {k: v.format(tmp=tmp_path) for k, v in base.items()}
    return write_space(tmp_path, base.pop("name", "bad"), search={"base_lr": {"uniform": [0.1, 1.0]}}, num_samples=1,
                       base=base)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("base, message", BAD_SPACES, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m)
                                                             in enumerate(BAD_SPACES)])
def test_validate_and_run_refuse_the_same_space_before_ray_in_one_sentence(tmp_path, monkeypatch, capsys,
                                                                          command, base, message):
    import ray

    from sweep.cli import main

    path = _bad_space(tmp_path, base)
    monkeypatch.chdir(tmp_path)
    extra = ["--storage", "runs", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"] if command == "run" else []
    assert main([command, str(path), *extra]) == 2
    said = one_sentence(capsys.readouterr().err)
    assert said.startswith(f"byol-sweep {command}: error: {path}: {message.format(tmp=tmp_path)}"), said
    assert not ray.is_initialized()
    assert not {"runs", "byol-runs", "m.db", "mlflow.db"} & {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed is -1; allowed: an integer from 0 to 4,294,967,295"),
    (["--storage", "foo://bar/x"], "--storage foo://bar/x: 'foo' is not a filesystem Ray Tune can store to"),
    (["--storage", "/etc/hostname/x"], "--storage /etc/hostname/x: /etc/hostname is not a folder"),
])
def test_run_refuses_a_bad_flag_before_ray_in_one_sentence(tmp_path, monkeypatch, capsys, args, message):
    import ray

    from sweep.cli import main

    path = write_space(tmp_path, "ok", search={"base_lr": {"uniform": [0.1, 1.0]}}, num_samples=1)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db", *args]) == 2
    assert one_sentence(capsys.readouterr().err).startswith(f"byol-sweep run: error: {message}")
    assert not ray.is_initialized() and not (tmp_path / "m.db").exists()


def test_train_refuses_a_cache_folder_it_cannot_make_before_training(tmp_path, capsys):
    from sweep.cli import main

    good = _tree(tmp_path / "good", "ab")
    assert main(["train", "--set", f"dataset=imagefolder:{good}", "--set", "cache_dir=/proc/byol-cache",
                 "--out", str(tmp_path / "out")]) == 2
    assert one_sentence(capsys.readouterr().err).startswith(
        "byol-sweep train: error: command line: cache_dir: cannot create /proc/byol-cache (No such file or directory)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["validate", "quik"], "search space 'quik' is neither a file nor a shipped space (did you mean 'quick'?)"),
    (["validate", "{tmp}/s.yaml"], "{tmp}/s.yaml: searh: unknown key (did you mean 'search'?); allowed: name,"),
    (["train", "--set", "policy=nocolor"], "config: augmentation policy 'nocolor' is unknown (did you mean "
                                           "'no_color'?); allowed: byol,"),
    (["train", "--set", "polcy=byol"], "--set: unknown field 'polcy' (did you mean 'policy'?); allowed fields:"),
    (["train", "--set", "backbone=resnet19"], "--set: backbone is 'resnet19' (did you mean 'resnet18'?); allowed:"),
    (["train", "--set", "dataset=cifar"], "config: dataset 'cifar' is unknown (did you mean 'cifar10'?); allowed:"),
])
def test_a_misspelled_name_gets_a_did_you_mean_in_its_one_sentence(tmp_path, capsys, args, message):
    from sweep.cli import main

    (tmp_path / "s.yaml").write_text("algorithm: grid\ngrid: {seed: [0, 1]}\nsearh: {}\n")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(args) == 2
    assert one_sentence(capsys.readouterr().err).startswith(f"byol-sweep {args[0]}: error: "
                                                            f"{message.format(tmp=tmp_path)}")


def test_validate_says_the_sweep_it_would_run(tmp_path, monkeypatch, capsys):
    from sweep.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["validate", "quick", "--name", "mine", "--storage", "elsewhere"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"; it would run as sweep mine in {tmp_path}/elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_export_in_a_folder_without_a_store_makes_none(tmp_path, monkeypatch, capsys):
    from sweep.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["export", "--sweep", "nothing"]) == 2
    assert one_sentence(capsys.readouterr().err).startswith(
        f"byol-sweep export: error: there is no MLflow store at {tmp_path}/mlflow.db to read sweep nothing from")
    assert list(tmp_path.iterdir()) == []
