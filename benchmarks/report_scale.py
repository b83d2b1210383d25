"""How long and how much memory the report of a 1,000- and a 10,000-trial sweep takes, from SQLite and
from a server.

    python benchmarks/report_scale.py                    # synthesise both sweeps, then report from SQLite
    python benchmarks/report_scale.py --server           # also through a real `mlflow server` on 127.0.0.1
    python benchmarks/report_scale.py --store DIR        # keep the synthesised store in DIR, reuse it next time
    python benchmarks/report_scale.py --trials 1000 --repeat 3   # one size, three rounds

Synthesises each sweep in MLflow exactly as docs/mlflow-layout.md lays it out (ASHA grace 1,
reduction factor 3, 100 epochs: most trials stopped at the early rungs, a few completed, every
epoch of every metric, ASHA's decisions, baselines, a 3-seed final stage), then runs
`byol-sweep report` on it in a child process and prints one JSON line per report: wall seconds, the
child's own CPU seconds and peak resident memory (from wait4), and the machine's load averages over
1, 5 and 15 minutes (os.getloadavg: what `uptime` prints) at the report's end. The sizes and stores
alternate within each of the --repeat rounds, so a change in the machine's load falls on all of them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vocabulary import EPOCH_METRICS, HYPERPARAMETER_METRICS, asha_rungs  # noqa: E402

GRACE, RF, MAX_EPOCHS = 1, 3, 100
LOGGED = [k for k in EPOCH_METRICS if k not in HYPERPARAMETER_METRICS]  # hp.* only under PBT


def synthesise(uri: str, trials: int, seed: int = 0) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    name = f"scale-{trials}"
    exp = client.create_experiment(name)
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000)
    space = {"base_lr": {"type": "loguniform", "low": 0.1, "high": 3.0},
             "tau_base": {"type": "one_minus_loguniform", "low": 0.9, "high": 0.9999},
             "aug_strength": {"type": "uniform", "low": 0.25, "high": 1.5}}
    params = {"metric": "knn_acc", "mode": "max", "search": "optuna", "num_samples": trials,
              "asha.grace_period": GRACE, "asha.reduction_factor": RF, "asha.max_epochs": MAX_EPOCHS,
              "optuna.n_startup_trials": 10, "swept": ",".join(space), "space_file": "scale.yaml",
              **{f"space.{k}": json.dumps(v) for k, v in space.items()}}
    parent = client.create_run(exp, run_name=name, tags={"byol_sweep.role": "sweep", "byol_sweep.sweep_name": name,
                                                         "byol_sweep.state": "finished"}).info.run_id
    baselines = {"baseline.raw_pixels.val": 0.30, "baseline.untrained.val": 0.25, "baseline.untrained_bn.val": 0.28,
                 "baseline.queries.val": 5000, "baseline.raw_pixels.test": 0.31, "baseline.untrained.test": 0.26,
                 "baseline.untrained_bn.test": 0.29, "baseline.queries.test": 10000}
    client.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, t0, 0) for k, v in baselines.items()])
    rungs = asha_rungs(GRACE, RF, MAX_EPOCHS)
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    best = (None, -1.0, None)
    for i in range(trials):
        lr, tau, aug = math.exp(rng.uniform(math.log(0.1), math.log(3))), 1 - math.exp(rng.uniform(math.log(1e-4), math.log(0.1))), rng.uniform(0.25, 1.5)
        level = 0.5 + 0.3 * math.exp(-(math.log(lr / 0.8)) ** 2) + rng.normal(0, 0.03)
        values, tags, epochs = [], {}, MAX_EPOCHS
        for e in range(1, MAX_EPOCHS + 1):
            knn = level * (1 - math.exp(-e / 10)) + rng.normal(0, 0.005)
            values.append(knn)
            if e in recorded:
                cutoff = float(np.percentile(recorded[e], (1 - 1 / RF) * 100)) if recorded[e] else None
                stop = cutoff is not None and knn < cutoff
                tags[f"asha.rung_{e}"] = json.dumps({"rung": e, "value": knn, "cutoff": cutoff,
                                                     "decision": "stop" if stop else "continue"})
                recorded[e].append(knn)
                if stop:
                    epochs = e
                    break
        status = "completed" if epochs == MAX_EPOCHS else "stopped_early"
        config = {"base_lr": lr, "tau_base": tau, "aug_strength": aug, "epochs": MAX_EPOCHS, "seed": 0,
                  "policy": "byol", "dataset": "cifar10", "backbone": "resnet18_cifar"}
        run = client.create_run(exp, run_name=f"trial_{i:05d}", start_time=t0 + i, tags={
            "mlflow.parentRunId": parent, "byol_sweep.role": "trial", "byol_sweep.trial_id": f"{i:05d}",
            "status": status, "policy": "byol", "seed": "0", "resources.cpu": "1", "resources.gpu": "0.25",
            **({"stopped_epoch": str(epochs)} if status == "stopped_early" else {}), **tags}).info.run_id
        metrics = []
        for e, knn in enumerate(values, start=1):
            row = {"loss": 2.0 / e, "knn_acc": knn, "z_std": 0.06, "z_spread": 0.7, "eff_rank": 40.0, "lr": lr,
                   "tau": tau, "images_per_s": 3000.0, "epoch_s": 10.0}
            metrics += [Metric(k, float(row[k]), t0 + 1000 * e, e) for k in LOGGED]
        for j in range(0, len(metrics), 1000):
            client.log_batch(run, metrics=metrics[j : j + 1000], params=[Param(k, str(v)) for k, v in config.items()] if j == 0 else [])
        client.set_terminated(run, "FINISHED", end_time=t0 + 1000 * epochs)
        if status == "completed" and values[-1] > best[1]:
            best = (f"{i:05d}", values[-1], config)
    for k, seed in enumerate((10000, 10001, 10002)):
        run = client.create_run(exp, run_name=f"final_{k}", tags={
            "mlflow.parentRunId": parent, "byol_sweep.role": "final", "status": "completed", "policy": "byol",
            "seed": str(seed), "final.rank": "1", "final.group": "", "final.source_trial": best[0],
            "final.source_value": str(best[1])}).info.run_id
        client.log_batch(run, params=[Param(k2, str(v)) for k2, v in {**best[2], "seed": seed, "eval_split": "test"}.items()],
                         metrics=[Metric("knn_acc", best[1] + rng.normal(0, 0.01), t0, MAX_EPOCHS),
                                  Metric("epoch_s", 10.0, t0, MAX_EPOCHS)])
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return name


def report(uri: str, experiment: str, out: Path) -> dict:
    """Wall seconds, CPU seconds (user + system: what contention from other jobs does not inflate) and
    peak resident memory of one `byol-sweep report` child (its own, from wait4: not the maximum over
    every child so far, which RUSAGE_CHILDREN would give)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "sweep.cli", "report", "--experiment", experiment,
                              "--tracking-uri", uri, "--out", str(out)], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"byol-sweep report failed (exit {child.returncode})")
    return {"seconds": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "load_1_5_15min": [round(x, 1) for x in os.getloadavg()]}


def _has_experiment(db: Path, name: str) -> bool:
    import sqlite3

    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("select count(*) from experiments where name = ?", (name,)).fetchone()[0] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000], help="the sweeps' sizes")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over every size and store")
    parser.add_argument("--server", action="store_true", help="also report through a real mlflow server")
    parser.add_argument("--store", type=Path, help="a folder to keep the synthesised mlflow.db in and reuse on the "
                                                   "next call (default: a new temporary folder)")
    args = parser.parse_args()
    folder = args.store or Path(tempfile.mkdtemp(prefix="report-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder.resolve()}/mlflow.db"
    for trials in args.trials:
        if not _has_experiment(folder / "mlflow.db", f"scale-{trials}"):
            start = time.perf_counter()
            synthesise(uri, trials)
            print(json.dumps({"synthesised_trials": trials, "seconds": round(time.perf_counter() - start, 1)}),
                  flush=True)
    with running_server(uri) if args.server else contextlib.nullcontext() as server_uri:
        for _ in range(args.repeat):
            for trials in args.trials:
                experiment = f"scale-{trials}"
                print(json.dumps({"store": "sqlite", "trials": trials, **report(uri, experiment, folder / "sqlite")}),
                      flush=True)
                if server_uri:
                    result = report(server_uri, experiment, folder / "server")
                    print(json.dumps({"store": "server", "trials": trials, **result}), flush=True)


@contextlib.contextmanager
def running_server(uri: str):
    """A real `mlflow server` over the store (1 worker) on 127.0.0.1, its URL once it has answered its first
    request (it opens its store then: timed apart and printed), as a user's running server has."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300  # a loaded machine starts it slowly
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("mlflow server did not start")
                time.sleep(0.5)
        start = time.perf_counter()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                               timeout=300)
        print(json.dumps({"server_first_request_s": round(time.perf_counter() - start, 2)}), flush=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

if __name__ == "__main__":
    main()
