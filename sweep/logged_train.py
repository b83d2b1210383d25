"""`byol-sweep train --tracking-uri`: one standalone run logged to MLflow as a sweep's trial is
(docs/mlflow-layout.md, "Standalone runs"): every TrainConfig field as a param, each epoch's
metrics, a status, the output folder as `byol_sweep.trial_dir`, and the encoder as
`model/encoder.pt` beside `model/config.json`.

Records go through a journal in the output folder first (sweep/journal.py), so a tracking server
that goes away loses nothing: training goes on, and `byol-sweep sync <output folder>` (or
`train --resume`) sends what is left, each record once.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sweep.errors import TrackingError
from sweep.tracking import encoders
from sweep.tracking.encoders import ARTIFACT_DIR, ENCODER_FILE, artifacts_of
from sweep.tracking.journal import Journal, JournalBusy, JournalReadOnly
from sweep.tracking.runs import experiment_for, metric_record, param_value
from sweep.tracking.secrets import mask_secrets
from sweep.tracking.store import check_store, client_for, mask_uri
from sweep.tracking.writers import close_journal, journal_path, open_journal, sync_journal
from trainer.config import TrainConfig
from trainer.loop import Diverged
from trainer.standalone import CHECKPOINT, train_to_folder
from vocabulary import COMPLETED, DIVERGED, EPOCH_METRICS, FAILED, FINAL_METRICS, INTERRUPTED, RUNNING

RUN_FILE = "mlflow-run.json"  # in the output folder: the experiment and the run (its journal placeholder)
DEFAULT_EXPERIMENT = "byol-train"


def train_logged(config: TrainConfig, out: str | Path, uri: str, experiment: str | None = None,
                 resume: bool = False, log=print) -> dict:
    """Train as trainer.standalone.train_to_folder does, logging to MLflow at `uri`; returns the
    final metrics ({} if training diverged)."""
    out = Path(out)
    check_store(uri)
    saved = _saved_run(out) if resume else None
    if saved and experiment and saved["experiment"] != experiment:
        raise TrackingError(f"{out} was logged to MLflow experiment {saved['experiment']!r}; resume it there "
                            f"(drop --experiment, or give --experiment {saved['experiment']})")
    experiment = (saved or {}).get("experiment") or experiment or DEFAULT_EXPERIMENT
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(f"output folder {out} cannot be created: {err.strerror}; give a writable folder "
                            "(--out DIR)") from None
    key = str(out.resolve())  # the journal's key in this process
    probe = Journal(journal_path(out))
    try:
        probe.hold(wait=False)  # open_journal would wait for another process's lock
    except JournalBusy:
        raise TrackingError(f"another `byol-sweep train` is writing to {out}; give another --out") from None
    probe.release()
    writer = open_journal(uri, key, out, f"byol-sweep sync {out} --tracking-uri URI", new=True)
    if saved:
        run = saved["run"]
        writer.write("log_batch", run_id=run, tags={"status": RUNNING})
        writer.write("update_run", run_id=run, status="RUNNING")
    else:
        run = writer.write("create_run", experiment_id=experiment_for(uri, experiment), run_name=out.name,
                           start_time=int(time.time() * 1000),
                           tags={"byol_sweep.role": "train", "status": RUNNING,
                                 "byol_sweep.trial_dir": str(out.resolve()),
                                 "policy": str(config.policy), "seed": str(config.seed)})
        writer.write("log_batch", run_id=run, params={k: param_value(v) for k, v in config.to_dict().items()})
        (out / RUN_FILE).write_text(json.dumps({"experiment": experiment, "run": run,
                                                "tracking_uri": mask_uri(uri)}, indent=2))
    log(f"logging to MLflow {mask_uri(uri)}, experiment {experiment!r}, run {out.name}")

    def log_epochs(history: list[dict]) -> None:
        logged = writer.state.last_step.get(run, 0)
        for metrics in history:
            if metrics["epoch"] > logged:
                now = int(time.time() * 1000)
                writer.write("log_batch", run_id=run, metrics=[
                    metric_record(k, metrics[k], metrics["epoch"], now) for k in (*EPOCH_METRICS, *FINAL_METRICS)
                    if k in metrics])

    status, terminated, final = FAILED, "FAILED", {}
    try:
        final = train_to_folder(config, out, resume=resume, log=log, on_epoch=log_epochs)
        status, terminated = COMPLETED, "FINISHED"
    except Diverged as err:
        status = DIVERGED
        writer.write("set_tag", run_id=run, key="error", value=mask_secrets(str(err))[:500])
        log(f"training diverged: {err}")
    except KeyboardInterrupt:
        status, terminated = INTERRUPTED, "KILLED"
        raise
    except Exception as err:
        lines = str(err).strip().splitlines()
        writer.write("set_tag", run_id=run, key="error", value=mask_secrets(lines[-1] if lines else type(err).__name__)[:500])
        raise
    finally:
        writer.write("set_tag", run_id=run, key="status", value=status)
        writer.write("set_terminated", run_id=run, status=terminated, end_time=int(time.time() * 1000))
        ids = writer.journal.ids
        if not close_journal(key) and status == COMPLETED:
            try:
                log_encoder(uri, out, ids().get(run, run), log)
            except Exception as err:  # the records are in; only the artifact is missing
                lines = str(err).strip().splitlines()
                print(f"the encoder could not be logged to MLflow ({mask_secrets(lines[-1] if lines else type(err).__name__)}); "
                      f"`byol-sweep sync {out} --tracking-uri URI` logs it", file=sys.stderr, flush=True)
    return final if status == COMPLETED else {}


def log_encoder(uri: str, out: Path, run_id: str, log=print) -> None:
    """The encoder of out/checkpoint.pt as the run's model/encoder.pt, beside model/config.json."""
    encoders.log_encoder(client_for(uri), run_id, out / CHECKPOINT, (out / "config.json").read_text())
    log(f"encoder logged to MLflow run {run_id} as {ARTIFACT_DIR}/{ENCODER_FILE} "
        f"(`byol-sweep export {run_id}` writes it to a file)")


def _saved_run(out: Path) -> dict | None:
    try:
        return json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_train_folder(path: str | Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def sync_train_folder(folder: str | Path, uri: str) -> tuple[int, int, list[str]]:
    """`byol-sweep sync <train output folder>`: send what its journal holds, then its encoder if the
    run completed and has none yet; returns (sent, left, unsent) as sync_journal."""
    folder = Path(folder)
    check_store(uri)
    try:
        sent, left, unsent = sync_journal(uri, folder)
    except JournalBusy:
        raise TrackingError(f"a `byol-sweep train` is writing to {folder}: it sends its records itself") from None
    except JournalReadOnly as err:
        raise TrackingError(f"the {err.pending} MLflow records in the journal of {folder} cannot be sent from here: "
                            "the folder is not writable (sending marks each record sent there); run `byol-sweep "
                            f"sync {folder}` where it is writable") from None
    if left or unsent:
        return sent, left, unsent
    saved = _saved_run(folder)
    journal = Journal(journal_path(folder))
    run_id = journal.ids().get(saved["run"], saved["run"])
    client = client_for(uri)
    run = client.get_run(run_id)
    if run.data.tags.get("status") == COMPLETED and ARTIFACT_DIR not in artifacts_of(client, run):
        log_encoder(uri, folder, run_id)
        sent += 1
    return sent, 0, []
