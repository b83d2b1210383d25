"""`resume` loads Ray's pickles only as a driver of this user left them (sweep/trust.py): a sweep
interrupted for real, its pickles swapped for ones that would run code, refused each time without
running it; untouched, it resumes; without signatures (a sweep older than them), `trust` lets it."""
from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import time

import pytest

from sweep.trust import MANIFEST, Folder, first_untrusted
from tests.conftest import new_store, write_space
from tests.sweep.test_cli import CLI, ROOT, byol_sweep


class CreatesAFile:
    """Unpickling it opens (creates) the marker file: what a planted pickle could do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def checkpoints(folder) -> dict[str, int]:
    """{trial folder: its newest checkpoint's index}."""
    newest: dict[str, int] = {}
    for path in folder.glob("train_byol_*/checkpoint_*"):
        newest[path.parent.name] = max(newest.get(path.parent.name, -1), int(path.name.split("_")[1]))
    return newest


def drive_until(args, cwd, env, log, ready, timeout_s=300) -> str:
    """Start the command, SIGTERM it once ready() holds (a scheduler's stop), return its output."""
    with open(log, "w") as out:
        driver = subprocess.Popen([*CLI, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True, env=env)
        deadline = time.time() + timeout_s
        while time.time() < deadline and driver.poll() is None and not ready():
            time.sleep(0.5)
        assert driver.poll() is None, log.read_text()[-3000:]
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=180)
    assert driver.returncode != 0, log.read_text()[-3000:]
    return log.read_text()


@pytest.mark.slow
def test_a_planted_pickle_is_refused_and_never_runs_and_trust_lets_an_unsigned_sweep_resume(
        tmp_path, monkeypatch, migrated_store):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the key: this test's, here and in the commands
    env = {**os.environ, "PYTHONPATH": ROOT}
    space = write_space(tmp_path, "planted", base={"epochs": 10}, grid={"seed": [0, 1]}, algorithm="grid", asha=False)
    uri = new_store(migrated_store, tmp_path)
    folder = tmp_path / "runs" / "planted"
    resume = ["resume", "planted", "--storage", "runs", "--tracking-uri", uri, "--no-report"]

    drive_until(["run", str(space), "--name", "planted", *resume[2:]], tmp_path, env, tmp_path / "run.log",
                lambda: len(checkpoints(folder)) == 2)
    assert (folder / MANIFEST).exists() and first_untrusted(Folder(str(folder))) is None

    trial = sorted(folder.glob("train_byol_*"))[0].name
    searcher_state = next(folder.glob("basic-variant-state-*.json")).name  # cloudpickle, whatever its suffix
    markers = []
    for planted in ("tuner.pkl", f"{trial}/params.pkl", searcher_state):
        markers.append(tmp_path / f"marker-{len(markers)}")
        original = (folder / planted).read_bytes()
        (folder / planted).write_bytes(pickle.dumps(CreatesAFile(str(markers[-1]))))
        refused = byol_sweep(*resume, cwd=tmp_path, check=False, env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert f"sweep planted's Ray state is refused: {folder}/{planted} does not match its signature" in refused.stderr
        assert "`byol-sweep trust planted --storage runs`" in refused.stderr
        assert not markers[-1].exists()
        (folder / planted).write_bytes(original)

    # untouched, it resumes (stopped again part-way: its folder is signed again as the driver stops)
    before = checkpoints(folder)
    out = drive_until(resume, tmp_path, env, tmp_path / "resume.log",
                      lambda: any(n > before.get(t, -1) for t, n in checkpoints(folder).items()))
    assert "resuming sweep planted" in out and first_untrusted(Folder(str(folder))) is None

    # a sweep made before byol-sweep signed Ray's state: refused, until its user trusts it
    (folder / MANIFEST).unlink()
    refused = byol_sweep(*resume, cwd=tmp_path, check=False, env=env)
    assert refused.returncode == 2 and f"{folder} has no {MANIFEST}" in refused.stderr, refused.stderr
    trusted = byol_sweep("trust", "planted", "--storage", "runs", cwd=tmp_path, env=env)
    assert re.search(rf"signed \d+ Ray state files in {folder} with your key", trusted.stdout), trusted.stdout
    resumed = byol_sweep(*resume, cwd=tmp_path, env=env)
    assert "sweep planted finished: 2 completed" in resumed.stdout, resumed.stdout[-3000:]
    assert not any(marker.exists() for marker in markers)
