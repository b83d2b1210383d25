"""Shared test helpers: tiny but real BYOL configurations for sweeps."""
from __future__ import annotations

import io
import os
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

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

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
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 and a free port; yields its URI."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
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
