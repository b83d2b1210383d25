"""Shared test helpers: tiny but real BYOL configurations for sweeps."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 and a free port; yields its URI."""
    import subprocess
    import sys
    import time
    import urllib.request

    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
