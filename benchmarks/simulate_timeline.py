"""Where a simulated sweep's time went, from its MLflow record (`byol-sweep run SPACE --simulate S`).

    byol-sweep run default --simulate 0.05 --num-samples 1000 --max-concurrent 32 --name sim1000
    python benchmarks/simulate_timeline.py sim1000 [--tracking-uri sqlite:///mlflow.db]

Prints one JSON object: the sweep's parent run from start to end; its trials' statuses and the epochs
they reported (an early-stopped trial's `stopped_epoch`, else the space's budget), the least time those
epochs take at the concurrency the sweep ran (`theoretical_s`); how many trials ran at once (from the
trial runs' start and end times: the most, and the average over the span from the first start to the
last end); each trial's time beyond its epochs x S (median and 90th percentile: starting and ending
it, and any epoch the driver was late for); and the gaps before the first trial and after the last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow.tracking import MlflowClient  # noqa: E402


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timeline(uri: str, experiment: str) -> dict:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {uri}")
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=5000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    parent = next(r for r in runs if r.data.tags.get("byol_sweep.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("byol_sweep.role") == "trial" and r.info.end_time]
    params = parent.data.params
    epoch_s, concurrency = float(params["simulated_epoch_s"]), int(params["max_concurrent"])
    epochs = {r.info.run_id: int(r.data.tags.get("stopped_epoch") or r.data.params["epochs"]) for r in trials}
    starts = sorted(r.info.start_time / 1000 for r in trials)
    ends = sorted(r.info.end_time / 1000 for r in trials)
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    span = ends[-1] - starts[0]
    busy = sum(r.info.end_time / 1000 - r.info.start_time / 1000 for r in trials)
    beyond = [r.info.end_time / 1000 - r.info.start_time / 1000 - epochs[r.info.run_id] * epoch_s for r in trials]
    statuses = Counter(r.data.tags.get("status", "?") for r in trials)
    total_epochs = sum(epochs.values())
    return {
        "experiment": experiment, "trials": len(trials), "statuses": dict(statuses),
        "cpus_per_trial": float(params["cpus_per_trial"]), "gpus_per_trial": float(params["gpus_per_trial"]),
        "max_concurrent": concurrency, "epoch_s": epoch_s, "epochs": total_epochs,
        "theoretical_s": round(max(total_epochs * epoch_s / concurrency, max(epochs.values()) * epoch_s), 1),
        "sweep_run_s": round((parent.info.end_time - parent.info.start_time) / 1000, 1) if parent.info.end_time else None,
        "before_first_trial_s": round(starts[0] - parent.info.start_time / 1000, 1),
        "trials_span_s": round(span, 1),
        "after_last_trial_s": round(parent.info.end_time / 1000 - ends[-1], 1) if parent.info.end_time else None,
        "running_at_once": {"most": most, "mean": round(busy / span, 1) if span else None},
        "trial_beyond_its_epochs_s": {"median": round(statistics.median(beyond), 2),
                                      "p90": round(quantile(beyond, 0.9), 2), "max": round(max(beyond), 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="the sweep's MLflow experiment (by default its --name)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    print(json.dumps(timeline(args.tracking_uri, args.experiment), indent=2))


if __name__ == "__main__":
    main()
