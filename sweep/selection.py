"""The final stage: the search's selected configurations trained again with new seeds, for the
full budget, and evaluated on the test split with the whole kNN bank and the linear probe.

The search's best value is optimistic (the best of N trials on one seed and one validation
split); these runs, paired by seed across configurations, are the sweep's result."""
from __future__ import annotations

import json
import math
from typing import Any

from sweep.space import SweepSpec
from sweep.tracking.store import client_for
from trainer import TrainConfig
from vocabulary import COMPLETED

# what a final-stage run changes in a selected configuration: evaluate on the test split, with
# every labelled training image in the kNN bank, every test image as a query, and the probe
FINAL_EVALUATION = {"eval_split": "test", "knn_bank_size": 0, "knn_queries": 0, "linear_probe": True}


def completed_trials(uri: str, experiment_id: str, parent_run_id: str, metric: str) -> list[dict[str, Any]]:
    """The search's full-budget trials with a finite objective: {trial_id, run_id, value, params}."""
    client = client_for(uri)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`byol_sweep.role` = 'trial' "
                             f"and tags.status = '{COMPLETED}'", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    out = []
    for run in runs:
        value = run.data.metrics.get(metric)  # MLflow's latest value: the one at the last epoch
        if value is not None and math.isfinite(value):
            out.append({"trial_id": run.data.tags.get("byol_sweep.trial_id", ""), "run_id": run.info.run_id,
                        "value": float(value), "params": dict(run.data.params)})
    return out


def select(spec: SweepSpec, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The top_k trials by the objective, per value of final.per when set; ties keep trial order."""
    final = spec.final
    groups: dict[str, list[dict]] = {}
    for t in trials:
        groups.setdefault(t["params"].get(final.per, "") if final.per else "", []).append(t)
    chosen = []
    for group, members in sorted(groups.items()):
        ranked = sorted(members, key=lambda t: (-t["value"] if spec.mode == "max" else t["value"], t["trial_id"]))
        for rank, t in enumerate(ranked[: final.top_k], start=1):
            chosen.append({**t, "rank": rank, "group": group})
    return chosen


def final_runs(spec: SweepSpec, chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (seed, selected configuration), seed-major so an interrupted stage leaves
    whole seeds; each carries the complete TrainConfig it trains."""
    entries = []
    for seed in spec.final.seed_values():
        for c in chosen:
            values = {k: v for k, v in c["params"].items() if k in TrainConfig.fields()}
            config = TrainConfig.from_dict({**_typed(values), **FINAL_EVALUATION, "seed": seed},
                                           source=f"configuration of trial {c['trial_id']}")
            entries.append({"config": config.to_dict(), "rank": c["rank"], "group": c["group"],
                            "source_trial": c["trial_id"], "source_value": c["value"]})
    return entries


def _typed(params: dict[str, str]) -> dict[str, Any]:
    """MLflow's strings back to the values TrainConfig takes."""
    fields = TrainConfig.fields()
    out: dict[str, Any] = {}
    for name, text in params.items():
        kind = fields[name].type if isinstance(fields[name].type, str) else fields[name].type.__name__
        if kind == "bool":
            out[name] = text == "True"
        elif kind == "int":
            out[name] = int(float(text))
        elif kind == "float":
            out[name] = float(text)
        else:
            out[name] = text
    return out


def describe(chosen: list[dict[str, Any]], spec: SweepSpec) -> str:
    per = f" per {spec.final.per}" if spec.final.per else ""
    configs = "; ".join(f"{c['trial_id']}" + (f" ({spec.final.per}={c['group']})" if spec.final.per else "")
                        + f" {spec.metric} {c['value']:.4f}" for c in chosen)
    return (f"final stage: the top {spec.final.top_k}{per} by {spec.metric} at the last epoch, each trained again "
            f"with {spec.final.seeds} new seeds and evaluated on the test split: {configs}")


def selection_json(chosen: list[dict[str, Any]]) -> str:
    return json.dumps([{k: c[k] for k in ("trial_id", "run_id", "value", "rank", "group")} for c in chosen])
