"""A large sweep's report stays readable: what a section would list by the thousand is cut, and says so."""
from __future__ import annotations

import re

import pandas as pd

from benchmarks.report_scale import synthesise
from reports.overview import STOPPED_SHOWN
from sweep.cli import main


def test_a_sweep_with_more_stopped_trials_than_shown_lists_those_that_went_furthest(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = synthesise(uri, STOPPED_SHOWN + 60)
    assert main(["report", "--experiment", name, "--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 0
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    stopped = trials[trials["status"] == "stopped_early"]
    assert len(stopped) > STOPPED_SHOWN and len(trials) == STOPPED_SHOWN + 60
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split(f"Stopped early by ASHA ({len(stopped)})", 1)[1].split("\n#", 1)[0]
    assert f"The {STOPPED_SHOWN} that ran the most epochs are listed" in section and "trials.csv holds them all" in section
    rows = re.findall(r"^\| (trial_\d+) \| (\d+) \|", section, re.M)
    assert len(rows) == STOPPED_SHOWN
    epochs = [int(e) for _, e in rows]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] == stopped["epochs_run"].max()
    assert min(epochs) >= sorted(stopped["epochs_run"], reverse=True)[STOPPED_SHOWN - 1]
