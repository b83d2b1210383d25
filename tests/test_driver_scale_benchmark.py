"""benchmarks/driver_scale.py at a tiny scale: both sides run, every figure is there, and every result
the driver received reached MLflow exactly once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # Ray and two sweeps in a subprocess
def test_the_driver_scale_benchmark_compares_the_driver_with_bare_tune(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "driver_scale.py"), "--workload", "bookkeeping",
                           "--trials", "2", "--epoch-s", "0.2", "--rounds", "1", "--stores", "sqlite", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    bare, driver = result["runs"]
    assert (bare["side"], driver["side"]) == ("bare", "sqlite")
    assert driver["exactly_once"]["missing"] == driver["exactly_once"]["duplicated"] == 0
    assert driver["exactly_once"]["results"] == driver["exactly_once"]["in_mlflow"] >= 2
    assert {"mlflow_callback", "searcher", "scheduler", "console"} <= set(driver["parts"])
    for run in (bare, driver):
        assert run["wall_s"] > run["theoretical_s"] > 0 and run["per_result"]["p99_ms"] > 0
    assert result["summary"]["bookkeeping/sqlite"]["ratio"][0] > 0
