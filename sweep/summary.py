"""What a sweep ended with: each trial's outcome, the best trial among those that ran the full
budget, and the console's closing lines (where the results are, the MLflow page, the report command)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sweep.progress import sig
from sweep.space import SweepSpec
from sweep.state import SweepRun
from sweep.tracking.store import mask_uri
from vocabulary import COMPLETED, INTERRUPTED, better, outcome


@dataclass
class SweepOutcome:
    name: str
    path: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    best_config: dict[str, Any] | None
    best_metric: float | None
    best_trial: str | None
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    final_counts: dict[str, int] = field(default_factory=dict)


def outcome_of(metrics: dict, max_epochs: int, errored: bool, ended: bool = True) -> str:
    return outcome(int(metrics.get("epoch", 0)), max_epochs, diverged=bool(metrics.get("diverged")), errored=errored,
                   ended=ended)


def search_outcome(results, run: SweepRun, ended: dict[str, str] | None) -> SweepOutcome:
    """The search's outcome from Tune's results; `ended`: trial id -> status, of the trials that Tune
    told the MLflow callback had ended (None when no callback of this driver saw the search)."""
    spec = run.spec
    counts: dict[str, int] = {}
    best = None
    for result in results:
        metrics = result.metrics or {}
        # a trial ended when Tune told the callbacks so; one that Tune stopped because the driver
        # was interrupted (Ctrl-C, SIGTERM) is interrupted, never stopped early
        status = outcome_of(metrics, spec.max_epochs, bool(result.error), ended=ended is None)
        if ended is not None and metrics.get("trial_id") in ended:
            status = ended[metrics["trial_id"]]
        counts[status] = counts.get(status, 0) + 1
        value = metrics.get(spec.metric)  # the objective: the value at the last reported epoch
        if status == COMPLETED and value is not None and better(spec.mode, float(value), best and best[0]):
            best = (float(value), result, metrics.get("trial_id"))
    interrupted = INTERRUPTED in counts or sum(counts.values()) < spec.total_trials or any(
        r.metrics is None or (not r.error and "epoch" not in (r.metrics or {})) for r in results)
    finished = SweepOutcome(
        name=run.name, path=run.path, tracking_uri=run.uri, experiment=run.experiment, parent_run_id=run.parent_run_id,
        best_config=spec.values(spec.train_config(best[1].config)) if best else None,
        best_metric=best[0] if best else None, best_trial=best[2] if best else None, counts=counts,
        interrupted=interrupted,
    )
    print_summary(finished, spec, run.experiment_id)
    return finished


def print_summary(outcome: SweepOutcome, spec: SweepSpec, experiment_id: str) -> None:
    out = sys.stdout
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(outcome.counts.items()))
    print(f"\nsweep {outcome.name} {'stopped before the end' if outcome.interrupted else 'finished'}: {counts}", file=out)
    if outcome.best_config and spec.compared_fields:
        # a comparison: its best single (arm, seed) trial answers no question, the paired arms do
        print(f"this sweep compares {', '.join(spec.compared_fields)} across its seeds: the report gives each arm's mean "
              f"{spec.metric} and the differences paired by seed", file=out)
    elif outcome.best_config:
        swept = " ".join(f"{k}={sig(outcome.best_config[k])}" for k in spec.swept)
        print(f"best {spec.metric} at the last epoch, among trials that ran all {spec.max_epochs} epochs: "
              f"{sig(outcome.best_metric)} (trial {outcome.best_trial}) with {swept}", file=out)
    print(f"results: {outcome.path}", file=out)
    where = mask_uri(outcome.tracking_uri)
    if where.startswith(("http://", "https://")):
        browse = f"its trials, best first: {ui_link(where, experiment_id, spec.metric, spec.mode)}"
    else:
        browse = (f"browse with `mlflow ui --backend-store-uri {where}`, then its trials, best first: "
                  f"{ui_link('http://127.0.0.1:5000', experiment_id, spec.metric, spec.mode)}")
    print(f"MLflow: {where} (experiment {outcome.experiment}); {browse}", file=out)
    print(f"report: byol-sweep report --experiment {outcome.experiment} --tracking-uri {where}", file=out, flush=True)


def ui_link(server: str, experiment_id: str, metric: str, mode: str) -> str:
    """The MLflow UI page of a sweep's trials, flat (not folded under the sweep's run) and sorted
    by the objective, best first."""
    trials = quote("tags.`byol_sweep.role` = 'trial'")
    order = quote(f"metrics.`{metric}`")
    query = f"searchFilter={trials}&orderByKey={order}&orderByAsc={'false' if mode == 'max' else 'true'}"
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
