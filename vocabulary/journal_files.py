"""A sweep's files on this machine that the report reads too: where the sweep's folder is, and the
records of its MLflow journal that MLflow refused, set aside beside it by sweep/tracking/journal.py."""
from __future__ import annotations

import json
from pathlib import Path

JOURNAL_FILE = "mlflow-journal.jsonl"  # in the sweep's folder
REFUSED_SUFFIX = ".refused"  # <journal>.refused: a JSON line per refused record: id, op, run_id, reason, record
IDS_SUFFIX = ".ids"  # <journal>.ids: JSON {a run's placeholder: its MLflow run id}


def sweep_folder(storage: str, name: str) -> Path:
    """Where a sweep's sweep.json, journal and Ray's temp files live: under its storage when that is local."""
    if "://" in storage:
        return Path("~/.cache/byol-sweep/sweeps").expanduser() / name
    return Path(storage).expanduser().resolve() / name


def read_refused(journal: Path) -> list[dict]:
    """The records set aside beside the journal, in the order MLflow refused them (a line that is not
    JSON, cut short by a crash while it was written, is left out)."""
    path = journal.with_name(journal.name + REFUSED_SUFFIX)
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def refused_records(storage: str | None, name: str | None) -> list[dict]:
    """The records MLflow refused of a sweep (storage, name: its parent run's params), each with
    `mlflow_run_id`, its run's MLflow id ("" for a run never created); [] when the sweep's folder is
    not on this machine or cannot be read."""
    if not storage or not name:
        return []
    journal = sweep_folder(storage, name) / JOURNAL_FILE
    try:
        records = read_refused(journal)
        ids_path = journal.with_name(journal.name + IDS_SUFFIX)
        ids = json.loads(ids_path.read_text()) if records and ids_path.exists() else {}
    except (OSError, ValueError):
        return []
    for r in records:
        run = r.get("run_id") or ""
        r["mlflow_run_id"] = ids.get(run, "" if run.startswith("local-") or not run else run)
    return records
