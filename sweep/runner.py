"""The story of one sweep: check it, start Ray and the sweep's MLflow run, search, keep the encoders,
sum up, run the final stage, end. `resume`, `finalize` and `sync` pick a stopped sweep up from its
sweep.json (sweep/state.py); `sync` is sweep/sync.py."""
from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass

import ray
from ray import tune

from sweep.driver_log import LibraryLog
from sweep.errors import SweepError
from sweep.final import run_final_stage
from sweep.preflight import preflight
from sweep.space import FinalStage, SweepSpec, load_space, parse_space
from sweep.space.yaml_input import read_yaml
from sweep.state import (
    STATE_FILE,
    SweepRun,
    check_name,
    local_state_dir,
    make_private_dir,
    read_state,
    storage_root,
    sync_command,
    tracking_uri_for,
)
from sweep.summary import SweepOutcome, search_outcome
from sweep.tracking.encoders import keep_encoders
from sweep.tracking.runs import SEARCH, end_abandoned, end_sweep, start_sweep
from sweep.tracking.store import check_store, client_for, mask_uri, resolve_tracking_uri
from sweep.tracking.writers import DRIVER_TRACKING_URI, close_journal, open_journal, write
from sweep.trust import Folder, check_trusted, sign_folder, tune_folders
from sweep.tuner.baselines import FinalBaselinesInLastWave, measure_baselines
from sweep.tuner.console import ConsoleProgress
from sweep.tuner.driver import Driver, driving, end_quietly
from sweep.tuner.mlflow_callback import MlflowTracking, tracker_for
from sweep.tuner.parts import tune_parts
from sweep.tuner.ray_setup import (
    quiet_ray,
    simulated_trial_resources,
    start_ray,
    trial_resources,
    trial_result_files,
)
from sweep.tuner.signing import SignRayState, fit_signed
from sweep.tuner.standin import standin_search_trainable
from sweep.tuner.trainable import search_trainable
from sweep.views import log_views


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
    simulate_epoch_s: float | None = None  # a simulation: the stand-in trainable at this many seconds an epoch

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
            ("--simulate", self.simulate_epoch_s, lambda v: finite(v) and v > 0, "seconds per epoch, a number > 0"),
        ]
        for flag, value, ok, allowed in checks:
            if value is not None and not ok(value):
                raise SweepError(f"{flag} is {value}; allowed: {allowed}")
        if self.name is not None:
            check_name(self.name, "--name")


def callbacks(run: SweepRun, decisions: dict[str, list[dict]]) -> list:
    """The search's Tune callbacks: the MLflow record, the console, the signatures of Ray's state, and
    the final stage's baselines started on the slot the search's last wave leaves idle."""
    early = [FinalBaselinesInLastWave(run.spec, run.parent_run_id, run.resources, run.concurrency)
             ] if run.spec.final is not None else []
    return [MlflowTracking(run.uri, run.experiment_id, run.parent_run_id, run.spec, run.resources,
                           decisions=decisions, encoders=not run.simulate_epoch_s), ConsoleProgress(run.spec),
            SignRayState(), *early, *trial_result_files()]


def trainable_for(run: SweepRun):
    """The search's trainable: BYOL, or the stand-in's synthetic curve in a simulation, which checkpoints
    only where the space's scheduler needs it and at the last epoch (checkpoint_every 0)."""
    if run.simulate_epoch_s:
        return standin_search_trainable(run.spec, run.resources, 0, run.simulate_epoch_s)
    return search_trainable(run.spec, run.resources, run.checkpoint_every)


def run_sweep(space: str | SweepSpec, options: SweepOptions) -> SweepOutcome:
    options.validate()
    spec = load_space(space) if isinstance(space, str) else space
    if options.num_samples:
        spec.num_samples = options.num_samples
    if options.simulate_epoch_s:  # nothing trained: no configuration to re-train on new seeds
        spec.final = None
    name = preflight(spec, options)  # before any folder is made, MLflow is opened or Ray starts
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
    library_log = None
    try:
        try:
            make_private_dir(state_dir)
        except OSError as err:
            raise SweepError(f"--storage {options.storage}: cannot create {state_dir} ({err.strerror}); "
                             "give a writable folder or a URI") from None
        library_log = LibraryLog(state_dir)
        check_store(uri)  # before any trial starts
        started_ray = not options.address and not ray.is_initialized()
        start_ray(options.address, state_dir, options.object_store_memory)
        resources, concurrency = (simulated_trial_resources if options.simulate_epoch_s else trial_resources)(options)
        quiet_ray()
        parent_run_id = start_sweep(uri, experiment, spec, name, {
            "cpus_per_trial": resources["cpu"], "gpus_per_trial": resources["gpu"], "max_concurrent": concurrency,
            "storage": root, "sweep_name": name,
            **({"simulated_epoch_s": options.simulate_epoch_s} if options.simulate_epoch_s else {}),
        })
        run = SweepRun(name=name, spec=spec, storage=options.storage, uri=uri, experiment=experiment,
                       experiment_id=client_for(uri).get_run(parent_run_id).info.experiment_id,
                       parent_run_id=parent_run_id, resources=resources, concurrency=concurrency,
                       checkpoint_every=options.checkpoint_every, max_failures=options.max_failures,
                       simulate_epoch_s=options.simulate_epoch_s)
        DRIVER_TRACKING_URI[parent_run_id] = uri
        open_journal(uri, parent_run_id, state_dir, sync_command(name, options.storage), new=True)
        decisions: dict[str, list[dict]] = {}
        parts = tune_parts(spec, concurrency, options.seed, state_dir, decisions)
        print(f"sweep {name}: {spec.total_trials} trials of space {spec.name} ({spec.algorithm}, "
              f"{spec.scheduler.describe()}), {concurrency} at a time with {resources['cpu']:g} CPU"
              f"{' and %g GPU' % resources['gpu'] if resources['gpu'] else ''} each", flush=True)
        print(f"  results: {root}/{name}   MLflow: {mask_uri(uri)} (experiment {experiment})", flush=True)
        if options.simulate_epoch_s:
            print(f"  a simulation: every trial reports the stand-in's synthetic learning curve at "
                  f"{options.simulate_epoch_s:g} s an epoch, reserving {resources['cpu']:g} CPU and no GPU so that "
                  f"{concurrency} run at once here, in worker processes Ray reuses from trial to trial; nothing is "
                  "trained, no baseline, no final stage", flush=True)
        if parts.note:
            print(f"  {parts.note}", flush=True)
        tuner = tune.Tuner(
            trainable_for(run),
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                # the scheduler sets the limit, the searcher says where it goes (sweep/tuner/parts.py)
                search_alg=parts.search_alg, scheduler=parts.scheduler,
                max_concurrent_trials=parts.max_concurrent_trials,
                reuse_actors=bool(options.simulate_epoch_s),  # a stand-in trial leaves nothing in its process
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=root, verbose=0, callbacks=callbacks(run, decisions),
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                # a simulation keeps its few checkpoints of a few bytes: with num_to_keep, Tune would save the
                # whole experiment's state each time a trial reached its next rung
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None if options.simulate_epoch_s else parts.num_to_keep),
            ),
        )
        sign_folder(Folder.at(run.path))  # the Tuner wrote tuner.pkl
        # only now, with the Tuner built: a sweep that failed to start leaves no state that `run` would refuse
        run.save(asdict(options))
    except BaseException:
        # a sweep that failed to start leaves no folder behind, and no parent run marked running
        if parent_run_id is not None:
            end_quietly(uri, parent_run_id)
            close_journal(parent_run_id)
        if started_ray:
            ray.shutdown()
        if library_log is not None:
            library_log.close()
        if created:
            shutil.rmtree(state_dir, ignore_errors=True)
        raise
    print(f"  Ray's and MLflow's own messages: {library_log.path}", flush=True)
    with library_log, driving(uri, parent_run_id) as driver:
        seeds = [int(v) for v in spec.grid.get("seed", [])] if spec.compared_fields else None
        if not options.simulate_epoch_s:
            measure_baselines(spec, uri, parent_run_id, resources, spec.train_config({}).eval_split, seeds)
        return search_then_final(run, driver, tuner)


def search_then_final(run: SweepRun, driver: Driver, tuner) -> SweepOutcome:
    """Fit the search's Tuner, then (after a search that ended) the final stage, then the sweep's state."""
    results = fit_signed(driver, tuner, run.path)
    if not run.simulate_epoch_s:
        keep_encoders(run.uri, run.experiment_id, run.parent_run_id, results, "trial")
    tracker = tracker_for(run.parent_run_id, SEARCH)
    outcome = search_outcome(results, run, tracker.ended if tracker is not None else None)
    if not run.simulate_epoch_s:  # a simulation reads no data: no pictures of its policies' views
        log_views(run, outcome)
    if not outcome.interrupted:
        write(run.uri, run.parent_run_id, "set_tag", run_id=run.parent_run_id, key="byol_sweep.search_state",
              value="finished")
        if run.spec.final is not None:
            run_final_stage(run, outcome, driver)
    end_sweep(run.uri, run.parent_run_id, "interrupted" if outcome.interrupted else "finished")
    if outcome.interrupted:
        print(f"continue it with: byol-sweep resume {outcome.name}", flush=True)
    return outcome


def stored_run(name: str, storage: str, tracking_uri: str | None) -> SweepRun:
    """A stopped sweep as its sweep.json describes it, with its tracking URI checked and its journal
    open (sending first what an earlier driver left)."""
    state = read_state(name, storage)
    spec = parse_space(read_yaml(state["space_text"]), state["space_source"], state["space_text"])
    spec.num_samples = state["num_samples"]
    uri = tracking_uri_for(state, name, tracking_uri)
    DRIVER_TRACKING_URI[state["parent_run_id"]] = uri
    run = SweepRun(name=name, spec=spec, storage=state["storage"], uri=uri, experiment=state["experiment"],
                   experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"],
                   resources=state["resources"], concurrency=state["concurrency"],
                   checkpoint_every=state["options"]["checkpoint_every"],
                   max_failures=state["options"]["max_failures"],
                   simulate_epoch_s=state["options"].get("simulate_epoch_s"))
    if run.simulate_epoch_s:
        spec.final = None
    open_journal(uri, run.parent_run_id, local_state_dir(storage, name), sync_command(name, storage))
    if end_abandoned(uri, run.parent_run_id):  # the journal's lock is ours: no driver runs this sweep
        print(f"sweep {name}'s last driver ended without stopping it (killed?): the sweep and the runs it left "
              "running are marked interrupted", flush=True)
    return run


def resume_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None,
                 address: str | None = None, object_store_memory: int = 200 * 1024 * 1024) -> SweepOutcome:
    """Continue a sweep whose driver stopped: finished trials stay finished, unfinished ones
    continue from their last checkpoint, failed ones stay failed."""
    state = read_state(name, storage)
    path = f"{state['storage']}/{name}"
    if not tune.Tuner.can_restore(path):
        tracking_uri_for(state, name, tracking_uri)  # a wrong store is said first
        raise SweepError(f"sweep {name} has no Tune state at {path} (it stopped before its first trial); start it "
                         "again with `byol-sweep run`")
    for folder in tune_folders(path):  # before anything unpickles them
        check_trusted(folder, name, storage)
    run = stored_run(name, storage, tracking_uri)
    library_log = LibraryLog(run.state_dir)
    try:
        start_ray(address, run.state_dir, object_store_memory)
    except BaseException:
        close_journal(run.parent_run_id)
        library_log.close()
        raise
    quiet_ray()
    start_sweep(run.uri, run.experiment, run.spec, name, {})  # finds the parent, marks it running
    print(f"resuming sweep {name} from {path} (Ray's and MLflow's own messages: {library_log.path})", flush=True)
    with library_log, driving(run.uri, run.parent_run_id) as driver:
        tuner = tune.Tuner.restore(
            path, trainable=trainable_for(run),
            resume_unfinished=True, resume_errored=False, restart_errored=False,
        )
        return search_then_final(run, driver, tuner)


def finalize_sweep(name: str, storage: str = "byol-runs", tracking_uri: str | None = None, address: str | None = None,
                   final: FinalStage | None = None, object_store_memory: int = 200 * 1024 * 1024) -> SweepOutcome:
    """Run (or continue) the final stage of a sweep whose search has finished; `final` overrides
    the space's final stage (a space with `final: false` gets one this way)."""
    run = stored_run(name, storage, tracking_uri)
    if run.simulate_epoch_s:
        close_journal(run.parent_run_id)
        raise SweepError(f"sweep {name} is a simulation (`--simulate`): it trained nothing to re-train on new seeds")
    run.spec.final = final or run.spec.final or FinalStage()
    library_log = LibraryLog(run.state_dir)
    try:
        tags = client_for(run.uri).get_run(run.parent_run_id).data.tags
        if tags.get("byol_sweep.search_state") != "finished":
            raise SweepError(f"sweep {name}'s search has not finished; continue it with `byol-sweep resume {name}` "
                             "(which runs the final stage at its end)")
        if tune.Tuner.can_restore(f"{run.path}/final"):  # said before Ray starts; checked again as it is restored
            check_trusted(Folder.at(f"{run.path}/final"), name, storage)
        start_ray(address, local_state_dir(storage, name), object_store_memory)
    except BaseException:
        close_journal(run.parent_run_id)
        library_log.close()
        raise
    quiet_ray()
    write(run.uri, run.parent_run_id, "set_tag", run_id=run.parent_run_id, key="byol_sweep.state", value="running")
    outcome = SweepOutcome(name=name, path=run.path, tracking_uri=run.uri, experiment=run.experiment,
                           parent_run_id=run.parent_run_id, best_config=None, best_metric=None, best_trial=None)
    with library_log, driving(run.uri, run.parent_run_id) as driver:
        run_final_stage(run, outcome, driver)
        end_sweep(run.uri, run.parent_run_id, "interrupted" if outcome.interrupted else "finished")
    best = tags.get("byol_sweep.best_metric")
    outcome.best_metric = float(best) if best else None
    return outcome
