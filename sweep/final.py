"""The final stage: the search's selected configurations (sweep/selection.py) trained again with new
seeds, for the full budget, evaluated on the test split; a stage that stopped part-way continues
from its Tune state (and each run from its checkpoint)."""
from __future__ import annotations

import json
import math

import ray
from ray import tune

from sweep.errors import SweepError
from sweep.selection import completed_trials, describe, final_runs, select, selection_json
from sweep.state import SweepRun
from sweep.summary import SweepOutcome, outcome_of
from sweep.tracking.encoders import keep_encoders
from sweep.tracking.runs import FINAL
from sweep.tracking.writers import drain_seconds, wait_sent, write
from sweep.trust import Folder, check_trusted, sign_folder
from sweep.tuner.baselines import EARLY, measure_baselines
from sweep.tuner.console import ConsoleProgress
from sweep.tuner.driver import Driver
from sweep.tuner.mlflow_callback import MlflowTracking
from sweep.tuner.ray_setup import trial_result_files
from sweep.tuner.signing import SignRayState, fit_signed
from sweep.tuner.trainable import final_trainable
from vocabulary import INTERRUPTED


def shared_final_resources(resources: dict[str, float], concurrency: int, runs: int, cpus: float) -> tuple[dict[str, float], int]:
    """(resources per final run, runs at once). On CPUs only, when the final runs are more than run at
    once, at most twice as many, and not a whole number of waves, all of them run at once on the same
    CPUs, each with its share: a last, partial wave would leave CPUs idle (a run uses as many threads as its whole CPUs, at least
    one), so 3 runs on 2 CPUs take the time of 1.5 runs instead of 2. Not when --max-concurrent set
    the limit (fewer at once than the cluster's `cpus` fit), nor with GPUs."""
    fits = int(cpus // resources["cpu"])
    if resources["gpu"] or runs <= concurrency or runs > 2 * concurrency or not runs % concurrency or concurrency < fits:
        return resources, concurrency
    return {"cpu": math.floor(resources["cpu"] * concurrency / runs * 1e4) / 1e4, "gpu": 0.0}, runs


def run_final_stage(run: SweepRun, outcome: SweepOutcome, driver: Driver) -> None:
    """Train the selected configurations again with new seeds and evaluate them on the test split;
    outcome gets the runs' counts."""
    spec, path = run.spec, f"{run.path}/final"
    uri, parent_run_id, experiment_id, resources = run.uri, run.parent_run_id, run.experiment_id, run.resources
    if tune.Tuner.can_restore(path):
        check_trusted(Folder.at(path), run.name, run.storage)
        print(f"continuing the final stage from {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=final_trainable(resources, run.checkpoint_every),
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        left = wait_sent(parent_run_id, drain_seconds())
        if left:  # the selection reads the search's results from MLflow
            raise SweepError(f"the final stage needs the search's results in MLflow, whose server does not answer "
                             f"({left} records wait in the sweep's journal); run `byol-sweep finalize "
                             f"{run.name}` when it is back")
        chosen = select(spec, completed_trials(uri, experiment_id, parent_run_id, spec.metric))
        if not chosen:
            print("final stage skipped: no trial of the search ran the full budget with a finite "
                  f"{spec.metric}", flush=True)
            return
        print(describe(chosen, spec), flush=True)
        write(uri, parent_run_id, "log_batch", run_id=parent_run_id, tags={
            "byol_sweep.final_selection": selection_json(chosen),
            "byol_sweep.final": json.dumps({"top_k": spec.final.top_k, "seeds": spec.final.seeds,
                                            "per": spec.final.per})})
        early = EARLY.pop(parent_run_id, None)  # started in the search's last wave
        if early is not None:
            early.collect()
        else:
            measure_baselines(spec, uri, parent_run_id, resources, "test", spec.final.seed_values())
        entries = final_runs(spec, chosen)
        shared, at_once = shared_final_resources(resources, run.concurrency, len(entries),
                                                 float(ray.cluster_resources().get("CPU", 1)))
        tuner = tune.Tuner(
            final_trainable(shared, run.checkpoint_every),
            param_space={"final": tune.grid_search(entries)},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=at_once),
            run_config=tune.RunConfig(
                name="final", storage_path=outcome.path, verbose=0,
                callbacks=[MlflowTracking(uri, experiment_id, parent_run_id, spec, shared, stage=FINAL),
                           ConsoleProgress(spec, final_stage=True, total=len(entries)), SignRayState(),
                           *trial_result_files()],
                failure_config=tune.FailureConfig(max_failures=run.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        sign_folder(Folder.at(path))  # the Tuner wrote tuner.pkl
    results = fit_signed(driver, tuner, path)
    keep_encoders(uri, experiment_id, parent_run_id, results, "final")
    counts: dict[str, int] = {}
    for result in results:  # no scheduler stops a final run: one short of the budget was interrupted
        status = outcome_of(result.metrics or {}, spec.max_epochs, bool(result.error), ended=False)
        counts[status] = counts.get(status, 0) + 1
    outcome.final_counts = counts
    outcome.interrupted = not len(results) or INTERRUPTED in counts
    print(f"final stage {'stopped before the end' if outcome.interrupted else 'finished'}: "
          + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items())), flush=True)
