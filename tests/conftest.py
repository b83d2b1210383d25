"""Shared test helpers: tiny but real BYOL configurations for sweeps."""
from __future__ import annotations

import fcntl
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

# Small enough that a trial epoch takes about a second on one CPU core, on real digits.
TINY_BASE = {
    "dataset": "digits",
    "backbone": "small_cnn",
    "train_limit": 256,
    "batch_size": 64,
    "projector_hidden": 64,
    "projector_out": 32,
    "knn_bank_size": 256,
    "knn_queries": 200,
    "knn_k": 20,
    "linear_probe": True,
}


def write_space(folder: Path, name: str, **sections) -> Path:
    """Write a search space YAML with the tiny base (sections override/extend it); no final stage
    unless `final` is given."""
    swept = {*sections.get("search", {}), *sections.get("grid", {})}
    base = {k: v for k, v in {**TINY_BASE, **sections.pop("base", {})}.items() if k not in swept}
    sections.setdefault("final", False)  # tests that exercise the final stage ask for it
    data = {"name": name, "base": base, **sections}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One small local Ray instance per test module, never attached to another cluster."""
    import ray

    temp = Path("/tmp") / f"bst-{os.getpid()}-{tmp_path_factory.getbasetemp().name[-6:]}"
    ray.init(address="local", num_cpus=2, object_store_memory=150 * 1024 * 1024, _temp_dir=str(temp),
             include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 and a free port, that can be SIGKILLed and started again
    on the same port and SQLite file."""

    def __init__(self, folder: Path, migrated: Path | None = None):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None
        if migrated is not None:  # its store made already (migrated_store): the first start skips the migrations
            shutil.copyfile(migrated, folder / "server.db")

    def start(self, timeout: float = 120) -> "MlflowServer":
        import subprocess
        import sys
        import time

        log = open(self.folder / "server.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not self.healthy():
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        self.answers(f"{self.uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout)  # its slow first request
        return self

    def healthy(self) -> bool:
        return self.answers(f"{self.uri}/health", 2)

    @staticmethod
    def answers(url: str, timeout: float) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its workers, at once
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, migrated_store):
    """A real `mlflow server` on 127.0.0.1 and a free port; yields its URI."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), migrated_store).start()
    yield server.uri
    server.kill()


def truncated_png(path) -> None:
    """A real PNG of noise cut in half: its header passes the driver's check, no decoder reads it."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture(scope="session", autouse=True)
def own_config_home(tmp_path_factory):
    """The signing key (sweep/trust.py) of the test session, not the user's: every sweep the tests run,
    in this process or a child, keys under a temporary XDG_CONFIG_HOME."""
    saved = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if saved is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = saved


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once per session: a new store runs every one of MLflow's
    migrations (seconds), a copy of this one (new_store) is the same store without them."""
    from mlflow.tracking import MlflowClient  # only the sessions that make a store import MLflow

    folder = tmp_path_factory.mktemp("migrated-store")
    saved = os.getcwd()
    os.chdir(folder)  # MLflow makes ./mlruns for the store's default experiment
    try:
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments(max_results=1)
    finally:
        os.chdir(saved)
    return folder / "mlflow.db"


def new_store(migrated: Path, folder: Path) -> str:
    """The tracking URI of a new, already migrated MLflow store folder/mlflow.db: for tests whose
    point is not the store's creation."""
    shutil.copyfile(migrated, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


# -- tests side by side (pytest-xdist) ---------------------------------------------------------------
# Every test module runs on one worker (its module fixtures, its Ray, are made once), except these,
# whose slow tests share nothing (no module fixture): each of their test functions (all its parameters
# together) goes to whichever worker is free.
SPREAD = ("tests/sweep/test_cli.py", "tests/sweep/test_server_loss.py", "tests/sweep/test_logged_train.py",
          "tests/sweep/test_inputs.py", "tests/test_benchmarks.py", "tests/reports/test_ablation.py",
          "tests/reports/test_importance.py")


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or in a SPREAD module its test function."""
    module, _, test = nodeid.partition("::")
    return f"{module}::{test.split('[')[0]}" if module in SPREAD else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduling by scope, with scope_of's units in the order of collection (below)."""
    if config.getoption("dist") != "load":  # a --dist of the user's own choice
        return None
    from xdist.scheduler import LoadScopeScheduling  # only under xdist

    class ByScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return ByScope(config, log)


def pytest_collection_modifyitems(config, items):
    """Under xdist: the `alone` tests first (WorkerRoom), then the units with slow tests, each in its own
    order, so that the long ones start early and the many short ones fill the gaps at the end."""
    if not hasattr(config, "workerinput"):
        return
    slow = {scope_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (not alone(item), scope_of(item.nodeid) not in slow))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """The controller gives its workers one folder for the room's locks (WorkerRoom)."""
    config = node.config
    if not hasattr(config, "_test_room"):
        config._test_room = tempfile.mkdtemp(prefix="pytest-room-")
    node.workerinput["test_room"] = config._test_room


def pytest_unconfigure(config):
    if hasattr(config, "_test_room"):
        shutil.rmtree(config._test_room, ignore_errors=True)


class WorkerRoom:
    """Under pytest-xdist: tests marked `alone` run while no other worker runs a test (they wait for the
    test under way to end; the other workers wait for them); the other tests run side by side. A waiting
    `alone` test holds the turnstile, so that no new test slips in before it; `alone` tests that follow
    each other on a worker keep the room between them."""

    def __init__(self, folder: str):
        self.turnstile = open(os.path.join(folder, "turnstile"), "a")
        self.room = open(os.path.join(folder, "room"), "a")
        self.held_alone = False

    def enter(self, alone: bool) -> None:
        if self.held_alone:
            return
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        self.held_alone = alone

    def leave(self, keep: bool) -> None:
        if not (self.held_alone and keep):
            fcntl.flock(self.room, fcntl.LOCK_UN)
            self.held_alone = False


def alone(item) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup (module fixtures included), call and teardown of each test inside the room."""
    folder = getattr(item.config, "workerinput", {}).get("test_room")
    if folder is None:  # one process: nothing runs beside it
        yield
        return
    if not hasattr(item.config, "_room"):
        item.config._room = WorkerRoom(folder)
    item.config._room.enter(alone(item))
    try:
        yield
    finally:
        item.config._room.leave(keep=alone(nextitem))
