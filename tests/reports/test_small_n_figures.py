"""Figures honest at small n: no effect plots from too few full-budget trials, the metric's binomial noise
on the metric axis where they are drawn, ASHA's decisions within noise of their cut-off flagged, and how
many full-budget trials Optuna drew at random rather than by TPE. On Sweeps built in memory."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from reports import curves, search, sensitivity
from reports.curves import curves_section, decision_within_noise
from reports.load import DECISION_COLUMNS, TRIAL_COLUMNS, Sweep
from reports.plotting import MIN_TRIALS_FOR_EFFECT_PLOTS
from reports.render import Image, Para, Table
from reports.search import search_section
from reports.sensitivity import sensitivity_section
from reports.stats import binomial_interval

SPACE = {"base_lr": {"type": "loguniform", "low": 0.05, "high": 2.0},
         "aug_strength": {"type": "uniform", "low": 0.0, "high": 1.0}}
QUERIES = 1000
T0 = 1_700_000_000_000


def make_sweep(trials: list[dict], *, metric: str = "knn_acc", queries: int | None = QUERIES, search_name="optuna",
               startup: int | None = 4, decisions: list[tuple] | None = None) -> Sweep:
    """A finished two-parameter sweep; each trial a dict of status, value, start and end (seconds after T0)."""
    rows, curve_rows = [], []
    for i, t in enumerate(trials):
        name = f"trial_{i:05d}"
        status, value = t.get("status", "completed"), t.get("value", 0.40)
        epochs = 9 if status == "completed" else 3
        start, end = T0 + 1000 * t.get("start", i), T0 + 1000 * t.get("end", i + 100)
        row = dict.fromkeys(TRIAL_COLUMNS, math.nan)
        row.update(trial=name, trial_id=f"t{i:03d}", status=status, policy="byol", seed=0, epochs_run=epochs,
                   metric=metric, final_metric=value, start_ms=start, wall_s=(end - start) / 1000, error="",
                   base_lr=0.05 * 1.4 ** i, aug_strength=(i * 0.37) % 1)
        rows.append(row)
        curve_rows += [{"trial": name, "epoch": e, metric: value * e / epochs} for e in range(1, epochs + 1)]
    frame = pd.DataFrame(rows)
    params = {"search": search_name, "asha.grace_period": "1", "asha.reduction_factor": "3", "asha.max_epochs": "9"}
    if startup is not None:
        params["optuna.n_startup_trials"] = str(startup)
    return Sweep(experiment="e", parent_id="p", name="e", state="finished", start_ms=T0, end_ms=T0 + 10**6,
                 params=params, tags={}, metric=metric, mode="max", swept=list(SPACE), space=SPACE, trials=frame,
                 curves=pd.DataFrame(curve_rows), raw_params={r["trial"]: {"eval_split": "val"} for r in rows},
                 param_names=[], decisions=pd.DataFrame(decisions or [], columns=DECISION_COLUMNS),
                 baselines={"baseline.queries.val": float(queries)} if queries else {})


def full_budget_sweep(n: int, **kwargs) -> Sweep:
    """n full-budget trials whose values differ by a few queries out of 1000 (0.400 to 0.406), one after another."""
    values = 0.400 + 0.001 * (np.arange(n) % 7)
    return make_sweep([{"value": float(v), "start": 1000 * i, "end": 1000 * i + 500} for i, v in enumerate(values)],
                      **kwargs)


def images(blocks: list) -> set[str]:
    return {b.name for b in blocks if isinstance(b, Image)}


def text(blocks: list) -> str:
    return "\n".join(b.text for b in blocks if isinstance(b, Para))


def effect_blocks(s: Sweep) -> list:
    return search_section(s, 2, "", None) + sensitivity_section(s, 2, "", None, "no importances")


def test_below_the_minimum_no_effect_plot_and_a_sentence_saying_how_many_and_why():
    s = full_budget_sweep(2)
    blocks = effect_blocks(s)
    assert images(blocks) == {"history.png"}  # the search's history stays: it is no effect plot
    said = text(blocks)
    assert "this sweep has 2 full-budget trials" in said and f"needs at least {MIN_TRIALS_FOR_EFFECT_PLOTS}" in said
    assert "noise alone draws steep-looking effects" in said
    below = effect_blocks(full_budget_sweep(MIN_TRIALS_FOR_EFFECT_PLOTS - 1))
    assert not images(below) & {"sensitivity.png", "parallel.png", "interaction.png"}


def test_at_the_minimum_the_effect_plots_are_drawn_with_the_noise_stated():
    blocks = effect_blocks(full_budget_sweep(MIN_TRIALS_FOR_EFFECT_PLOTS))
    assert images(blocks) == {"history.png", "parallel.png", "interaction.png", "sensitivity.png"}
    said = text(blocks)
    assert "needs at least" not in said
    assert f"95% binomial interval over the {QUERIES} queries" in said


@pytest.fixture
def figures(monkeypatch):
    """The figures the sections draw, kept instead of rendered."""
    drawn = []
    for module in (search, sensitivity):
        monkeypatch.setattr(module, "to_png", lambda fig: drawn.append(fig) or b"png")
    return drawn


def band_of(s: Sweep) -> tuple[float, float]:
    bounds = [binomial_interval(v, QUERIES) for v in s.full_budget["final_metric"]]
    return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)


def test_the_metric_axis_spans_every_points_binomial_interval(figures):
    s = full_budget_sweep(MIN_TRIALS_FOR_EFFECT_PLOTS)
    low, high = band_of(s)
    assert high - low > 0.05  # the noise is ten times the values' spread of 0.006
    effect_blocks(s)
    history, parallel, interaction, sens = figures
    for ax in [history.axes[0], *sens.axes]:
        bottom, top = ax.get_ylim()
        assert bottom <= low and top >= high
        assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    labels = [float(t.get_text()) for t in parallel.axes[0].texts if t.get_position()[0] == 2]  # the metric's axis
    assert min(labels) <= low + 0.001 and max(labels) >= high - 0.001  # shown to 3 significant digits
    colours = next(c for c in interaction.axes[0].collections if c.get_array() is not None).norm
    assert colours.vmin <= low and colours.vmax >= high


def test_no_noise_is_drawn_for_a_metric_without_a_query_count(figures):
    blocks = effect_blocks(full_budget_sweep(MIN_TRIALS_FOR_EFFECT_PLOTS, queries=None))
    assert "binomial" not in text(blocks)
    assert not any(isinstance(c, ErrorbarContainer) for fig in figures for ax in fig.axes for c in ax.containers)


def test_a_decision_is_within_noise_when_the_gap_is_below_the_noise_of_two_binomial_accuracies():
    # the main job's: stopped at 0.394 against 0.399 on 1000 queries, the difference's SD is 0.022
    assert decision_within_noise(0.394, 0.399, 1000)
    assert decision_within_noise(0.404, 0.399, 1000)  # above the cut-off too
    assert not decision_within_noise(0.30, 0.40, 1000)
    assert not decision_within_noise(0.394, 0.399, 1_000_000)  # many queries: 0.005 is no longer noise
    # 0.50 against 0.45: 1.96 * sqrt((0.25 + 0.2475) / n) = 0.05 at n = 764.5
    assert decision_within_noise(0.50, 0.45, 764) and not decision_within_noise(0.50, 0.45, 765)
    assert not decision_within_noise(0.4, math.nan, 1000)  # no cut-off: the first trial at a rung
    assert not decision_within_noise(0.394, 0.399, 0)  # no query count


DECISIONS = [("trial_00000", 1, 0.40, math.nan, "continue"),
             ("trial_00001", 1, 0.394, 0.399, "stop"),  # within noise
             ("trial_00002", 1, 0.30, 0.40, "stop"),
             ("trial_00003", 1, 0.45, 0.40, "continue"),  # 0.05 against a bound of 0.043: not within
             ("trial_00003", 3, 0.50, 0.49, "continue")]  # within noise


def rung_blocks(**kwargs) -> list:
    s = make_sweep([{}, {"status": "stopped_early"}, {"status": "stopped_early"}, {}], decisions=DECISIONS,
                   **kwargs)
    return curves_section(s, 2, "", None)


def test_the_rung_table_counts_the_decisions_within_noise_of_their_cut_off_and_lists_them():
    blocks = rung_blocks()
    tables = [b.df for b in blocks if isinstance(b, Table)]
    rungs = tables[0].set_index("rung (epoch)")
    assert rungs.loc["1", "within noise of cut-off"] == "1 (1 stopped)"
    assert rungs.loc["3", "within noise of cut-off"] == "1 (0 stopped)"
    each = tables[1]
    flagged = {(t, r): f for t, r, f in zip(each["trial"], each["rung (epoch)"], each["within noise of cut-off"])}
    assert flagged == {("trial_00001", "1"): "yes", ("trial_00002", "1"): "no", ("trial_00003", "1"): "no",
                       ("trial_00003", "3"): "yes"}  # the decision with no cut-off is not judged
    said = text(blocks)
    assert "2 of the 4 decisions that faced a cut-off were within noise of it (1 of them stops)" in said
    assert f"n = {QUERIES} queries" in said


def test_without_a_query_count_no_decision_is_flagged_and_the_report_says_why():
    blocks = rung_blocks(queries=None)
    tables = [b.df for b in blocks if isinstance(b, Table)]
    assert len(tables) == 1 and "within noise of cut-off" not in tables[0]
    assert "cannot be said" in text(blocks)


def test_the_decisions_table_keeps_the_closest_when_there_are_many(monkeypatch):
    monkeypatch.setattr(curves, "DECISIONS_SHOWN", 2)
    each = [b.df for b in rung_blocks() if isinstance(b, Table)][1]
    assert list(each["within noise of cut-off"]) == ["yes", "yes"]
    assert "(2 of the 4)" in text(rung_blocks())


def origin(s: Sweep) -> str:
    return next((b.text for b in search_section(s, 2, "", None) if isinstance(b, Para) and "TPE samples" in b.text),
                "")


def test_full_budget_trials_drawn_by_the_random_start_up_and_by_tpe_are_counted():
    # start-up 2, several at a time: trials 2 and 3 start when one trial has ended, so they are still drawn at
    # random; trials 4 and 5 start after two had ended (the diverged one does not count), so TPE drew them
    s = make_sweep([{"start": 0, "end": 100, "value": 0.41}, {"start": 0, "end": 50, "status": "stopped_early"},
                    {"start": 60, "end": 200, "value": 0.42}, {"start": 90, "end": 120, "status": "diverged"},
                    {"start": 150, "end": 300, "value": 0.43}, {"start": 210, "end": 400, "value": 0.44}],
                   startup=2)
    said = origin(s)
    assert said.startswith("Of the 4 full-budget trials, 2 were drawn at random by Optuna's start-up and 2 by TPE;")
    assert "the best, trial_00005, was drawn by TPE" in said and "of all 6 trials, 4 were drawn at random" in said


def test_a_failed_trial_does_not_end_the_start_up_and_a_selection_from_it_owes_nothing_to_tpe():
    s = make_sweep([{"start": 0, "end": 50, "status": "failed"}, {"start": 0, "end": 100},
                    {"start": 150, "end": 300, "value": 0.42}], startup=2)
    said = origin(s)
    assert "Of the 2 full-budget trials, 2 were drawn at random by Optuna's start-up and 0 by TPE: the selection " \
           "owes nothing to TPE" in said


def test_no_start_up_count_for_a_search_other_than_optuna():
    assert origin(full_budget_sweep(3, search_name="random", startup=None)) == ""
    assert origin(full_budget_sweep(3, search_name="random", startup=4)) == ""
