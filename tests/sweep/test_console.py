"""The console line of a running sweep, from fake trials (no Ray started)."""
from __future__ import annotations

import io
import re
from types import SimpleNamespace

import yaml

from sweep.space import parse_space
from sweep.tuner.console import ConsoleProgress, progress_text

SPACE = """
base: {dataset: digits, backbone: small_cnn, epochs: 4}
search: {base_lr: {loguniform: [0.01, 1.0]}}
asha: {grace_period: 1, reduction_factor: 2, max_epochs: 4}
num_samples: 4
"""


def trial(i: int, status: str, epoch: int = 0, value: float = 0.5):
    return SimpleNamespace(trial_id=f"0000{i}", status=status, config={"base_lr": 0.1},
                           last_result={"epoch": epoch, "knn_acc": value} if epoch else {})


def test_progress_text_says_k_of_n_and_a_rough_eta_once_a_trial_ended():
    assert progress_text(0, 10, 30.0, 0) == "0 of 10 trials ended"
    assert progress_text(2, 10, 240.0, 2) == "2 of 10 trials ended, ETA ~16 min (rough)"
    assert progress_text(9, 10, 60.0, 9) == "9 of 10 trials ended, ETA <1 min (rough)"
    assert progress_text(10, 10, 600.0, 10) == "10 of 10 trials ended"
    assert progress_text(5, 10, 60.0, 1) == "5 of 10 trials ended, ETA ~5 min (rough)"  # resumed: rate of this driver's


def test_the_console_line_counts_ended_trials_of_the_sweep_and_estimates_the_rest(monkeypatch):
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = io.StringIO()
    clock = iter([0.0, 120.0, 121.0])
    monkeypatch.setattr("sweep.tuner.console.time.monotonic", lambda: next(clock))
    progress = ConsoleProgress(spec, stream=out)  # starts at 0 s
    trials = [trial(1, "TERMINATED", epoch=4), trial(2, "RUNNING", epoch=1)]
    progress.on_trial_complete(0, trials, trials[0])  # at 120 s: one of 4 ended
    line = out.getvalue().strip()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] 1 running \| 1 completed \| 1 of 4 trials ended, ETA ~6 min \(rough\) "
                        r"\| best knn_acc 0\.5000 \(trial_00001: base_lr=0\.1\) \| trial_00001 completed at epoch 4",
                        line), line


def test_the_final_stage_counts_its_own_runs_and_its_eta_from_epochs(monkeypatch):
    """Final runs all train the whole budget (4 epochs here), several at once: the ETA is the time
    per epoch trained so far times the epochs left, not the time per run ended (which, when runs end
    together, counted the others' nearly finished runs in full)."""
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = io.StringIO()
    now = [0.0]
    monkeypatch.setattr("sweep.tuner.console.time.monotonic", lambda: now[0])
    progress = ConsoleProgress(spec, stream=out, final_stage=True, total=3)
    now[0] = 30.0
    trials = [trial(1, "RUNNING"), trial(2, "PENDING")]
    progress.on_trial_result(0, trials, trials[0], {})  # no epoch trained yet: no ETA
    assert "| 0 of 3 trials ended" in out.getvalue() and "ETA" not in out.getvalue()
    trials = [trial(1, "RUNNING", epoch=3), trial(2, "RUNNING", epoch=3), trial(3, "RUNNING", epoch=3)]
    progress.on_trial_result(0, trials, trials[1], {"epoch": 1})
    progress.on_trial_result(0, trials, trials[2], {"epoch": 1})
    now[0] = 600.0  # 3 runs at epoch 3 after 600 s: 9 epochs trained (run 1 from its epoch 0), 3 left
    progress.on_trial_result(0, trials, trials[0], {"epoch": 3})
    assert out.getvalue().strip().splitlines()[-1].endswith("| 0 of 3 trials ended, ETA ~3 min (rough)")
    trials[0] = trial(1, "TERMINATED", epoch=4)
    now[0] = 700.0
    progress.on_trial_complete(0, trials, trials[0])  # 10 epochs trained, 2 left (one each)
    assert "1 of 3 trials ended, ETA ~2 min (rough)" in out.getvalue().strip().splitlines()[-1]
    assert progress_text(1, 3, 120.0, 1, epochs=(10, 2)) == "1 of 3 trials ended, ETA <1 min (rough)"
    assert progress_text(1, 3, 600.0, 1, epochs=(10, 20)) == "1 of 3 trials ended, ETA ~20 min (rough)"


def test_a_comparison_sweep_shows_each_arms_mean_so_far_not_a_best_seed(monkeypatch):
    """A grid compared across seeds (like `bootstrap`): its best single trial is one lucky seed, so
    the console follows each arm's running mean over its completed seeds."""
    spec = parse_space(yaml.safe_load("""
base: {dataset: digits, backbone: small_cnn, epochs: 4}
grid: {tau_base: [0.99, 1.0], seed: [0, 1]}
algorithm: grid
num_samples: 1
asha: false
final: false
"""), "s.yaml")
    assert spec.compared_fields == ["tau_base"]
    out = io.StringIO()
    progress = ConsoleProgress(spec, stream=out)

    def arm(i, tau, value):
        return SimpleNamespace(trial_id=f"0000{i}", status="TERMINATED", config={"tau_base": tau, "seed": i % 2},
                               last_result={"epoch": 4, "knn_acc": value})

    trials = [arm(0, 0.99, 0.40), arm(1, 0.99, 0.42), arm(2, 1.0, 0.39)]
    for t in trials:
        progress.on_trial_complete(0, trials, t)
    line = out.getvalue().strip().splitlines()[-1]
    assert "| mean knn_acc so far: tau_base=0.99 0.4100 (n 2), tau_base=1.0 0.3900 (n 1) |" in line, line
    assert "best" not in line


def test_a_search_or_a_final_stage_makes_a_sweep_no_comparison():
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    assert spec.compared_fields == []
    grid_with_final = parse_space(yaml.safe_load(
        "base: {dataset: digits, epochs: 4}\ngrid: {tau_base: [0.99, 1.0]}\nalgorithm: grid\nasha: false\n"), "s.yaml")
    assert grid_with_final.final is not None and grid_with_final.compared_fields == []
