"""The trained encoders where users look for them: each full-budget trial's and final-stage run's
encoder logged to its MLflow run as `model/encoder.pt` (beside `model/config.json`), its Ray
folder tagged on the run, and `byol-sweep export` / encoder_from_run to get one back."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from sweep.errors import SweepError
from sweep.tracking.store import client_for, mask_uri, resolve_tracking_uri
from sweep.tracking.writers import drain_seconds, wait_sent
from vocabulary import COMPLETED

ARTIFACT_DIR = "model"
ENCODER_FILE = "encoder.pt"
CHECKPOINT_FILE = "trainer.pt"  # a trial's checkpoint in its Tune checkpoint folder (sweep/tuner/trainable.py)


def log_models(uri: str, experiment_id: str, parent_run_id: str, results, role: str) -> int:
    """After a Tuner ends: for each trial whose run completed, log the encoder of its last
    checkpoint and tag its Ray folder (`byol_sweep.trial_dir`). Returns how many were logged."""
    client = client_for(uri)
    runs = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and "
                                                   f"tags.`byol_sweep.role` = '{role}'", max_results=1000,
                                  page_token=token)
        runs.update({r.data.tags.get("byol_sweep.trial_id"): r for r in page})
        token = page.token
        if not token:
            break
    logged = 0
    for result in results:
        run = runs.get((result.metrics or {}).get("trial_id"))
        if run is None:
            continue
        if result.path:
            client.set_tag(run.info.run_id, "byol_sweep.trial_dir", str(result.path))
        checkpoint = result.checkpoint
        if run.data.tags.get("status") != COMPLETED or checkpoint is None or ARTIFACT_DIR in artifacts_of(client, run):
            continue
        with checkpoint.as_directory() as folder:
            log_encoder(client, run.info.run_id, Path(folder) / CHECKPOINT_FILE,
                        json.dumps(dict(run.data.params), indent=2, sort_keys=True))
        logged += 1
    return logged


def save_model(checkpoint, folder: str | Path, params: dict[str, str]) -> Path | None:
    """The encoder of a trial's last checkpoint (a Tune Checkpoint) and its params, written beside the
    trial's results as <folder>/model/encoder.pt and config.json: journalled to its MLflow run as soon
    as the trial ends, and read by `export` when MLflow has no artifact. None without a checkpoint."""
    from trainer.export import encoder_file_from_checkpoint  # torch: heavy, and only here

    if checkpoint is None:
        return None
    out = Path(folder) / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as d:
        encoder_file_from_checkpoint(Path(d) / CHECKPOINT_FILE, out / ENCODER_FILE)
    (out / "config.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    return out


def log_encoder(client, run_id: str, checkpoint: Path, config_json: str) -> None:
    """The encoder of a trainer checkpoint as the run's model/encoder.pt, beside model/config.json."""
    from trainer.export import encoder_file_from_checkpoint  # torch: heavy, and only here

    with tempfile.TemporaryDirectory() as out:
        encoder_file_from_checkpoint(checkpoint, Path(out) / ENCODER_FILE)
        (Path(out) / "config.json").write_text(config_json)
        client.log_artifacts(run_id, out, ARTIFACT_DIR)


def artifacts_of(client, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


def export_encoder(uri: str, run_id: str, out: str | Path) -> Path:
    """Download a run's logged encoder to `out` (a file)."""
    from mlflow.exceptions import MlflowException  # heavy: MLflow is imported only when a store is used


    client = client_for(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise SweepError(f"no run {run_id} in the MLflow store {uri}") from None
    out = Path(out)
    if f"{ARTIFACT_DIR}/{ENCODER_FILE}" not in {a.path for a in client.list_artifacts(run_id, ARTIFACT_DIR)}:
        return _encoder_from_trial_folder(run, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{ENCODER_FILE}", tmp)
        Path(local).replace(out)
    return out


def _encoder_from_trial_folder(run, out: Path) -> Path:
    """A completed run whose encoder never reached MLflow (its server was away): the encoder its
    trial left in its Ray folder (byol_sweep.trial_dir), or one made from that folder's latest checkpoint."""
    import shutil  # only for this fallback

    from trainer.export import encoder_file_from_checkpoint  # torch: heavy, and only here

    name, folder = run.info.run_name, run.data.tags.get("byol_sweep.trial_dir")
    if run.data.tags.get("status") != COMPLETED:
        raise SweepError(f"run {run.info.run_id} ({name}) has no logged encoder: only trials that ran the full "
                         "budget and final-stage runs have one")
    if not folder or not Path(folder).is_dir():
        raise SweepError(f"run {run.info.run_id} ({name}) has no logged encoder, and its trial's folder "
                         f"({folder or 'not recorded'}) is not on this machine: run `byol-sweep sync` for its sweep "
                         "where that folder is")
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = Path(folder) / ARTIFACT_DIR / ENCODER_FILE
    if saved.is_file():
        shutil.copyfile(saved, out)
        return out
    checkpoints = sorted(Path(folder).glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    if not checkpoints:
        raise SweepError(f"run {run.info.run_id} ({name}) has no logged encoder and no checkpoint in {folder}")
    encoder_file_from_checkpoint(checkpoints[-1], out)
    return out


def selected_run(uri: str, experiment: str) -> str:
    """The run whose encoder stands for a sweep: the first seed of the final stage's selected
    configuration, else the search's best full-budget trial."""

    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SweepError(f"no MLflow experiment {experiment!r} in {uri}")
    parents = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'sweep'", max_results=1,
                                 order_by=["attributes.start_time DESC"])
    if not parents:
        raise SweepError(f"experiment {experiment!r} holds no sweep")
    parent = parents[0]
    finals = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
                                                     "tags.`byol_sweep.role` = 'final' and tags.status = 'completed' "
                                                     "and tags.`final.rank` = '1'", max_results=1000)
    if finals:
        metric, mode = parent.data.params.get("metric", "knn_acc"), parent.data.params.get("mode", "max")
        by_group: dict[str, list] = {}
        for r in finals:
            by_group.setdefault(r.data.tags.get("final.group", ""), []).append(r)

        def mean(runs):
            return sum(r.data.metrics.get(metric, float("nan")) for r in runs) / len(runs)

        group = (max if mode == "max" else min)(by_group, key=lambda g: mean(by_group[g]))
        return min(by_group[group], key=lambda r: int(r.data.params.get("seed", 0))).info.run_id
    best = parent.data.tags.get("byol_sweep.best_trial_id")
    if best:
        found = client.search_runs([exp.experiment_id], f"tags.`byol_sweep.trial_id` = '{best}' and "
                                                        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        if found:
            return found[0].info.run_id
    raise SweepError(f"sweep {experiment!r} has no completed trial or final-stage run to export")


def encoder_from_run(run_id: str, tracking_uri: str | None = None):
    """A run's logged encoder as an nn.Module in eval mode, ready for feature extraction
    (images (N, 3, S, S) in [0, 1] -> features (N, D); see trainer.export.load_encoder)."""
    from trainer.export import load_encoder  # torch: heavy, and only here


    with tempfile.TemporaryDirectory() as tmp:
        return load_encoder(export_encoder(resolve_tracking_uri(tracking_uri), run_id, Path(tmp) / ENCODER_FILE))


def keep_encoders(uri: str, experiment_id: str, parent_run_id: str, results, role: str) -> None:
    """Log each completed run's encoder to MLflow; a failure to do so is said, never fatal."""
    left = wait_sent(parent_run_id, drain_seconds())
    if left:  # the runs are not in MLflow yet: their checkpoints stay on disk
        print(f"the encoders are not logged to MLflow: {left} records of this sweep are still unsent",
              file=sys.stderr, flush=True)
        return
    try:
        n = log_models(uri, experiment_id, parent_run_id, results, role)
    except Exception as err:  # the checkpoints stay on disk; `byol-sweep export` needs the artifact
        print(f"the encoders could not be logged to MLflow: {mask_uri(str(err).strip().splitlines()[-1])}",
              file=sys.stderr, flush=True)
        return
    if n:
        print(f"logged {n} encoder(s) to MLflow (model/encoder.pt of each run; `byol-sweep export` gets one)",
              flush=True)
