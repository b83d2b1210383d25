"""The console's view of a running sweep, from fake trials (no Ray started): a bar over the epoch
budget with a line per running trial on a terminal, plain lines in a log; and the closing lines."""
from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
import yaml

from sweep.space import load_space, parse_space
from sweep.summary import SweepOutcome, print_summary
from sweep.tuner.console import REDRAW_S, ConsoleProgress

SPACE = """
base: {dataset: digits, backbone: small_cnn, epochs: 4}
search: {base_lr: {loguniform: [0.01, 1.0]}}
asha: {grace_period: 1, reduction_factor: 2, max_epochs: 4}
num_samples: 4
"""
ANSI = re.compile(r"\x1b\[")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def trial(i: int, status: str, epoch: int = 0, value: float = 0.5):
    return SimpleNamespace(trial_id=f"0000{i}", status=status, config={"base_lr": 0.1},
                           last_result={"epoch": epoch, "knn_acc": value} if epoch else {})


def two_trials_one_epoch_each(progress: ConsoleProgress, now: list[float]) -> list:
    """Trials 1 and 2 start at 0 s and report their first epoch at 60 s: 2 of at most 16 epochs."""
    trials = [trial(1, "RUNNING"), trial(2, "RUNNING")]
    for t in trials:
        progress.on_trial_start(0, trials, t)
    now[0] = 60.0
    progress.on_trial_result(0, trials, trials[0], {"epoch": 1, "knn_acc": 0.312345678})
    progress.on_trial_result(0, trials, trials[1], {"epoch": 1, "knn_acc": 0.25})
    return trials


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("sweep.tuner.console.time.monotonic", lambda: now[0])
    return now


def test_in_a_log_each_running_trial_shows_its_epoch_and_metric_and_the_eta_comes_from_the_first_epochs(clock):
    """Before any trial ended: the view names each running trial's epoch of the budget and latest
    metric (4 significant digits), and the ETA is the time per epoch trained so far times the epochs
    left (14 epochs at 30 s each, 2 at once: ~7 min). Plain lines: no carriage return, no ANSI code."""
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = io.StringIO()
    progress = ConsoleProgress(spec, stream=out, every_s=0)
    two_trials_one_epoch_each(progress, clock)
    text = out.getvalue()
    assert "\r" not in text and not ANSI.search(text)
    last = text.strip().split("\n[")[-1]
    assert last.splitlines() == [
        re.search(r"\d\d:\d\d:\d\d\] ", last).group(0)
        + "search: 2 of at most 16 epochs (12%) | ETA ~7 min (rough) | 0 of 4 trials ended (2 running, 2 pending)",
        "  trial_00001  running        epoch 1/4  knn_acc 0.3123",
        "  trial_00002  running        epoch 1/4  knn_acc 0.25"], last
    assert "trial_00001 started" in text and "trial_00002 started" in text


def test_in_a_log_the_view_comes_at_most_every_every_s_and_each_trial_event_once(clock):
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = io.StringIO()
    progress = ConsoleProgress(spec, stream=out, every_s=10.0)
    trials = two_trials_one_epoch_each(progress, clock)  # the first result at 60 s: a view
    clock[0] = 65.0
    progress.on_trial_result(0, trials, trials[0], {"epoch": 2, "knn_acc": 0.4})  # 5 s later: none
    assert out.getvalue().count("epoch 1/4") == 1 and "epoch 2/4" not in out.getvalue()
    clock[0] = 71.0
    progress.on_trial_result(0, trials, trials[1], {"epoch": 2, "knn_acc": 0.3})
    assert "trial_00001  running        epoch 2/4  knn_acc 0.4\n" in out.getvalue()
    trials[0] = trial(1, "TERMINATED", epoch=2, value=0.4)
    progress.on_trial_complete(0, trials, trials[0])  # an event: at once
    assert out.getvalue().strip().splitlines()[-1].endswith("| trial_00001 stopped early at epoch 2")
    assert len(out.getvalue().strip().splitlines()) == 2 + 3 + 3 + 1


@pytest.mark.parametrize("no_color", [False, True])
def test_on_a_terminal_a_bar_over_the_epoch_budget_and_a_line_per_running_trial_redrawn_in_place(
        clock, monkeypatch, no_color):
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = Terminal()
    progress = ConsoleProgress(spec, stream=out, every_s=3600)
    trials = two_trials_one_epoch_each(progress, clock)
    assert "knn_acc 0.25" not in out.getvalue()  # a result right after another waits for the next redraw
    clock[0] += REDRAW_S
    progress.on_trial_result(0, trials, trials[1], {"epoch": 1, "knn_acc": 0.25})
    text = out.getvalue()
    assert "\r" in text and "\x1b[A" in text  # redrawn in place, the trials' lines below the bar
    assert re.search(r"search:  12%\|.*\| 2/16 epochs, ETA ~7 min \(rough\) \| 0 of 4 trials ended", text), text
    assert "trial_00001  running        epoch 1/4  knn_acc 0.3123" in text
    assert "trial_00002  running        epoch 1/4  knn_acc 0.25" in text
    assert bool(COLOUR.search(text)) is not no_color
    trials[0] = trial(1, "TERMINATED", epoch=4, value=0.5)
    progress.on_trial_complete(0, trials, trials[0])
    progress.on_experiment_end(trials)
    assert "] search: trial_00001 completed at epoch 4\n" in out.getvalue()
    assert bool(COLOUR.search(out.getvalue())) is not no_color


def test_the_closing_lines_print_values_to_4_significant_digits(capsys):
    spec = load_space("quick")
    outcome = SweepOutcome(name="s", path="byol-runs/s", tracking_uri="sqlite:////tmp/x/mlflow.db", experiment="s",
                           parent_run_id="p", best_metric=0.432198765, best_trial="t_00003", counts={"completed": 10},
                           best_config={**spec.base, "base_lr": 5.309229830078037, "tau_base": 0.99, "aug_strength": 1.0})
    print_summary(outcome, spec, "1")
    out = capsys.readouterr().out
    assert "0.4322 (trial t_00003) with base_lr=5.309 tau_base=0.99 aug_strength=1.0" in out, out


def test_the_console_line_counts_ended_trials_of_the_sweep_and_names_the_best(clock):
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = io.StringIO()
    progress = ConsoleProgress(spec, stream=out)  # starts at 0 s
    clock[0] = 120.0
    trials = [trial(1, "TERMINATED", epoch=4), trial(2, "RUNNING", epoch=1)]
    progress.on_trial_complete(0, trials, trials[0])  # at 120 s: one of 4 ended
    line = out.getvalue().strip()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] search: 5 of at most 16 epochs \(31%\) \| 1 of 4 trials ended \(1 running, "
                        r"2 pending, 1 completed\) \| best knn_acc 0\.5 \(trial_00001: base_lr=0\.1\) "
                        r"\| trial_00001 completed at epoch 4", line), line


def test_the_final_stage_counts_its_own_runs_and_its_eta_from_epochs(clock):
    """Final runs all train the whole budget (4 epochs here), several at once: the ETA is the time
    per epoch trained so far times the epochs left, not the time per run ended (which, when runs end
    together, counted the others' nearly finished runs in full)."""
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    out = io.StringIO()
    progress = ConsoleProgress(spec, stream=out, final_stage=True, total=3, every_s=0)
    clock[0] = 30.0
    trials = [trial(1, "RUNNING"), trial(2, "PENDING")]
    progress.on_trial_result(0, trials, trials[0], {})  # no epoch trained yet: no ETA
    assert "final stage: 0 of 12 epochs (0%) | 0 of 3 trials ended" in out.getvalue() and "ETA" not in out.getvalue()
    trials = [trial(1, "RUNNING", epoch=3), trial(2, "RUNNING", epoch=3), trial(3, "RUNNING", epoch=3)]
    progress.on_trial_result(0, trials, trials[1], {"epoch": 3})
    progress.on_trial_result(0, trials, trials[2], {"epoch": 3})
    clock[0] = 600.0  # 3 runs at epoch 3 after 600 s: 5 epochs trained here (runs 2, 3 from their epoch 2), 3 left
    progress.on_trial_result(0, trials, trials[0], {"epoch": 3})
    assert "final stage: 9 of 12 epochs (75%) | ETA ~6 min (rough) | 0 of 3 trials ended" in out.getvalue()
    trials[0] = trial(1, "TERMINATED", epoch=4)
    clock[0] = 700.0
    progress.on_trial_complete(0, trials, trials[0])  # run 1's epoch 4: 6 epochs trained, 2 left (one each)
    assert "final stage: 10 of 12 epochs (83%) | ETA ~4 min (rough) | 1 of 3 trials ended" in out.getvalue()


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
    assert "| mean knn_acc so far: tau_base=0.99 0.41 (n 2), tau_base=1.0 0.39 (n 1) |" in line, line
    assert "best" not in line


def test_a_search_or_a_final_stage_makes_a_sweep_no_comparison():
    spec = parse_space(yaml.safe_load(SPACE), "s.yaml")
    assert spec.compared_fields == []
    grid_with_final = parse_space(yaml.safe_load(
        "base: {dataset: digits, epochs: 4}\ngrid: {tau_base: [0.99, 1.0]}\nalgorithm: grid\nasha: false\n"), "s.yaml")
    assert grid_with_final.final is not None and grid_with_final.compared_fields == []
