"""`byol-sweep sync NAME --from-results`: what a sweep's journal lost (a damaged line, a refused
record, a journal deleted), rebuilt from Ray's own per-trial results (each trial folder's
result.json). Every epoch a trial reported that its MLflow run lacks is sent, once: a (metric,
epoch) MLflow already holds is never sent again, so running it twice sends nothing the second time."""
from __future__ import annotations

import json
import time
from pathlib import Path

from sweep.state import local_state_dir, read_state, tracking_uri_for
from sweep.tracking.store import client_for
from vocabulary import EPOCH_METRICS, FINAL_METRICS

RESULTS_FILE = "result.json"
BATCH = 1000  # MLflow's log_batch limit on metrics


def trial_results(folder: Path) -> dict[str, tuple[Path, list[dict]]]:
    """{trial id: (its folder, its results in order)} of every trial under a sweep's folder (search
    and final stage); a line that is not JSON (the last, torn by a crash) is left out."""
    out: dict[str, tuple[Path, list[dict]]] = {}
    for path in sorted(folder.glob(f"**/{RESULTS_FILE}")):
        rows = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "trial_id" in row and "epoch" in row:
                rows.append(row)
        if rows:
            out[str(rows[0]["trial_id"])] = (path.parent, rows)
    return out


def rebuild_from_results(name: str, storage: str = "byol-runs", tracking_uri: str | None = None) -> tuple[int, int]:
    """Send each trial's reported epochs that MLflow lacks; returns (metric values sent, runs created)."""
    from mlflow.entities import Metric  # MLflow: `sync` imports it only when it has something to send

    state = read_state(name, storage)
    uri = tracking_uri_for(state, name, tracking_uri)
    client = client_for(uri)
    parent = state["parent_run_id"]
    runs = {r.data.tags.get("byol_sweep.trial_id"): r
            for r in client.search_runs([state["experiment_id"]], f"tags.`mlflow.parentRunId` = '{parent}'",
                                        max_results=50_000)}
    sent = created = 0
    for trial_id, (folder, rows) in trial_results(local_state_dir(storage, name)).items():
        run = runs.get(trial_id)
        if run is None:
            role = "final" if "final" in folder.parts else "trial"
            run = client.create_run(state["experiment_id"], run_name=f"{role}_{trial_id}", tags={
                "mlflow.parentRunId": parent, "byol_sweep.role": role, "byol_sweep.trial_id": trial_id,
                "status": "interrupted", "byol_sweep.rebuilt_from": str(folder / RESULTS_FILE)})
            created += 1
        run_id = run.info.run_id
        keys = [k for k in (*EPOCH_METRICS, *FINAL_METRICS) if any(k in row for row in rows)]
        held = {k: {m.step for m in client.get_metric_history(run_id, k)} for k in keys}
        missing = [Metric(k, float(row[k]), int(float(row.get("timestamp", time.time())) * 1000), int(row["epoch"]))
                   for row in rows for k in keys if row.get(k) is not None and int(row["epoch"]) not in held[k]]
        for i in range(0, len(missing), BATCH):
            client.log_batch(run_id, metrics=missing[i:i + BATCH])
        sent += len(missing)
        if "byol_sweep.trial_dir" not in run.data.tags:
            client.set_tag(run_id, "byol_sweep.trial_dir", str(folder))
    return sent, created
