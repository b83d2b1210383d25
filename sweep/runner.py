"""Run or resume a sweep: Ray, the Tuner, the callbacks, and where everything is stored."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vocabulary import COMPLETED, INTERRUPTED, better, outcome

from .space import FinalStage, SweepSpec, load_space, parse_space
from .yaml_input import read_yaml
from .tracking import (
    DRIVER_TRACKING_URI,
    FINAL,
    check_store,
    client_for,
    close_journal,
    end_sweep,
    log_baselines,
    mask_uri,
    open_journal,
    resolve_tracking_uri,
    start_sweep,
    wait_sent,
    write,
)

STATE_FILE = "sweep.json"
# a sweep's name becomes a folder, an MLflow run name and part of a filter: a safe set only
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
# sizes above which a sweep is refused unless asked for on purpose (--allow-large)
MAX_TRIALS = 10_000
MAX_GRID = 1_000
# Ray adds up to 64 bytes (/session_<date>_<time>_<pid>/sockets/plasma_store); Unix sockets allow 107.
MAX_RAY_TEMP_DIR = 43


class SweepError(RuntimeError):
    """A sweep cannot start or resume; the message says why and what to do."""


@dataclass
class SweepOptions:
    name: str | None = None
    storage: str = "byol-runs"
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    num_samples: int | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    max_failures: int = 2
    checkpoint_every: int = 1
    seed: int = 0
    object_store_memory: int = 200 * 1024 * 1024
    allow_large: bool = False

    def validate(self) -> None:
        """Raise SweepError naming the first option out of range."""
        def finite(v) -> bool:
            return isinstance(v, (int, float)) and math.isfinite(v)

        checks = [
            ("--cpus-per-trial", self.cpus_per_trial, lambda v: finite(v) and v > 0, "a number > 0"),
            ("--gpus-per-trial", self.gpus_per_trial, lambda v: finite(v) and v >= 0, "a number >= 0"),
            ("--max-concurrent", self.max_concurrent, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
            ("--num-samples", self.num_samples, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
            ("--max-failures", self.max_failures, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
            ("--checkpoint-every", self.checkpoint_every, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ]
        for flag, value, ok, allowed in checks:
            if value is not None and not ok(value):
                raise SweepError(f"{flag} is {value}; allowed: {allowed}")
        if self.name is not None:
            check_name(self.name, "--name")


def check_name(name: str, what: str) -> None:
    """Refuse a sweep name outside [A-Za-z0-9._-], with a leading dot, or over 100 characters."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SweepError(f"{what} {name!r} is not a safe sweep name; allowed: 1 to 100 of the characters "
                         "A-Z a-z 0-9 . _ - (not starting with a dot)")


def check_size(spec: SweepSpec, allow_large: bool = False) -> None:
    """Refuse a sweep of more than MAX_TRIALS trials or a grid of more than MAX_GRID combinations,
    unless allow_large: a typo (num_samples: 1000000000000) must not start a sweep that never ends."""
    if allow_large:
        return
    grid = math.prod(len(v) for v in spec.grid.values()) if spec.grid else 1
    if grid > MAX_GRID:
        raise SweepError(f"{spec.source}: grid has {grid:,} combinations; allowed: at most {MAX_GRID:,} "
                         "(pass --allow-large to run it on purpose)")
    total = spec.num_samples * grid
    if total > MAX_TRIALS:
        raise SweepError(f"{spec.source}: {total:,} trials (num_samples {spec.num_samples:,} x {grid:,} grid "
                         f"combinations); allowed: at most {MAX_TRIALS:,} (pass --allow-large to run it on purpose)")


def check_datasets(spec: SweepSpec) -> None:
    """Every dataset the sweep may train on, checked on the driver before Ray starts (paths, classes)."""
    from trainer.data import check_dataset

    values = [spec.base.get("dataset", "digits"), *spec.grid.get("dataset", [])]
    if "dataset" in spec.search:
        values += list(spec.search["dataset"].values)
    for value in dict.fromkeys(values):
        check_dataset(str(value))


def make_private_dir(folder: Path) -> None:
    """Create folder (and parents) with the sweep's folder itself readable by the user only."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


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


def _is_uri(storage: str) -> bool:
    return "://" in storage


def storage_root(storage: str) -> str:
    return storage if _is_uri(storage) else str(Path(storage).expanduser().resolve())


def local_state_dir(storage: str, name: str) -> Path:
    """Where sweep.json and Ray's temp files live: under the storage dir when it is local."""
    if _is_uri(storage):
        return Path("~/.cache/byol-sweep/sweeps").expanduser() / name
    return Path(storage_root(storage)) / name


def _ray_temp_dir(state_dir: Path) -> str:
    """Ray's temp dir: <state_dir>/ray. Ray puts Unix sockets in it, whose paths must stay under 108
    bytes, so a long one is reached through a short symlink in /tmp; the files stay under state_dir."""
    folder = state_dir / "ray"
    make_private_dir(folder)
    if len(str(folder)) <= MAX_RAY_TEMP_DIR:
        return str(folder)
    import hashlib

    links = Path(tempfile.gettempdir())
    for stale in links.glob("byol-ray-*"):  # links whose sweep folder was deleted
        if stale.is_symlink() and not stale.exists():
            stale.unlink(missing_ok=True)
    link = links / f"byol-ray-{hashlib.sha1(str(folder).encode()).hexdigest()[:10]}"
    if not (link.is_symlink() and link.resolve() == folder.resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(folder, target_is_directory=True)
    return str(link)


def start_ray(address: str | None, state_dir: Path, object_store_memory: int, num_cpus: int | None = None):
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as err:
            raise SweepError(_connection_error(address, err)) from None
        return
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
             _temp_dir=_ray_temp_dir(state_dir), include_dashboard=False, log_to_driver=False,
             **local_ray_binding())


def local_ray_binding() -> dict:
    """ray.init arguments that put a local sweep's Ray on the loopback address only.

    Ray turns 127.0.0.1 into the machine's address on Linux unless its "no cluster" mode is on
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read once when ray is imported; the default on macOS and
    Windows), and then binds its GCS, raylets and workers to every interface. In that mode every
    Ray process listens on 127.0.0.1. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 keeps Ray's default."""
    from ray._private import ray_constants

    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0").lower() not in ("0", "false"):
        return {}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the Ray processes this one starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: ray was imported before
    return {"_node_ip_address": "127.0.0.1"}


def _connection_error(address: str, err: BaseException) -> str:
    causes = [err]
    while causes[-1].__cause__ is not None and len(causes) < 10:
        causes.append(causes[-1].__cause__)
    # Ray passes the GCS client's AuthenticationError on as the text of a RuntimeError
    if any(type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e) for e in causes):
        # Ray sends a token to an explicit address only when told to.
        return (f"the Ray cluster at {address} requires its auth token: set RAY_AUTH_MODE=token and provide "
                "the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")
    return f"cannot connect to the Ray cluster at {address}: {str(err).strip().splitlines()[-1]}"


def quiet_ray() -> None:
    """Our progress view replaces Ray's tables; a diverged trial's last result has no metric;
    MLflow's "View run at <url>" lines would print the tracking URI's credentials."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def trial_resources(options: SweepOptions) -> tuple[dict[str, float], int]:
    """(resources per trial, concurrency) from the options and what the cluster has."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
    gpu = options.gpus_per_trial if options.gpus_per_trial is not None else (1.0 if gpus else 0.0)
    cpu = options.cpus_per_trial if options.cpus_per_trial is not None else (max(1.0, cpus // gpus) if gpu and gpus else 1.0)
    if cpu > cpus:
        raise SweepError(f"--cpus-per-trial {cpu:g} is more than the cluster's {cpus:g} CPUs")
    if gpu > 0 and gpu > gpus:
        raise SweepError(f"--gpus-per-trial {gpu:g} is more than the cluster's {gpus:g} GPUs")
    fits = int(cpus // cpu) if cpu else 10**6
    if gpu:
        fits = min(fits, int(gpus // gpu))
    concurrency = max(1, min(fits, options.max_concurrent or fits))
    return {"cpu": cpu, "gpu": gpu}, concurrency


def _trainable(spec: SweepSpec, resources: dict[str, float], checkpoint_every: int):
    from ray import tune

    from .trainable import train_byol

    return tune.with_resources(tune.with_parameters(train_byol, spec=spec, checkpoint_every=checkpoint_every), resources)


def _final_trainable(resources: dict[str, float], checkpoint_every: int):
    from ray import tune

    from .trainable import train_final

    return tune.with_resources(tune.with_parameters(train_final, checkpoint_every=checkpoint_every), resources)


def _callbacks(spec, uri, experiment_id, parent_run_id, resources, decisions):
    from .callback import MlflowTracking
    from .progress import ConsoleProgress

    return [MlflowTracking(uri, experiment_id, parent_run_id, spec, resources, decisions=decisions), ConsoleProgress(spec)]


def _baselines_task(config: dict) -> dict[str, float]:
    from trainer import TrainConfig
    from trainer.baselines import baseline_accuracies

    return baseline_accuracies(TrainConfig.from_dict(config))


def measure_baselines(spec: SweepSpec, uri: str, parent_run_id: str, resources: dict[str, float],
                      split: str) -> dict[str, float] | None:
    """Once per sweep and split: kNN (and linear probe, when the configuration fits one) of raw pixels
    and of the untrained encoder, on the base configuration's bank and queries (the final stage's for
    test), as a task with a trial's resources."""
    import ray

    from .final import FINAL_EVALUATION

    metrics = client_for(uri).get_run(parent_run_id).data.metrics
    if f"baseline.raw_pixels.{split}" in metrics:
        return None  # measured before this resume
    config = spec.train_config({}).to_dict()
    if split == "test":
        config.update(FINAL_EVALUATION)
    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)(_baselines_task)
    try:
        baselines = ray.get(task.remote(config))
    except Exception as err:  # the search goes on; the report says the baselines are missing
        print(f"baselines on the {split} split could not be measured: {str(err).strip().splitlines()[-1]}", flush=True)
        return None
    log_baselines(uri, parent_run_id, split, baselines)
    probes = (f"; linear probe {baselines['raw_pixels_probe']:.4f}, {baselines['untrained_probe']:.4f} and "
              f"{baselines['untrained_bn_probe']:.4f}" if "raw_pixels_probe" in baselines else "")
    print(f"baselines on the {split} split ({int(baselines['queries'])} queries): kNN on raw pixels "
          f"{baselines['raw_pixels']:.4f}, on the untrained encoder {baselines['untrained']:.4f} "
          f"({baselines['untrained_bn']:.4f} with BatchNorm calibrated){probes}", flush=True)
    return baselines


def local_gpu_count() -> int:
    """The GPUs a local Ray would find here, counted without starting Ray."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # a torch without CUDA support, or a broken driver: no GPU Ray could use either
        return 0


def check_local_resources(options: SweepOptions) -> None:
    """A local sweep's --cpus-per-trial and --gpus-per-trial against this machine, before anything
    is made on disk and before Ray starts; a cluster (--address, or a Ray already started in this
    process) is checked against its own resources once connected."""
    ray = sys.modules.get("ray")
    if options.address or (ray is not None and ray.is_initialized()):
        return
    if options.gpus_per_trial:
        gpus = local_gpu_count()
        if not gpus:
            raise SweepError(f"--gpus-per-trial is {options.gpus_per_trial:g} but this machine has no GPU; "
                             "leave it at 0 here, or give --address of a Ray cluster with GPUs")
        if options.gpus_per_trial > gpus:
            raise SweepError(f"--gpus-per-trial is {options.gpus_per_trial:g} but this machine has "
                             f"{gpus} GPU{'s' if gpus > 1 else ''}; allowed: a number up to {gpus}")
    cpus = os.cpu_count() or 1
    if options.cpus_per_trial is not None and options.cpus_per_trial > cpus:
        raise SweepError(f"--cpus-per-trial is {options.cpus_per_trial:g} but this machine has {cpus} CPU"
                         f"{'s' if cpus > 1 else ''}; allowed: a number up to {cpus}")


def run_sweep(space: str | SweepSpec, options: SweepOptions) -> SweepOutcome:
    options.validate()
    check_local_resources(options)  # before Ray is imported, any folder is made or MLflow is opened

    from ray import tune

    from .search import tune_parts

    spec = load_space(space) if isinstance(space, str) else space
    if options.num_samples:
        spec.num_samples = options.num_samples
    check_size(spec, options.allow_large)
    name = options.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name, "--name" if options.name else f"{spec.source}: name")
    check_datasets(spec)  # on the driver, before Ray starts
    root = storage_root(options.storage)
    state_dir = local_state_dir(options.storage, name)
    if (state_dir / STATE_FILE).exists():
        raise SweepError(f"a sweep named {name!r} already exists in {root}; continue it with "
                         f"`byol-sweep resume {name} --storage {options.storage}` or choose another --name")
    uri = resolve_tracking_uri(options.tracking_uri)
    experiment = options.experiment or name
    created = not state_dir.exists()
    started_ray = False
    parent_run_id = None
    try:
        try:
            make_private_dir(state_dir)
        except OSError as err:
            raise SweepError(f"--storage {options.storage}: cannot create {state_dir} ({err.strerror}); "
                             "give a writable folder or a URI") from None
        check_store(uri)  # before any trial starts

        import ray

        started_ray = not options.address and not ray.is_initialized()
        start_ray(options.address, state_dir, options.object_store_memory)
        resources, concurrency = trial_resources(options)
        quiet_ray()
        parent_run_id = start_sweep(uri, experiment, spec, name, {
            "cpus_per_trial": resources["cpu"], "gpus_per_trial": resources["gpu"], "max_concurrent": concurrency,
            "storage": root, "sweep_name": name,
        })
        experiment_id = client_for(uri).get_run(parent_run_id).info.experiment_id
        DRIVER_TRACKING_URI[parent_run_id] = uri
        open_journal(uri, parent_run_id, state_dir, _sync_command(name, options.storage), new=True)
        decisions: dict[str, list[dict]] = {}
        parts = tune_parts(spec, concurrency, options.seed, state_dir, decisions)
        print(f"sweep {name}: {spec.total_trials} trials of space {spec.name} ({spec.algorithm}, "
              f"{spec.scheduler.describe()}), {concurrency} at a time with {resources['cpu']:g} CPU"
              f"{' and %g GPU' % resources['gpu'] if resources['gpu'] else ''} each", flush=True)
        print(f"  results: {root}/{name}   MLflow: {mask_uri(uri)} (experiment {experiment})", flush=True)
        if parts.note:
            print(f"  {parts.note}", flush=True)
        tuner = tune.Tuner(
            _trainable(spec, resources, options.checkpoint_every),
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                # the scheduler sets the limit, the searcher says where it goes (sweep/search.py tune_parts)
                search_alg=parts.search_alg, scheduler=parts.scheduler,
                max_concurrent_trials=parts.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=root, verbose=0,
                callbacks=_callbacks(spec, uri, experiment_id, parent_run_id, resources, decisions),
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=parts.num_to_keep),
            ),
        )
        # only now, with the Tuner built: a sweep that failed to start leaves no state that `run` would refuse
        (state_dir / STATE_FILE).write_text(json.dumps({
            "name": name, "space_source": spec.source, "space_text": spec.text, "num_samples": spec.num_samples,
            "options": {**asdict(options), "tracking_uri": mask_uri(uri)}, "storage": root,
            "tracking_uri": mask_uri(uri), "experiment": experiment, "experiment_id": experiment_id,
            "parent_run_id": parent_run_id, "resources": resources, "concurrency": concurrency,
        }, indent=2))
    except BaseException:
        # a sweep that failed to start leaves no folder behind, and no parent run marked running
        if parent_run_id is not None:
            _end_quietly(uri, parent_run_id)
            close_journal(parent_run_id)
        if started_ray:
            import ray

            ray.shutdown()
        if created:
            shutil.rmtree(state_dir, ignore_errors=True)
        raise
    with _driver(uri, parent_run_id):
        measure_baselines(spec, uri, parent_run_id, resources, spec.train_config({}).eval_split)
        results = _fit(tuner)
        keep_models(uri, experiment_id, parent_run_id, results, "trial")
        outcome = _finish(results, spec, name, root, uri, experiment, parent_run_id, experiment_id)
        return _final_and_end(outcome, spec, experiment_id, resources, concurrency, options.checkpoint_every,
                              options.max_failures)


# the driver's state while Tune runs: a SIGTERM then stops Tune as Ctrl-C does
_FIT = {"active": False, "stopping": False}


def keep_models(uri: str, experiment_id: str, parent_run_id: str, results, role: str) -> None:
    """Log each completed run's encoder to MLflow; a failure to do so is said, never fatal."""
    from .models import log_models

    left = wait_sent(parent_run_id, float(os.environ.get("BYOL_SWEEP_DRAIN_S", "60")))
    if left:  # the runs are not in MLflow yet: their checkpoints stay on disk
        print(f"the encoders are not logged to MLflow: {left} records of this sweep are still unsent",
              file=sys.stderr, flush=True)
        return
    try:
        n = log_models(uri, experiment_id, parent_run_id, results, role)
    except Exception as err:  # the checkpoints stay on disk; `byol-sweep export` needs the artifact
        print(f"the encoders could not be logged to MLflow: {mask_uri(str(err).strip().splitlines()[-1])}",
              file=sys.stderr, flush=True)
        return
    if n:
        print(f"logged {n} encoder(s) to MLflow (model/encoder.pt of each run; `byol-sweep export` gets one)",
              flush=True)


def _fit(tuner):
    _FIT.update(active=True, stopping=False)
    try:
        return tuner.fit()
    finally:
        _FIT["active"] = False


def _end_quietly(uri: str, parent_run_id: str) -> None:
    try:
        end_sweep(uri, parent_run_id, "interrupted")
    except Exception as err:  # the store itself may be what failed
        print(f"the sweep could not be marked interrupted in MLflow: {str(err).strip().splitlines()[-1:]}",
              file=sys.stderr, flush=True)


@contextlib.contextmanager
def _driver(uri: str, parent_run_id: str):
    """Run a sweep's driver: SIGTERM stops Tune gracefully (as Ctrl-C does: the trials are saved
    and the sweep can be resumed), or, outside Tune, raises KeyboardInterrupt; any error or
    interruption leaves the parent run `interrupted`."""
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None

    def on_sigterm(signum, frame):
        tune_handler = signal.getsignal(signal.SIGUSR1) if _FIT["active"] else None
        if callable(tune_handler) and not _FIT["stopping"]:
            _FIT["stopping"] = True
            print("SIGTERM received: stopping the trials and saving the sweep's state", file=sys.stderr, flush=True)
            tune_handler(signum, frame)
        else:
            raise KeyboardInterrupt

    if main:
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except BaseException:
        _end_quietly(uri, parent_run_id)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        close_journal(parent_run_id)  # waits a bounded time for the journal to be sent


def _sync_command(name: str, storage: str) -> str:
    return f"byol-sweep sync {name} --storage {storage}"


def _final_and_end(outcome: SweepOutcome, spec: SweepSpec, experiment_id: str, resources: dict[str, float],
                   concurrency: int, checkpoint_every: int, max_failures: int) -> SweepOutcome:
    """After a search that ended: its final stage (if the space has one), then the sweep's state."""
    if not outcome.interrupted:
        write(outcome.tracking_uri, outcome.parent_run_id, "set_tag", run_id=outcome.parent_run_id,
              key="byol_sweep.search_state", value="finished")
        if spec.final is not None:
            run_final_stage(outcome, spec, experiment_id, resources, concurrency, checkpoint_every, max_failures)
    end_sweep(outcome.tracking_uri, outcome.parent_run_id, "interrupted" if outcome.interrupted else "finished")
    if outcome.interrupted:
        print(f"continue it with: byol-sweep resume {outcome.name}", flush=True)
    return outcome


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


def run_final_stage(outcome: SweepOutcome, spec: SweepSpec, experiment_id: str, resources: dict[str, float],
                    concurrency: int, checkpoint_every: int = 1, max_failures: int = 2) -> None:
    """Train the selected configurations again with new seeds and evaluate them on the test split;
    a stage that stopped part-way continues from its Tune state (and each run from its checkpoint)."""
    import ray
    from ray import tune

    from .callback import MlflowTracking
    from .final import completed_trials, describe, final_runs, select, selection_json
    from .progress import ConsoleProgress

    path = f"{outcome.path}/final"
    uri, parent_run_id = outcome.tracking_uri, outcome.parent_run_id
    if tune.Tuner.can_restore(path):
        print(f"continuing the final stage from {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=_final_trainable(resources, checkpoint_every),
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        left = wait_sent(parent_run_id, float(os.environ.get("BYOL_SWEEP_DRAIN_S", "60")))
        if left:  # the selection reads the search's results from MLflow
            raise SweepError(f"the final stage needs the search's results in MLflow, whose server does not answer "
                             f"({left} records wait in the sweep's journal); run `byol-sweep finalize "
                             f"{outcome.name}` when it is back")
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
        measure_baselines(spec, uri, parent_run_id, resources, "test")
        entries = final_runs(spec, chosen)
        shared, at_once = shared_final_resources(resources, concurrency, len(entries),
                                                 float(ray.cluster_resources().get("CPU", 1)))
        tuner = tune.Tuner(
            _final_trainable(shared, checkpoint_every),
            param_space={"final": tune.grid_search(entries)},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=at_once),
            run_config=tune.RunConfig(
                name="final", storage_path=outcome.path, verbose=0,
                callbacks=[MlflowTracking(uri, experiment_id, parent_run_id, spec, shared, stage=FINAL),
                           ConsoleProgress(spec, final_stage=True, total=len(entries))],
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    results = _fit(tuner)
    keep_models(uri, experiment_id, parent_run_id, results, "final")
    counts: dict[str, int] = {}
    for result in results:  # no scheduler stops a final run: one short of the budget was interrupted
        status = outcome_of(result.metrics or {}, spec.max_epochs, bool(result.error), ended=False)
        counts[status] = counts.get(status, 0) + 1
    outcome.final_counts = counts
    outcome.interrupted = not len(results) or INTERRUPTED in counts
    print(f"final stage {'stopped before the end' if outcome.interrupted else 'finished'}: "
          + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items())), flush=True)


def read_state(name: str, storage: str) -> dict:
    check_name(name, "sweep name")
    path = local_state_dir(storage, name) / STATE_FILE
    if not path.exists():
        root = storage_root(storage)
        known = sorted(p.parent.name for p in Path(root).glob(f"*/{STATE_FILE}")) if not _is_uri(storage) else []
        listing = f"; sweeps there: {', '.join(known)}" if known else "; there are no sweeps there"
        raise SweepError(f"no sweep named {name!r} in {root}{listing}")
    return json.loads(path.read_text())


def resume_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None,
                 address: str | None = None, object_store_memory: int = 200 * 1024 * 1024) -> SweepOutcome:
    """Continue a sweep whose driver stopped: finished trials stay finished, unfinished ones
    continue from their last checkpoint, failed ones stay failed."""
    from ray import tune

    state = read_state(name, storage)
    spec = parse_space(read_yaml(state["space_text"]), state["space_source"], state["space_text"])
    spec.num_samples = state["num_samples"]
    uri = _resume_uri(state, name, tracking_uri)
    DRIVER_TRACKING_URI[state["parent_run_id"]] = uri
    path = f"{state['storage']}/{name}"
    if not tune.Tuner.can_restore(path):
        raise SweepError(f"sweep {name} has no Tune state at {path} (it stopped before its first trial); start it again with `byol-sweep run`")
    open_journal(uri, state["parent_run_id"], local_state_dir(storage, name), _sync_command(name, storage))
    try:
        start_ray(address, local_state_dir(storage, name), object_store_memory)
    except BaseException:
        close_journal(state["parent_run_id"])
        raise
    quiet_ray()
    parent_run_id = start_sweep(uri, state["experiment"], spec, name, {})  # finds the parent, marks it running
    print(f"resuming sweep {name} from {path}", flush=True)
    with _driver(uri, parent_run_id):
        tuner = tune.Tuner.restore(
            path, trainable=_trainable(spec, state["resources"], state["options"]["checkpoint_every"]),
            resume_unfinished=True, resume_errored=False, restart_errored=False,
        )
        results = _fit(tuner)
        keep_models(uri, state["experiment_id"], parent_run_id, results, "trial")
        outcome = _finish(results, spec, name, state["storage"], uri, state["experiment"], parent_run_id,
                          state["experiment_id"])
        return _final_and_end(outcome, spec, state["experiment_id"], state["resources"], state["concurrency"],
                              state["options"]["checkpoint_every"], state["options"]["max_failures"])


def finalize_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None, address: str | None = None,
                   final: FinalStage | None = None, object_store_memory: int = 200 * 1024 * 1024) -> SweepOutcome:
    """Run (or continue) the final stage of a sweep whose search has finished; `final` overrides
    the space's final stage (a space with `final: false` gets one this way)."""
    state = read_state(name, storage)
    spec = parse_space(read_yaml(state["space_text"]), state["space_source"], state["space_text"])
    spec.final = final or spec.final or FinalStage()
    uri = _resume_uri(state, name, tracking_uri)
    DRIVER_TRACKING_URI[state["parent_run_id"]] = uri
    open_journal(uri, state["parent_run_id"], local_state_dir(storage, name), _sync_command(name, storage))
    try:
        tags = client_for(uri).get_run(state["parent_run_id"]).data.tags
        if tags.get("byol_sweep.search_state") != "finished":
            raise SweepError(f"sweep {name}'s search has not finished; continue it with `byol-sweep resume {name}` "
                             "(which runs the final stage at its end)")
        start_ray(address, local_state_dir(storage, name), object_store_memory)
    except BaseException:
        close_journal(state["parent_run_id"])
        raise
    quiet_ray()
    write(uri, state["parent_run_id"], "set_tag", run_id=state["parent_run_id"], key="byol_sweep.state",
          value="running")
    outcome = SweepOutcome(
        name=name, path=f"{state['storage']}/{name}", tracking_uri=uri, experiment=state["experiment"],
        parent_run_id=state["parent_run_id"], best_config=None, best_metric=None, best_trial=None)
    with _driver(uri, outcome.parent_run_id):
        run_final_stage(outcome, spec, state["experiment_id"], state["resources"], state["concurrency"],
                        state["options"]["checkpoint_every"], state["options"]["max_failures"])
        end_sweep(uri, outcome.parent_run_id, "interrupted" if outcome.interrupted else "finished")
    best = tags.get("byol_sweep.best_metric")
    outcome.best_metric = float(best) if best else None
    return outcome


def _resume_uri(state: dict, name: str, tracking_uri: str | None) -> str:
    """The tracking URI to continue a sweep with, checked to hold the sweep's parent run."""
    stored_uri = state["tracking_uri"]
    if tracking_uri is None and "***" in stored_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SweepError(f"sweep {name} logs to {stored_uri}, whose secret is not stored; pass --tracking-uri "
                         "(or set MLFLOW_TRACKING_URI) with the credentials")
    uri = resolve_tracking_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or stored_uri)
    check_store(uri)
    if not _holds_run(uri, state["parent_run_id"]):
        raise SweepError(f"the MLflow store {mask_uri(uri)} does not hold sweep {name}'s parent run "
                         f"{state['parent_run_id']}; resume with the store it started with ({stored_uri})")
    return uri


def _holds_run(uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client_for(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def outcome_of(metrics: dict, max_epochs: int, errored: bool, ended: bool = True) -> str:
    return outcome(int(metrics.get("epoch", 0)), max_epochs, diverged=bool(metrics.get("diverged")), errored=errored,
                   ended=ended)


def _finish(results, spec: SweepSpec, name: str, root: str, uri: str, experiment: str, parent_run_id: str,
            experiment_id: str) -> SweepOutcome:

    from .callback import tracker_for
    from .tracking import SEARCH

    tracker = tracker_for(parent_run_id, SEARCH)
    ended = tracker.ended if tracker is not None else None
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
        name=name, path=f"{root}/{name}", tracking_uri=uri, experiment=experiment, parent_run_id=parent_run_id,
        best_config=spec.train_config(best[1].config).to_dict() if best else None,
        best_metric=best[0] if best else None, best_trial=best[2] if best else None, counts=counts,
        interrupted=interrupted,
    )
    _print_summary(finished, spec, experiment_id)
    return finished


def _print_summary(outcome: SweepOutcome, spec: SweepSpec, experiment_id: str) -> None:
    out = sys.stdout
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(outcome.counts.items()))
    print(f"\nsweep {outcome.name} {'stopped before the end' if outcome.interrupted else 'finished'}: {counts}", file=out)
    if outcome.best_config and spec.compared_fields:
        # a comparison: its best single (arm, seed) trial answers no question, the paired arms do
        print(f"this sweep compares {', '.join(spec.compared_fields)} across its seeds: the report gives each arm's mean "
              f"{spec.metric} and the differences paired by seed", file=out)
    elif outcome.best_config:
        swept = " ".join(f"{k}={outcome.best_config[k]}" for k in spec.swept)
        print(f"best {spec.metric} at the last epoch, among trials that ran all {spec.max_epochs} epochs: "
              f"{outcome.best_metric:.4f} (trial {outcome.best_trial}) with {swept}", file=out)
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
    from urllib.parse import quote

    trials = quote("tags.`byol_sweep.role` = 'trial'")
    order = quote(f"metrics.`{metric}`")
    query = f"searchFilter={trials}&orderByKey={order}&orderByAsc={'false' if mode == 'max' else 'true'}"
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def sync_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None) -> tuple[int, int]:
    """Send the MLflow records a sweep's journal holds and MLflow has not got (its tracking server
    was away when the driver ended); returns (sent, left)."""
    from .journal import JournalBusy
    from .tracking import sync_journal

    state = read_state(name, storage)
    uri = _resume_uri(state, name, tracking_uri)
    try:
        return sync_journal(uri, local_state_dir(storage, name))
    except JournalBusy:
        raise SweepError(f"sweep {name}'s driver is running: it sends its MLflow records itself") from None


def sync_sweeps(uri: str, sweeps: list[tuple[str | None, str | None]]) -> None:
    """Before a report: send what the journals of these sweeps (name, storage: the parent run's params)
    still hold, for those whose folder is on this machine."""
    from .journal import JournalBusy
    from .tracking import journal_path, sync_journal

    for name, storage in sweeps:
        if not name or not storage or not NAME_PATTERN.fullmatch(name):
            continue
        folder = local_state_dir(storage, name)
        if not journal_path(folder).exists():
            continue
        try:
            sent, left = sync_journal(uri, folder)
        except JournalBusy:
            print(f"sweep {name} is running: the report shows what MLflow holds now", file=sys.stderr, flush=True)
            continue
        if sent:
            print(f"sent {sent} MLflow records of sweep {name} from its journal before reading", flush=True)
        if left:
            print(f"{left} MLflow records of sweep {name} could not be sent; the report misses them",
                  file=sys.stderr, flush=True)
