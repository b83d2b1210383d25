"""The sweep's own MLflow runs: the parent run that records a sweep (its space, versions, command,
state) and its baselines. The layout is documented in docs/mlflow-layout.md; reports/ reads exactly that."""
from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Param

from sweep.errors import TrackingError
from sweep.space import SweepSpec
from sweep.tracking.secrets import mask_secrets
from sweep.tracking.store import client_for, store_lock
from sweep.tracking.writers import journal_writer, write
from vocabulary import INTERRUPTED, RUNNING

SEARCH, FINAL = "search", "final"  # the two stages of a sweep


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)


def experiment_for(uri: str, experiment: str) -> str:
    """The id of the named MLflow experiment, created if it is not there (artifacts of a local store
    beside its database, in mlartifacts/)."""
    client = client_for(uri)
    with store_lock(uri):
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if uri.startswith("sqlite:///"):
                artifact_location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
            try:
                client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # another driver (on a server) created it first
                if client.get_experiment_by_name(experiment) is None:
                    raise
            exp = client.get_experiment_by_name(experiment)
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {experiment!r} was deleted; restore it with `mlflow experiments "
                            f"restore --experiment-id {exp.experiment_id}` or name another with --experiment")
    return exp.experiment_id


def start_sweep(uri: str, experiment: str, spec: SweepSpec, sweep_name: str, extra_params: dict[str, Any]) -> str:
    """Create (or find, for a resumed sweep) the parent run; returns its id."""
    client = client_for(uri)
    experiment_id = experiment_for(uri, experiment)
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`byol_sweep.role` = 'sweep' and tags.`byol_sweep.sweep_name` = '{sweep_name}'",
        max_results=1,
    )
    if existing:
        run_id = existing[0].info.run_id
        client.set_tag(run_id, "byol_sweep.state", "running")
        return run_id
    tags = {
        "byol_sweep.role": "sweep",
        "byol_sweep.sweep_name": sweep_name,
        "byol_sweep.state": "running",
        "byol_sweep.version": _version("byol-sweep"),
        "byol_sweep.ray_version": _version("ray"),
        "byol_sweep.torch_version": _version("torch"),
        "byol_sweep.mlflow_version": _version("mlflow"),
        "byol_sweep.command": mask_secrets(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),
        "byol_sweep.host": platform.node(),
    }
    commit = _git_commit()
    if commit:
        tags["byol_sweep.git_commit"] = commit
    run = client.create_run(experiment_id, run_name=sweep_name, tags=tags)
    params = {
        "metric": spec.metric,
        "mode": spec.mode,
        "num_samples": spec.num_samples,
        "space_file": Path(spec.source).name,
        "swept": ",".join(spec.swept),
        **{f"space.{k}": d.to_json() for k, d in spec.search.items()},
        **{f"space.{k}": json.dumps({"type": "grid", "values": v}) for k, v in spec.grid.items()},
        **{f"base.{k}": param_value(v) for k, v in spec.base.items()},
        **spec.tracking_params(),  # search, scheduler, scheduler.<key>, and each entry's own (asha.*, optuna.*)
        **extra_params,
    }
    client.log_batch(run.info.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
    if spec.text:
        client.log_text(run.info.run_id, spec.text, "search_space.yaml")
    return run.info.run_id


def metric_record(key: str, value: float, step: int, timestamp: int | None = None) -> dict:
    return {"key": key, "value": float(value), "step": int(step),
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp}


def end_sweep(uri: str, parent_run_id: str, state: str) -> None:
    """Mark the sweep `finished` (every trial and final-stage run ended) or `interrupted`."""
    writer = journal_writer(parent_run_id)
    if writer is not None and writer.journal.complete:
        now = int(time.time() * 1000)
        if state == "interrupted":  # runs the callbacks could not end (the driver died or raised)
            for run_id in writer.state.runs(**{"mlflow.parentRunId": parent_run_id, "status": RUNNING}):
                writer.write("set_tag", run_id=run_id, key="status", value=INTERRUPTED)
                writer.write("set_terminated", run_id=run_id, status="KILLED", end_time=now)
        writer.write("set_tag", run_id=parent_run_id, key="byol_sweep.state", value=state)
        if state == "finished":
            writer.write("set_terminated", run_id=parent_run_id, status="FINISHED", end_time=now)
        return
    client = client_for(uri)
    if state == "interrupted":  # runs the callbacks could not end (the driver died or raised)
        parent = client.get_run(parent_run_id)
        for run in client.search_runs([parent.info.experiment_id], max_results=10000, filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.status = '{RUNNING}'")):
            client.set_tag(run.info.run_id, "status", INTERRUPTED)
            client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(parent_run_id, "byol_sweep.state", state)
    if state == "finished":
        client.set_terminated(parent_run_id, "FINISHED")


def end_abandoned(uri: str, parent_run_id: str) -> bool:
    """A sweep whose driver died without ending it (SIGKILL, a lost node) stays `running`, and so do the
    trials it ran. Called only where the journal's lock shows no driver holds the sweep any more: the
    sweep and the runs it left running become `interrupted` (what `resume` continues). True if it was."""
    writer = journal_writer(parent_run_id)
    journalled = writer.state.tags.get(parent_run_id, {}) if writer is not None else {}
    state = journalled.get("byol_sweep.state") or client_for(uri).get_run(parent_run_id).data.tags.get("byol_sweep.state")
    if state != "running":
        return False
    end_sweep(uri, parent_run_id, "interrupted")
    return True


def log_baselines(uri: str, parent_run_id: str, split: str, baselines: dict[str, float], seed: int | None = None) -> None:
    """The baselines (trainer.baselines.baseline_accuracies) of a split, on the parent run:
    baseline.<name>.<split>, or baseline.<name>.<split>.seed_<seed> for one seed's init."""
    now, suffix = int(time.time() * 1000), "" if seed is None else f".seed_{seed}"
    write(uri, parent_run_id, "log_batch", run_id=parent_run_id,
          metrics=[metric_record(f"baseline.{name}.{split}{suffix}", value, 0, now) for name, value in baselines.items()])
