"""The search's last wave: the final stage's test baselines start on the slot it leaves idle."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sweep.space import load_space
from sweep.tuner import baselines


@pytest.mark.parametrize("statuses, created, starts", [
    (["TERMINATED", "RUNNING", "RUNNING"], 3, False),  # both slots busy
    (["TERMINATED", "RUNNING"], 3, False),  # a trial is still to come
    (["TERMINATED", "TERMINATED", "RUNNING"], 3, True),  # the last wave: one slot idle
    (["TERMINATED", "ERROR", "PENDING"], 3, True),
])
def test_the_final_baselines_start_when_the_last_wave_leaves_a_slot_idle(statuses, created, starts, monkeypatch):
    started = []
    monkeypatch.setattr(baselines, "start_baselines", lambda *a, **k: started.append(a) or SimpleNamespace(early=False))
    monkeypatch.setitem(baselines.DRIVER_TRACKING_URI, "parent", "sqlite:///x.db")
    spec = load_space("quick")
    spec.num_samples = created
    early = baselines.FinalBaselinesInLastWave(spec, "parent", {"cpu": 1, "gpu": 0}, concurrency=2)
    early.on_trial_complete(0, [SimpleNamespace(status=s) for s in statuses], None)
    assert bool(started) == starts
    if starts:
        assert started[0][4] == "test" and started[0][5] == [10000, 10001, 10002]
        assert baselines.EARLY.pop("parent").early
        early.on_trial_complete(0, [SimpleNamespace(status="TERMINATED")] * created, None)
        assert len(started) == 1  # once
