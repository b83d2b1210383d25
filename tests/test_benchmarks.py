"""The benchmark scripts a user runs by hand: they refuse clearly where they cannot run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a simulation or a subprocess: CI runs it
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_gpu_check_refuses_at_once_without_a_gpu():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_the_quality_benchmark_runs_end_to_end_on_a_tiny_tree(tmp_path):
    """benchmarks/quality.py on a 3-class tree of 18 images, one epoch: one JSON with every figure."""
    import json
    import sys

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c in range(3):
            folder = tmp_path / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data", str(tmp_path),
                           "--per-class", "6", "--test-per-class", "3", "--epochs", "1", "--batch-size", "8",
                           "--threads", "1", "--workers", "0", "--skip", "lightly"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["data"].startswith("CIFAR-10 subset: 18 training images")
    for key in ("raw_pixels", "random_init"):
        assert 0.0 <= result[key] <= 1.0
    for arm in ("core_defaults", "core_lightly_recipe"):
        assert len(result[arm]["curve"]) == 1 and 0.0 <= result[arm]["knn_acc"] <= 1.0
    assert result["core_defaults"]["policy"] == "byol_small"


@pytest.mark.slow
def test_the_augmentation_benchmark_measures_every_op_and_both_pipelines():
    """benchmarks/augment_ops.py at its smallest: a share for each op of both views, and both pipelines."""
    import json
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "augment_ops.py"), "--rounds", "1",
                           "--repeats", "1", "--images", "128", "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    ops = out["shares"]["ops"]
    assert {"T crop+flip", "T color_jitter", "T blur", "T' solarize", "T' equalize", "T' erase"} <= set(ops)
    assert all(v["ms"] > 0 and 0 < v["share"] for v in ops.values())
    pipeline = out["pipeline"]
    assert pipeline["byol_sweep_images_per_s"] > 0 and pipeline["torchvision_v2_images_per_s"] > 0


@pytest.mark.slow  # a subprocess: CI runs it
def test_t_coverage_reports_each_distribution_and_seed_count():
    """benchmarks/t_coverage.py, small: normal differences cover near 95%, skewed ones less."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "t_coverage.py"), "--sims", "20000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"normal", "centred lognormal"} and set(out["normal"]) == {"n=3", "n=5", "n=10"}
    assert all(abs(v - 0.95) < 0.01 for v in out["normal"].values())
    assert all(v < 0.9 for v in out["centred lognormal"].values())


@pytest.mark.slow  # subprocesses: CI runs it
def test_the_report_scale_benchmark_times_each_size_in_rounds_and_states_the_load(tmp_path):
    """benchmarks/report_scale.py at its smallest: two sizes synthesised into one store, two rounds that
    alternate them, each report's seconds, CPU, peak memory and load; the store reused on the next call."""
    command = [sys.executable, str(ROOT / "benchmarks" / "report_scale.py"), "--trials", "12", "20", "--repeat", "2",
               "--store", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line.get("synthesised_trials") for line in lines[:2]] == [12, 20]
    reports = lines[2:]
    assert [(r["store"], r["trials"]) for r in reports] == [("sqlite", 12), ("sqlite", 20)] * 2
    assert all(r["seconds"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mb"] > 0 and len(r["load_1_5_15min"]) == 3
               for r in reports)
    again = subprocess.run(command[:-4] + ["--repeat", "1", "--store", str(tmp_path)], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "synthesised_trials" not in again.stdout
