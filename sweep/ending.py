"""What `run`, `resume` and `finalize` do once a sweep's driver is done: its report (unless the
tracking server does not answer, which is said at once), the report logged beside the sweep in
MLflow, and the exit code."""
from __future__ import annotations

import sys
from pathlib import Path

from sweep.errors import TrackingError
from sweep.tracking.secrets import mask_secrets
from sweep.tracking.store import check_store, client_for

REPORTS = Path("byol-reports")  # where `run`, `resume`, `finalize` and `report` write reports: REPORTS/<experiment>


def report_folder(experiments: list[str]) -> Path:
    return REPORTS / "-vs-".join(experiments)


def after_sweep(outcome, report: bool) -> int:
    if outcome.interrupted:
        return 1
    if report and not store_answers(outcome):
        return 1
    if report:
        from reports import build_report  # pandas, matplotlib

        html = build_report([outcome.experiment], outcome.tracking_uri, report_folder([outcome.experiment]), echo=print)
        print(f"report written: {html}", flush=True)
        try:  # the report beside the sweep in MLflow, too
            client_for(outcome.tracking_uri).log_artifacts(outcome.parent_run_id, str(html.parent), "report")
        except Exception as err:
            print(f"the report could not be logged to MLflow: {mask_secrets(str(err).strip().splitlines()[-1])}",
                  file=sys.stderr, flush=True)
    if outcome.best_metric is None:
        print("no trial reported a metric: every trial failed or diverged; the report's health section and "
              "MLflow's `error` tags say why", file=sys.stderr, flush=True)
        return 1
    return 0


def store_answers(outcome) -> bool:
    """Before the end-of-sweep report: whether MLflow answers (a server that does not is said at once,
    not after minutes of MLflow's own retries), with what to run when it is back."""
    try:
        check_store(outcome.tracking_uri)
    except TrackingError as err:
        print(f"the report was not written: {err}; once it answers, `byol-sweep sync {outcome.name}` sends what "
              f"waits and `byol-sweep report --experiment {outcome.experiment}` writes it", file=sys.stderr, flush=True)
        return False
    return True


