"""The sweep driver's own cost at scale, against bare Ray Tune (issue 27).

    python benchmarks/driver_scale.py                          # both workloads, 2 rounds, SQLite and a server
    python benchmarks/driver_scale.py --workload bookkeeping --rounds 3 --out result.json
    python benchmarks/driver_scale.py --trials 8 --rounds 1 --stores sqlite   # a smoke run

Ray Tune's release tests (ray-project/ray, release/tune_tests/scalability_tests/workloads/) are the
yardstick, scaled to a 2-core machine (Ray gets `--cpus` logical CPUs, one a trial):

- bookkeeping: Ray's is 10,000 trials of 1 s, 1 result a second, 16 at a time (625 s at best, passes
  under 800 s). Here: 100 trials, 4 at a time, 2 epochs of 1 s each (ASHA needs a rung below its
  budget: grace 1, reduction factor 2, so about half the trials stop after their first second).
- throughput: Ray's is 1,000 concurrent trials reporting every 2 s for 100 s (passes under 130 s).
  Here: 32 concurrent trials reporting every 2 s for 40 s (20 epochs; ASHA's one rung at epoch 19).

Each round runs the sides one after the other in this one process (one Ray instance): bare Ray Tune
(the stand-in trainable of sweep/tuner/standin.py, Ray's own ASHAScheduler with the same rungs, Ray's
default searcher, no callbacks but the result files the driver keeps too, actors reused from trial to trial as a simulation reuses them), then byol-sweep's real driver through `run_sweep(spec,
SweepOptions(simulate_epoch_s=...))` with the same stand-in (Optuna with its SQLite study, the
recording ASHA, the MLflow callback, its journal and sender thread, the console, the signing of Ray's
state) to a SQLite store and to a real `mlflow server` on 127.0.0.1. Rounds alternate which side goes
first.

What is measured:
- wall: Tuner.fit() for bare Tune; run_sweep from start to return (Ray is already up) for the driver.
- theoretical: the epochs each side actually ran (ASHA stops some) x epoch seconds / concurrency, at
  least the longest trial; `overhead` = wall / theoretical, and `ratio` = the driver's overhead / bare
  Tune's in the same round (ASHA stops different trials on each side, so walls alone do not compare).
- time per result: on the driver, the time Tune's controller spends on one result
  (TuneController._on_training_result, wrapped here: the scheduler, the searcher and every callback,
  everything the driver does before it hands the trial its next step), median and 99th percentile,
  for both sides; for the driver also each part of it (the MLflow callback, the console, the searcher,
  the scheduler; `own_per_result`: their sum for each result, the time byol-sweep adds to Tune's), and
  the time Tune spends ending a trial (_schedule_trial_stop). The journal's sender thread runs beside
  Tune's loop in the same process: what it costs shows in the wall time, and in a result's time only
  where it holds the interpreter's lock.
- exactly once: afterwards, from MLflow, every trial's `knn_acc` history against the epochs the
  driver's Tune controller received for it: missing and duplicated (trial, epoch) pairs.
- the console on a terminal (the sides above write to a log, where it draws every 10 s): its
  on_trial_result with 32 running trials, 5 results each, drawn to an in-memory terminal, no Ray.
- load: the 1-minute load average (os.getloadavg) before and after each side; the machine is shared.

Prints one JSON object per side and round as it goes (stderr), then the whole result (stdout or --out).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.execution.tune_controller import TuneController  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from sweep.runner import SweepOptions, run_sweep  # noqa: E402
from sweep.space import parse_space  # noqa: E402
from sweep.tracking.store import client_for  # noqa: E402
from sweep.tuner.algorithms import PruningOptunaSearch, RecordingASHA  # noqa: E402
from sweep.tuner.console import ConsoleProgress  # noqa: E402
from sweep.tuner.mlflow_callback import MlflowTracking  # noqa: E402
from sweep.tuner.ray_setup import quiet_ray, trial_result_files, without_default_loggers  # noqa: E402
from sweep.tuner.standin import standin_search_trainable  # noqa: E402
from tests.conftest import MlflowServer  # noqa: E402

WORKLOADS = {
    "bookkeeping": {"trials": 100, "epochs": 2, "epoch_s": 1.0, "concurrency": 4, "grace": 1},
    "throughput": {"trials": 32, "epochs": 20, "epoch_s": 2.0, "concurrency": 32, "grace": 19},
}


class Recorder:
    """What one side's driver did: seconds per result and per trial end, per part, and the epochs
    the controller received for each trial."""

    def __init__(self):
        self.per_result: list[float] = []
        self.per_result_cpu: list[float] = []  # the driver thread's own CPU time of each result (time.thread_time)
        self.slowest: list[tuple] = []
        self.own: list[float] = []  # of each result, the part spent in byol-sweep's own hooks
        self.in_hooks = 0.0
        self.per_stop: list[float] = []
        self.parts: dict[str, list[float]] = defaultdict(list)
        self.epochs: dict[str, list[int]] = defaultdict(list)


RECORDER = Recorder()


def _timed(name: str, method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            took = time.perf_counter() - start
            RECORDER.parts[name].append(took)
            RECORDER.in_hooks += took
    return wrapper


def _on_training_result(method):
    @functools.wraps(method)
    def wrapper(self, trial, result):
        results = result if isinstance(result, list) else [result]
        for each in results:
            if "epoch" in each and not each.get("diverged"):
                RECORDER.epochs[trial.trial_id].append(int(each["epoch"]))
        start, cpu, hooks = time.perf_counter(), time.thread_time(), RECORDER.in_hooks
        try:
            return method(self, trial, result)
        finally:
            took, took_cpu = time.perf_counter() - start, time.thread_time() - cpu
            RECORDER.per_result.extend([took / len(results)] * len(results))
            RECORDER.per_result_cpu.extend([took_cpu / len(results)] * len(results))
            RECORDER.slowest = sorted(RECORDER.slowest + [(round(took * 1e3, 2), round(took_cpu * 1e3, 2),
                                      round((RECORDER.in_hooks - hooks) * 1e3, 2), results[-1].get("epoch"),
                                      bool(results[-1].get("should_checkpoint") or "checkpoint_dir_name" in results[-1]))],
                                      reverse=True)[:5]
            RECORDER.own.extend([(RECORDER.in_hooks - hooks) / len(results)] * len(results))
    return wrapper


def _on_stop(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            RECORDER.per_stop.append(time.perf_counter() - start)
    return wrapper


def instrument() -> None:
    TuneController._on_training_result = _on_training_result(TuneController._on_training_result)
    TuneController._schedule_trial_stop = _on_stop(TuneController._schedule_trial_stop)
    for cls, name in ((MlflowTracking, "mlflow_callback"), (ConsoleProgress, "console"),
                      (PruningOptunaSearch, "searcher"), (RecordingASHA, "scheduler")):
        cls.on_trial_result = _timed(name, cls.on_trial_result)


def space(workload: dict, name: str):
    data = {
        "name": name,
        "base": {"dataset": "digits", "backbone": "small_cnn", "epochs": workload["epochs"], "batch_size": 64,
                 "projector_hidden": 64, "projector_out": 32},
        "search": {"base_lr": {"loguniform": [0.1, 3.0]}, "tau_base": {"one_minus_loguniform": [0.9, 0.999]},
                   "aug_strength": {"uniform": [0.5, 1.5]}},
        "metric": "knn_acc", "mode": "max", "algorithm": "optuna", "num_samples": workload["trials"],
        "asha": {"grace_period": workload["grace"], "reduction_factor": 2, "max_epochs": workload["epochs"]},
        "final": False,
    }
    return parse_space(data, f"benchmark space {name}")


def theoretical_s(workload: dict, epochs: dict[str, list[int]]) -> float:
    lengths = [len(set(e)) * workload["epoch_s"] for e in epochs.values()]
    return max(sum(lengths) / workload["concurrency"], max(lengths, default=0.0))


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


def run_bare(workload: dict, spec, root: Path, name: str) -> float:
    tuner = tune.Tuner(
        # the checkpoints a simulation keeps (sweep/runner.py: trainable_for): at the rungs and the last epoch
        standin_search_trainable(spec, {"cpu": 1, "gpu": 0}, 0, workload["epoch_s"]),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric="knn_acc", mode="max", num_samples=workload["trials"],
            scheduler=ASHAScheduler(time_attr="epoch", max_t=workload["epochs"], grace_period=workload["grace"],
                                    reduction_factor=2),
            max_concurrent_trials=workload["concurrency"],
            reuse_actors=True),  # as the driver's simulation does (sweep/runner.py)
        # the result files the driver keeps, without Tune's default loggers, as the driver fits
        run_config=tune.RunConfig(name=name, storage_path=str(root), verbose=0, callbacks=trial_result_files(),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),
    )
    start = time.monotonic()
    with without_default_loggers():
        tuner.fit()
    return time.monotonic() - start


def run_driver(workload: dict, spec, root: Path, name: str, uri: str) -> tuple[float, str, str]:
    options = SweepOptions(name=name, storage=str(root), tracking_uri=uri, max_concurrent=workload["concurrency"],
                           cpus_per_trial=1, simulate_epoch_s=workload["epoch_s"])
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # the console's lines; their cost is measured, not shown
        outcome = run_sweep(spec, options)
    return time.monotonic() - start, outcome.experiment, outcome.parent_run_id


def arrived(uri: str, parent_run_id: str, epochs: dict[str, list[int]]) -> dict[str, int]:
    """Each (trial, epoch) the controller received, against MLflow's knn_acc history of the trial's run."""
    client = client_for(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], max_results=5000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    logged = {}
    for run in runs:
        trial = run.data.tags.get("byol_sweep.trial_id")
        if trial:
            logged[trial] = [m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")]
    expected = sum(len(set(e)) for e in epochs.values())
    missing = sum(len(set(e) - set(logged.get(t, []))) for t, e in epochs.items())
    duplicated = sum(len(steps) - len(set(steps)) for steps in logged.values())
    extra = sum(len(set(steps) - set(epochs.get(t, []))) for t, steps in logged.items())
    return {"results": expected, "in_mlflow": sum(len(s) for s in logged.values()), "missing": missing,
            "duplicated": duplicated, "unexpected": extra, "runs": len(logged), "trials": len(epochs)}


def one_side(side: str, workload_name: str, workload: dict, root: Path, uris: dict[str, str], index: int) -> dict:
    global RECORDER
    RECORDER = Recorder()
    name = f"{workload_name}-{side}-{index}"
    spec = space(workload, name.replace("-", "_"))
    load_before = os.getloadavg()[0]
    if side == "bare":
        wall, check = run_bare(workload, spec, root, name), None
    else:
        wall, _, parent = run_driver(workload, spec, root, name, uris[side])
        check = arrived(uris[side], parent, RECORDER.epochs)
    theory = theoretical_s(workload, RECORDER.epochs)
    out = {"workload": workload_name, "side": side, "round": index, "wall_s": round(wall, 2),
           "theoretical_s": round(theory, 2), "overhead": round(wall / theory, 3) if theory else None,
           "per_result": quantiles(RECORDER.per_result), "own_per_result": quantiles(RECORDER.own),
           "per_result_cpu": quantiles(RECORDER.per_result_cpu), "slowest_results": RECORDER.slowest,
           "per_trial_end": quantiles(RECORDER.per_stop),
           "parts": {k: quantiles(v) for k, v in RECORDER.parts.items()},
           "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if check is not None:
        out["exactly_once"] = check
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def console_on_a_terminal(running: int = 32, results: int = 5) -> dict:
    """Seconds the console's on_trial_result takes on a terminal with `running` trials reporting in turn."""
    spec = space({"trials": 100, "epochs": 40, "grace": 1}, "console")
    progress = ConsoleProgress(spec, stream=_Terminal())
    trials = [SimpleNamespace(trial_id=f"{i:05d}", status="RUNNING", config={}, last_result={}) for i in range(running)]
    for trial in trials:
        progress.on_trial_start(0, trials, trial)
    took = []
    for epoch in range(1, results + 1):
        for trial in trials:
            start = time.perf_counter()
            progress.on_trial_result(0, trials, trial, {"epoch": epoch, "knn_acc": 0.3})
            took.append(time.perf_counter() - start)
            time.sleep(0.02)  # results 20 ms apart: 50 a second
    return {"running": running, **quantiles(took), "load_1min": round(os.getloadavg()[0], 2)}


def summary(runs: list[dict]) -> dict:
    """Per workload and store: the driver's overhead over bare Tune's of the same round, and its time per result."""
    out = {}
    for run in runs:
        if run["side"] == "bare":
            continue
        bare = next(r for r in runs if r["side"] == "bare" and r["round"] == run["round"]
                    and r["workload"] == run["workload"])
        key = f"{run['workload']}/{run['side']}"
        entry = out.setdefault(key, {"ratio": [], "driver_overhead": [], "bare_overhead": [], "p99_ms": [],
                                     "median_ms": [], "own_p99_ms": [], "bare_p99_ms": [], "missing": 0, "duplicated": 0})
        entry["ratio"].append(round(run["overhead"] / bare["overhead"], 3))
        entry["driver_overhead"].append(run["overhead"])
        entry["bare_overhead"].append(bare["overhead"])
        entry["p99_ms"].append(run["per_result"].get("p99_ms"))
        entry["median_ms"].append(run["per_result"].get("median_ms"))
        entry["own_p99_ms"].append(run["own_per_result"].get("p99_ms"))
        entry["bare_p99_ms"].append(bare["per_result"].get("p99_ms"))
        entry["missing"] += run["exactly_once"]["missing"] + run["exactly_once"]["unexpected"]
        entry["duplicated"] += run["exactly_once"]["duplicated"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", default="sqlite,server", help="comma-separated: sqlite, server")
    parser.add_argument("--trials", type=int, help="override the workload's trial count")
    parser.add_argument("--epoch-s", type=float, help="override the workload's seconds per epoch")
    parser.add_argument("--cpus", type=int, help="Ray's logical CPUs (default: the largest concurrency)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    workloads = {n: {**WORKLOADS[n], **({"trials": args.trials} if args.trials else {}),
                     **({"epoch_s": args.epoch_s} if args.epoch_s else {})} for n in names}
    for w in workloads.values():
        w["concurrency"] = min(w["concurrency"], w["trials"])
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    terminal = console_on_a_terminal()
    print(json.dumps({"console_on_a_terminal": terminal}), file=sys.stderr, flush=True)
    os.environ.setdefault("BYOL_SWEEP_DRAIN_S", "120")
    quiet_ray()
    instrument()
    with tempfile.TemporaryDirectory(prefix="ds-", dir="/tmp") as tmp:
        root = Path(tmp)
        uris, server = {"sqlite": f"sqlite:///{root}/mlflow.db"}, None
        if "server" in stores:
            (root / "server").mkdir()
            server = MlflowServer(root / "server").start()
            uris["server"] = server.uri
        ray.init(address="local", num_cpus=args.cpus or max(w["concurrency"] for w in workloads.values()),
                 object_store_memory=200 * 1024 * 1024, _temp_dir=str(root / "ray"), include_dashboard=False,
                 log_to_driver=False)
        runs = []
        try:
            for index in range(args.rounds):
                for workload_name, workload in workloads.items():
                    sides = ["bare", *stores]
                    for side in sides if index % 2 == 0 else sides[::-1]:
                        runs.append(one_side(side, workload_name, workload, root / "runs", uris, index))
        finally:
            ray.shutdown()
            if server is not None:
                server.kill()
    result = {"workloads": workloads, "stores": stores, "cpus": os.cpu_count(), "console_on_a_terminal": terminal,
              "runs": runs,
              "summary": summary(runs)}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
