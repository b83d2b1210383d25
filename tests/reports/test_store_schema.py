"""The fast SQLite reader reads only the MLflow schemas its tests cover (reports/store.py): a store of
another schema revision (another MLflow version's tables) goes through MLflow's client, said once."""
from __future__ import annotations

import shutil
import sqlite3

import pandas as pd

from benchmarks.report_scale import synthesise
from reports import load
from sweep.cli import main

OTHER_REVISION = "0123456789ab"


def test_a_store_of_another_schema_revision_is_read_through_mlflow_and_said_once(tmp_path, monkeypatch, capsys):
    import mlflow.store.db.utils

    tested, other = tmp_path / "tested.db", tmp_path / "other.db"
    name = synthesise(f"sqlite:///{tested}", 12)
    shutil.copy(tested, other)
    with sqlite3.connect(other) as db:
        db.execute("update alembic_version set version_num = ?", (OTHER_REVISION,))
    monkeypatch.setattr(load.time, "time", lambda: 1.9e9)  # running trials' wall time counts to "now"

    assert main(["report", "--experiment", name, "--tracking-uri", f"sqlite:///{tested}", "--out",
                 str(tmp_path / "fast")]) == 0
    assert "schema revision" not in capsys.readouterr().err
    # the user's MLflow is the version whose schema that is: its client reads the store
    monkeypatch.setattr(mlflow.store.db.utils, "_get_latest_schema_revision", lambda: OTHER_REVISION)
    assert main(["report", "--experiment", name, "--tracking-uri", f"sqlite:///{other}", "--out",
                 str(tmp_path / "client")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "schema revision" in line]
    assert said == [f"{other} has MLflow schema revision {OTHER_REVISION}, not one the fast SQLite reader is tested "
                    "on (dc11669786a5); the report reads it through MLflow's client"]
    for table in ("trials.csv", "curves.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "fast" / table), pd.read_csv(tmp_path / "client" / table))
