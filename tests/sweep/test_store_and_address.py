"""Issue 28, item 4: a tracking URI at an existing file that is not an MLflow store is refused by every
command that opens a store, in one sentence naming the file, and the file keeps its bytes; an --address
where nothing answers is refused within seconds, naming the address."""
from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_BASE, new_store, write_space
from tests.sweep.test_cli import byol_sweep_in_process

FOREIGN_FILES = ["empty", "one byte", "fifty bytes", "an SQLite database of notes"]
COMMANDS = ["run", "report", "export", "train", "resume", "finalize", "sync"]
SWEEP = "kept"  # the sweep whose sweep.json `resume`, `finalize` and `sync` read


def foreign_file(folder: Path, kind: str) -> Path:
    """A file someone made for another purpose, where a tracking URI points by mistake."""
    if kind == "an SQLite database of notes":
        path = folder / "notes.db"
        with sqlite3.connect(path) as db:
            db.execute("create table notes (text)")
            db.execute("insert into notes values ('keep me')")
        return path
    path = folder / "notes.txt"
    path.write_bytes({"empty": b"", "one byte": b"x", "fifty bytes": b"my notes, " * 5}[kind])
    return path


def command_line(command: str, folder: Path, uri: str) -> list[str]:
    """`byol-sweep <command>` with --tracking-uri uri; a sweep to resume, finalize or sync is written first."""
    space = write_space(folder, "tiny", base={"epochs": 1}, grid={"seed": [0]}, algorithm="grid", asha=False)
    train_config = folder / "train.yaml"
    train_config.write_text(yaml.safe_dump({**TINY_BASE, "epochs": 1}))
    storage = folder / "runs"
    (storage / SWEEP).mkdir(parents=True, exist_ok=True)
    (storage / SWEEP / "sweep.json").write_text(json.dumps({
        "storage": str(storage), "tracking_uri": uri, "parent_run_id": "0" * 32, "experiment": SWEEP,
        "space_text": space.read_text(), "space_source": str(space), "num_samples": 1,
    }))
    return {
        "run": ["run", str(space), "--name", "new", "--storage", str(storage), "--no-report"],
        "report": ["report", "--experiment", SWEEP, "--out", str(folder / "report")],
        "export": ["export", "--sweep", SWEEP, "--out", str(folder / "encoder.pt")],
        "train": ["train", "--config", str(train_config), "--out", str(folder / "train")],
        "resume": ["resume", SWEEP, "--storage", str(storage), "--no-report"],
        "finalize": ["finalize", SWEEP, "--storage", str(storage), "--no-report"],
        "sync": ["sync", SWEEP, "--storage", str(storage)],
    }[command] + ["--tracking-uri", uri]


def no_ray(monkeypatch):
    """A command that opened the foreign file would go on to start Ray: make that fail at once."""
    import ray

    from sweep import runner

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started: the tracking store was not refused")

    monkeypatch.setattr(runner, "start_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", FOREIGN_FILES)
def test_a_file_that_is_not_an_mlflow_store_is_refused_and_left_untouched(tmp_path, monkeypatch, capsys, kind, command):
    path = foreign_file(tmp_path, kind)
    before = path.read_bytes()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    no_ray(monkeypatch)
    proc = byol_sweep_in_process(*command_line(command, tmp_path, f"sqlite:///{path}"), cwd=tmp_path,
                                 monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 2, proc
    assert f"{path} is not an MLflow store" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert path.read_bytes() == before
    assert not Path(f"{path}.lock").exists()  # not even a lock file made beside it
    assert not (tmp_path / "runs" / "new").exists()


def test_the_refusal_says_what_the_file_is(tmp_path):
    from sweep.errors import TrackingError
    from sweep.tracking.store import check_store

    reasons = {"empty": "an empty file", "one byte": "not an SQLite database", "fifty bytes": "not an SQLite database",
               "an SQLite database of notes": "an SQLite database without MLflow's tables alembic_version and experiments"}
    for kind, reason in reasons.items():
        path = foreign_file(tmp_path, kind)
        with pytest.raises(TrackingError) as err:
            check_store(f"sqlite:///{path}")
        assert str(err.value).startswith(f"{path} is not an MLflow store ({reason}) and was left untouched; "), err.value
    with pytest.raises(TrackingError, match=r"is not an MLflow store \(a file, and an MLflow file store is a folder\)"):
        check_store((tmp_path / "notes.txt").as_uri())
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(TrackingError, match=rf"{folder} is not an MLflow store \(a folder\)"):
        check_store(f"sqlite:///{folder}")


def test_a_foreign_file_is_refused_under_the_lock_too(tmp_path):
    """A lock file beside it (a sweep creating a store there holds it): checked again under the lock."""
    from sweep.errors import TrackingError
    from sweep.tracking.store import check_store, client_for

    path = foreign_file(tmp_path, "one byte")
    Path(f"{path}.lock").touch()
    for open_it in (check_store, client_for):
        with pytest.raises(TrackingError, match=f"{path} is not an MLflow store"):
            open_it(f"sqlite:///{path}")
    assert path.read_bytes() == b"x"


def test_an_mlflow_store_and_a_new_file_are_still_used(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweep.tracking.store import check_store, not_a_store

    new = f"sqlite:///{tmp_path}/mlflow.db"
    assert not_a_store(new) is None
    check_store(new)  # MLflow makes it
    MlflowClient(new).create_experiment("x")
    assert not_a_store(new) is None
    check_store(new)
    assert MlflowClient(new).get_experiment_by_name("x") is not None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the with ends: nothing listens there


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "auto"])
def test_an_address_where_nothing_answers_is_refused_in_seconds_naming_it(address, monkeypatch):
    from sweep.errors import SweepError
    from sweep.tuner.ray_setup import check_cluster_reachable

    port = closed_port()
    address = address.format(port=port)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what `auto` reaches; ignored by the others
    start = time.monotonic()
    with pytest.raises(SweepError) as err:
        check_cluster_reachable(address)
    assert time.monotonic() - start < 30
    assert f"cannot connect to the Ray cluster at {address}" in str(err.value), err.value
    assert f":{port}" in str(err.value) and "nothing accepted a connection" in str(err.value)


def test_a_listening_address_passes_and_a_malformed_one_says_what_is_allowed():
    from sweep.errors import SweepError
    from sweep.tuner.ray_setup import check_cluster_reachable

    with socket.create_server(("0.0.0.0", 0)) as server:  # listens on this machine's address too
        port = server.getsockname()[1]
        check_cluster_reachable(f"127.0.0.1:{port}")
        check_cluster_reachable(f"ray://127.0.0.1:{port}")
    check_cluster_reachable("local")  # a new local instance: nothing to reach
    for malformed in ("head", "head:port", "head:70000"):
        with pytest.raises(SweepError, match=rf"--address {malformed} is not a Ray cluster's address; allowed: host:port"):
            check_cluster_reachable(malformed)


def test_run_with_an_unreachable_address_is_refused_before_ray_init(tmp_path, monkeypatch, capsys):
    """Through the CLI, with ray.init replaced by a failure: the refusal must come before it."""
    import ray
    from mlflow.tracking import MlflowClient

    if ray.is_initialized():
        pytest.skip("a Ray started in this process is used as it is, whatever --address says")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store exists: the time measured is the refusal's
    called = []
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: called.append(kwargs) or 1 / 0)
    space = write_space(tmp_path, "tiny", base={"epochs": 1}, grid={"seed": [0]}, algorithm="grid", asha=False)
    start = time.monotonic()
    proc = byol_sweep_in_process("run", str(space), "--name", "far", "--storage", str(tmp_path / "runs"),
                                 "--address", "127.0.0.1:1", "--tracking-uri", uri, cwd=tmp_path,
                                 monkeypatch=monkeypatch, capsys=capsys)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2 and not called, (proc, called)
    assert "byol-sweep run: error: cannot connect to the Ray cluster at 127.0.0.1:1" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs" / "far").exists()


TIMED_MAIN = """
import json, sys, time
import mlflow.tracking, sweep.cli, sweep.runner  # imported before the clock starts: on a busy machine they take long
start = time.monotonic()
code = sweep.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.monotonic() - start}))
"""


@pytest.mark.slow  # a fresh Python that imports Ray and torch; it starts no Ray
@pytest.mark.alone  # its 30 s are the command's: no other test's sweep beside it (tests/conftest.py, WorkerRoom)
def test_byol_sweep_run_with_an_unreachable_address_ends_within_30_s(tmp_path, migrated_store):
    """The issue's own case, with the real ray.init, in a fresh process: it hung 240 s. The clock runs
    from `byol-sweep run`'s main to its exit (imports excluded, the store's opening included)."""
    import os
    import subprocess
    import sys

    from tests.sweep.test_cli import ROOT

    uri = new_store(migrated_store, tmp_path)  # made here: its migrations are not the refusal's time
    space = write_space(tmp_path, "tiny", base={"epochs": 1}, grid={"seed": [0]}, algorithm="grid", asha=False)
    proc = subprocess.run(
        [sys.executable, "-c", TIMED_MAIN, "run", str(space), "--name", "far", "--storage", "runs", "--address",
         "127.0.0.1:1", "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT})
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 2, proc.stderr[-3000:]
    assert "cannot connect to the Ray cluster at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
    assert outcome["seconds"] < 30, outcome
    assert not (tmp_path / "runs" / "far").exists()
