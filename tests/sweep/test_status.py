"""`byol-sweep status NAME`: the console's view of a sweep, read from its folder and a real SQLite
MLflow store, without making a file."""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from sweep.errors import SweepError, TrackingError
from sweep.space import load_space
from sweep.state import SweepRun, make_private_dir
from sweep.status import show_status
from sweep.tracking.journal import Journal
from sweep.tracking.writers import journal_path
from tests.conftest import new_store, write_space


def recorded_sweep(tmp_path: Path, state: str = "running") -> tuple[str, str]:
    """A sweep of 4 trials (ASHA, 4 epochs, 2 at once) as its driver leaves it in MLflow and its folder:
    one completed, one stopped early at epoch 1, one running at epoch 2, one not started."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, "s", base={"epochs": 4}, search={"base_lr": {"loguniform": [0.05, 2.0]}},
                        num_samples=4, asha={"grace_period": 1, "reduction_factor": 2, "max_epochs": 4})
    spec = load_space(str(space))
    client = MlflowClient(uri)
    exp = client.create_experiment("s")
    parent = client.create_run(exp, run_name="s", tags={
        "byol_sweep.role": "sweep", "byol_sweep.state": state, "byol_sweep.best_trial_id": "00000",
        "byol_sweep.best_metric": "0.612345678"}).info.run_id
    for i, (status, epochs) in enumerate([("completed", 4), ("stopped_early", 1), ("running", 2)]):
        tags = {"mlflow.parentRunId": parent, "byol_sweep.role": "trial", "byol_sweep.trial_id": f"0000{i}",
                "status": status, **({"stopped_epoch": "1"} if status == "stopped_early" else {})}
        run = client.create_run(exp, run_name=f"trial_0000{i}", tags=tags).info.run_id
        client.log_batch(run, metrics=[Metric(k, v, 0, e) for e in range(1, epochs + 1)
                                       for k, v in (("knn_acc", 0.612345678 - 0.1 * i + 0.01 * e), ("epoch_s", 30.0))])
    storage = str(tmp_path / "runs")
    run = SweepRun(name="s", spec=spec, storage=storage, uri=uri, experiment="s", experiment_id=exp,
                   parent_run_id=parent, resources={"cpu": 1, "gpu": 0}, concurrency=2)
    make_private_dir(run.state_dir)
    run.save({"checkpoint_every": 1, "max_failures": 0})
    return storage, uri


def files_under(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for folder in folders for p in folder.rglob("*")
            if p.is_file()}


def test_status_prints_each_trials_epoch_and_metric_and_the_progress_of_a_running_sweep(tmp_path, monkeypatch):
    storage, uri = recorded_sweep(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    journal = Journal(journal_path(Path(storage) / "s"))
    journal.hold()  # the sweep's driver
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = files_under(tmp_path)
    out = io.StringIO()
    try:
        assert show_status("s", storage, None, out=out) == 0
    finally:
        journal.release()
    assert files_under(tmp_path) == before  # read-only: no store, lock or other file made
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"sweep s \(\d\d:\d\d:\d\d\): its driver is running; MLflow sqlite:///.*/mlflow\.db, "
                        r"experiment s", lines[0]), lines[0]
    # 7 epochs trained, 6 left at most (the running trial's 2, the pending one's 4), 30 s each, 2 at once
    assert lines[1:] == [
        "search: 7 of at most 13 epochs (54%) | ETA ~2 min (rough) | 2 of 4 trials ended (1 running, 1 pending, "
        "1 completed, 1 stopped early) | best knn_acc 0.6123 (trial_00000)",
        "  trial_00000  completed      epoch 4/4  knn_acc 0.6523",
        "  trial_00001  stopped early  epoch 1/4  knn_acc 0.5223",
        "  trial_00002  running        epoch 2/4  knn_acc 0.4323"]


def test_status_says_when_the_driver_stopped_without_ending_the_sweep(tmp_path, monkeypatch):
    storage, uri = recorded_sweep(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = io.StringIO()
    show_status("s", storage, None, out=out)
    text = out.getvalue()
    assert "its driver is not running (it stopped without ending the sweep: `byol-sweep resume s`)" in text
    assert "ETA" not in text and "search: 7 of at most 13 epochs (54%) | 2 of 4 trials ended" in text


def test_status_never_makes_a_store_and_names_a_sweep_it_does_not_know(tmp_path, monkeypatch):
    storage, uri = recorded_sweep(tmp_path)
    missing = tmp_path / "other.db"
    with pytest.raises(TrackingError, match=rf"there is no MLflow store at {re.escape(str(missing))}; give the "
                                            r"--tracking-uri sweep s logs to \(sqlite:///"):
        show_status("s", storage, f"sqlite:///{missing}", out=io.StringIO())
    assert not os.path.exists(missing)
    with pytest.raises(SweepError, match="no sweep named 'nope' in .*; sweeps there: s"):
        show_status("nope", storage, uri, out=io.StringIO())


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_status_after_a_real_sweep_shows_what_its_console_showed(tmp_path, capsys, migrated_store):
    from sweep.runner import SweepOptions, run_sweep  # Ray: only in this slow test

    space = write_space(tmp_path, "tiny", base={"epochs": 2}, search={"base_lr": {"loguniform": [0.05, 2.0]}},
                        num_samples=2, asha=False)
    uri = new_store(migrated_store, tmp_path)
    storage = str(tmp_path / "runs")
    run_sweep(str(space), SweepOptions(name="tiny", storage=storage, tracking_uri=uri, max_failures=0))
    console = capsys.readouterr().out
    assert "\r" not in console and "\x1b[" not in console
    assert re.search(r"\] search: 4 of 4 epochs \(100%\) \| 2 of 2 trials ended \(2 completed\) \| best knn_acc "
                     r"\d\.\d+ \(trial_\w+: base_lr=\d\.\d{3,4}\) \| trial_\w+ completed at epoch 2", console), console
    out = io.StringIO()
    show_status("tiny", storage, uri, out=out)
    lines = out.getvalue().splitlines()
    assert "its driver is not running; sweep finished" in lines[0]
    assert lines[1].startswith("search: 4 of 4 epochs (100%) | 2 of 2 trials ended (2 completed) | best knn_acc ")
    assert len(lines) == 4 and all(re.fullmatch(r"  trial_\w+  completed      epoch 2/2  knn_acc \d\.\d+", x)
                                   for x in lines[2:]), lines
