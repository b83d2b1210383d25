"""The end-of-sweep report when the tracking server does not answer: said at once, never minutes of
MLflow's retries, with what to run when it is back."""
from __future__ import annotations

import time
from types import SimpleNamespace

from sweep.ending import after_sweep
from tests.conftest import free_port


def test_an_unreachable_server_at_the_end_of_a_sweep_is_said_within_30_s(capsys):
    outcome = SimpleNamespace(interrupted=False, tracking_uri=f"http://127.0.0.1:{free_port()}", name="gone",
                              experiment="gone", parent_run_id="p", best_metric=0.5)
    start = time.monotonic()
    assert after_sweep(outcome, report=True) == 1
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert err.startswith("the report was not written: MLflow tracking server http://127.0.0.1:")
    assert "`byol-sweep sync gone`" in err and "`byol-sweep report --experiment gone`" in err
