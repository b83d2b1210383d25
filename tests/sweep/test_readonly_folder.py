"""A sweep's folder on read-only storage (results shared for analysis): `report` and `sync` read it,
`resume` refuses in one sentence, and what cannot be sent from there is said in one sentence; never a
traceback, and the folder is left as it was. The folder is a read-only bind mount in a user namespace
of its own (`unshare -rm`), so the test holds for root too, whom permission bits do not stop."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from sweep.tracking.journal import Journal
from tests.conftest import new_store, write_space
from tests.sweep.test_cli import CLI, ROOT, byol_sweep

pytestmark = pytest.mark.slow  # a real sweep on Ray, then byol-sweep in subprocesses

READ_ONLY = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'


def read_only_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", READ_ONLY, "sh", "/tmp", "true"], capture_output=True).returncode == 0


def on_read_only(folder, *args, cwd):
    """byol-sweep *args with folder mounted read-only for it alone."""
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(["unshare", "-rm", "sh", "-c", READ_ONLY, "sh", str(folder), *CLI, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": path})


def snapshot(folder) -> dict:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()
            and not p.is_socket()}


@pytest.mark.skipif(not read_only_namespaces(), reason="needs `unshare -rm` (user and mount namespaces) for a "
                                                       "read-only bind mount")
def test_reading_commands_work_on_a_read_only_sweep_folder_and_writing_ones_say_why_not(tmp_path, migrated_store):
    uri = new_store(migrated_store, tmp_path)
    space = write_space(tmp_path, "shared", base={"epochs": 1}, grid={"seed": [0]}, algorithm="grid", asha=False)
    byol_sweep("run", str(space), "--name", "shared", "--storage", "runs", "--tracking-uri", uri, "--no-report",
               "--max-failures", "0", cwd=tmp_path)
    folder = tmp_path / "runs" / "shared"
    before = snapshot(folder)

    report = on_read_only(folder, "report", "--experiment", "shared", "--tracking-uri", uri, cwd=tmp_path)
    assert report.returncode == 0 and "report written" in report.stdout, report.stderr
    synced = on_read_only(folder, "sync", "shared", "--storage", "runs", "--tracking-uri", uri, cwd=tmp_path)
    assert synced.returncode == 0 and "MLflow has every record of its journal" in synced.stdout, synced.stderr
    resumed = on_read_only(folder, "resume", "shared", "--storage", "runs", "--tracking-uri", uri, "--no-report",
                           cwd=tmp_path)
    assert resumed.returncode == 2 and resumed.stderr == (
        f"byol-sweep resume: error: {folder} is not writable (read-only storage?), and this command writes there (the "
        "MLflow journal, checkpoints, state); run it where that folder is writable, or on a writable copy of it\n")
    assert snapshot(folder) == before

    # a record MLflow has not got, and a torn last line: read, named, not sent (that would write the folder)
    journal = Journal(folder / "mlflow-journal.jsonl")
    journal.append("set_tag", run_id=json.loads((folder / "sweep.json").read_text())["parent_run_id"], key="note",
                   value="late")
    with open(journal.path, "a") as f:
        f.write('{"id": 99, "op": "set_')
    before = snapshot(folder)
    report = on_read_only(folder, "report", "--experiment", "shared", "--tracking-uri", uri, cwd=tmp_path)
    assert report.returncode == 0 and "report written" in report.stdout
    assert report.stderr == (f"1 MLflow records of sweep shared wait in its journal, and {folder} is not writable "
                             "(sending marks each record sent there); the report misses them until `byol-sweep sync "
                             "shared` runs where that folder is writable\n")
    synced = on_read_only(folder, "sync", "shared", "--storage", "runs", "--tracking-uri", uri, cwd=tmp_path)
    assert synced.returncode == 2 and synced.stderr == (
        f"byol-sweep sync: error: sweep shared's 1 MLflow records in its journal cannot be sent from here: {folder} is "
        "not writable (sending marks each record sent there); run `byol-sweep sync shared` where that folder is "
        "writable\n")
    assert snapshot(folder) == before
    writable = byol_sweep("sync", "shared", "--storage", "runs", "--tracking-uri", uri, cwd=tmp_path, check=False)
    assert "sent 1 MLflow records" in writable.stdout + writable.stderr  # and the torn line is named there
