"""The `byol-sweep` command: thin shells over library calls."""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from pathlib import Path

from reports.errors import ReportError
from sweep.ending import REPORTS, after_sweep, report_folder
from sweep.errors import SpaceError, SweepError, TrackingError
from sweep.plan import format_plan, plan_space
from sweep.preflight import check_data, config_values, preflight
from sweep.space import FinalStage, ablation_space, load_space, parse_space, read_space, shipped_spaces, space_problems
from sweep.space.policies import policies_json
from sweep.state import storage_root
from sweep.status import show_status
from sweep.sync import sync_sweep, sync_sweeps, tell_sync
from sweep.tracking.secrets import mask_secrets
from sweep.tracking.store import check_store, check_stored, resolve_tracking_uri
from sweep.train_args import add_train_parser, config_from_args
from sweep.trust import REFUSES_UNSIGNED, TRUST_HELP, trust_sweep
from trainer.config import ConfigError, TrainConfig

# Heavy imports wait inside the commands that need them: Ray (sweep.runner), torch (trainer.standalone,
# trainer.data), pandas and matplotlib (reports), so `--help`, `validate` and `spaces` answer at once.


class Parser(argparse.ArgumentParser):
    """A command-line mistake is one sentence (`byol-sweep run: error: ...`), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {mask_secrets(message)} (see {self.prog} --help)\n")




def cmd_train(args) -> int:
    from trainer.standalone import train_to_folder  # torch

    config = config_from_args(args)
    check_data(config_values(config), args.config or "command line")
    out = args.out or f"byol-runs/train-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.tracking_uri or args.experiment:
        from sweep.logged_train import train_logged  # torch

        final = train_logged(config, out, resolve_tracking_uri(args.tracking_uri), args.experiment, resume=args.resume)
    else:
        from trainer.loop import Diverged  # torch

        try:
            final = train_to_folder(config, out, resume=args.resume)
        except Diverged as err:
            print(f"training diverged: {err}", file=sys.stderr)
            return 1
    return 0 if final else 1


def _add_sweep_options(p) -> None:
    p.add_argument("--storage", default="byol-runs", help="folder or URI for results and checkpoints (default ./byol-runs)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--address", help="an existing Ray cluster: auto or ray://host:10001 (default: a local instance)")


def cmd_run(args) -> int:
    from sweep.runner import SweepOptions, run_sweep  # Ray

    options = SweepOptions(
        name=args.name, storage=args.storage, address=args.address, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent, num_samples=args.num_samples,
        tracking_uri=args.tracking_uri, experiment=args.experiment, max_failures=args.max_failures,
        checkpoint_every=args.checkpoint_every, seed=args.seed, allow_large=args.allow_large,
        simulate_epoch_s=getattr(args, "simulate", None),
    )
    space = args.space
    if args.command == "ablate":
        space = ablation_space(args.policy, args.seeds, args.space, args.set, args.policy_file)
    outcome = run_sweep(space, options)
    return after_sweep(outcome, args.report)


def cmd_resume(args) -> int:
    from sweep.runner import resume_sweep  # Ray

    outcome = resume_sweep(args.name, storage=args.storage, tracking_uri=args.tracking_uri, address=args.address)
    return after_sweep(outcome, args.report)


def cmd_sync(args) -> int:
    from sweep.logged_train import is_train_folder, sync_train_folder  # torch

    if is_train_folder(args.name):
        sent, left, unsent = sync_train_folder(args.name, resolve_tracking_uri(args.tracking_uri))
    else:
        sent, left, unsent = sync_sweep(args.name, storage=args.storage, tracking_uri=args.tracking_uri,
                                        from_results=args.from_results)
    return tell_sync(f"run {args.name}" if is_train_folder(args.name) else f"sweep {args.name}", sent, left, unsent)


def cmd_trust(args) -> int:
    trust_sweep(args.name, args.storage)
    return 0


def cmd_finalize(args) -> int:
    from sweep.runner import finalize_sweep  # Ray

    final = None
    if args.top_k is not None or args.seeds is not None or args.per is not None:
        final = FinalStage(top_k=args.top_k or 1, seeds=args.seeds or 3, per=args.per)
        for flag, value in (("--top-k", final.top_k), ("--seeds", final.seeds)):
            if not 1 <= value <= 100:
                raise SweepError(f"{flag} is {value}; allowed: an integer from 1 to 100")
    outcome = finalize_sweep(args.name, storage=args.storage, tracking_uri=args.tracking_uri, address=args.address,
                             final=final)
    return after_sweep(outcome, args.report)


def cmd_export(args) -> int:
    from sweep.tracking.encoders import export_encoder, selected_run  # torch

    if bool(args.run_id) == bool(args.sweep):
        raise SweepError("give a run id, or --sweep NAME for a sweep's selected configuration (one of the two)")
    uri = resolve_tracking_uri(args.tracking_uri)
    check_stored(uri, f"run {args.run_id}" if args.run_id else f"sweep {args.sweep}")
    run_id = args.run_id or selected_run(uri, args.sweep)
    path = export_encoder(uri, run_id, args.out or f"encoder-{run_id[:8]}.pt")
    print(f"encoder of run {run_id} written: {path} (load it with trainer.export.load_encoder)")
    return 0


def cmd_validate(args) -> int:
    path, data, text = read_space(args.file)
    problems = space_problems(data, str(path))
    if len(problems) > 1:  # one is raised below, as any user mistake is
        for problem in problems:
            print(f"byol-sweep validate: error: {mask_secrets(problem)}", file=sys.stderr)
        return 2
    spec = parse_space(data, str(path), text)
    name = preflight(spec, args)
    print(f"{spec.source}: valid. {spec.total_trials} trials ({spec.algorithm}) over {', '.join(spec.swept) or 'nothing'}; "
          f"metric {spec.metric} ({spec.mode}); "
          + spec.scheduler.describe() + ("" if spec.scheduler.max_epochs else f", {spec.max_epochs} epochs")
          + "; " + (f"final stage: the top {spec.final.top_k}" + (f" per {spec.final.per}" if spec.final.per else "")
                    + f" re-trained with {spec.final.seeds} new seeds on the test split" if spec.final
                    else "no final stage") + f"; it would run as sweep {name} in {storage_root(args.storage)}")
    return 0


def cmd_status(args) -> int:
    return show_status(args.name, storage=args.storage, tracking_uri=args.tracking_uri)


def cmd_plan(args) -> int:
    print(format_plan(plan_space(load_space(args.space), args.epoch_seconds, args.measure, args.gpus, args.cpus)))
    return 0


def cmd_views(args) -> int:
    from sweep.views import draw_views  # torch, matplotlib

    values = {"policy": args.policy, "aug_strength": args.strength, "dataset": args.dataset}
    if args.policy_file:
        values["policies"] = policies_json(str(Path(args.policy_file).resolve()), "--policy-file", "policies")
    path = draw_views(TrainConfig.from_dict(values, source="command line"), args.out, draws=args.draws)
    print(f"views of policy {args.policy} written: {path}")
    return 0


def cmd_spaces(args) -> int:
    for name, path in sorted(shipped_spaces().items()):
        spec = load_space(str(path))
        summary = " ".join(spec.description.split())
        print(f"{name:10s} {spec.total_trials:4d} trials  {spec.base.get('backbone', '?')} on {spec.base.get('dataset', '?')}  "
              f"{path}\n           {summary}")
    return 0


def cmd_report(args) -> int:
    from reports import build_report  # pandas, matplotlib
    from reports.load import sweep_parents  # pandas
    from reports.store import open_store  # pandas

    out = args.out or str(report_folder(args.experiment))
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        check_store(uri)  # fails in seconds; MLflow alone retries an unreachable server for minutes
    store = open_store(uri)  # the report's own checks first: never an MLflow store made where the user pointed by mistake
    parents = []
    for experiment in args.experiment:
        _, found = sweep_parents(store, experiment) or (None, [])  # an unknown experiment: the report says so
        parents += found
    sync_sweeps(uri, [(p.params.get("sweep_name"), p.params.get("storage")) for p in parents])  # what a journal still holds
    html = build_report(args.experiment, uri, out, echo=print)
    print(f"report written: {html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="byol-sweep", description="Sweep BYOL self-supervised training with Ray Tune, Optuna and MLflow.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(sub)

    run = sub.add_parser("run", help="run a sweep over a search space (default: quick)",
                         description="Run a sweep: the search (Ray Tune, the space's scheduler and search algorithm), "
                                     "then its final stage, logging to MLflow, then the report in "
                                     f"{REPORTS}/<experiment>/.")
    run.add_argument("space", nargs="?", default="quick", help="a shipped space name (see `byol-sweep spaces`) or a YAML file")
    run.add_argument("--simulate", type=float, metavar="S",
                     help="train nothing: every trial reports the stand-in's synthetic learning curve (sweep/tuner/"
                          "standin.py), an epoch every S seconds (e.g. 0.05), so the scheduler's decisions, the console, "
                          "MLflow and the report of a large space show without training; no data is read, no baselines, "
                          "no final stage. Each trial reserves a share of a CPU and no GPU, so --max-concurrent N (the "
                          "trials the cluster you plan for runs at once; default: what a real sweep runs here) fits on "
                          "this machine; Ray reuses its worker processes from trial to trial")
    ablate = sub.add_parser("ablate", help="train a policy and each leave-one-op-out variant on the same seeds",
                            description="Ablate an augmentation policy: the policy and each variant without one of "
                                        "its ops, on the same seeds, no search; the report leads with what each op "
                                        "contributes (paired by seed, Holm-corrected).")
    ablate.add_argument("policy", help="a shipped policy, or one of --policy-file")
    ablate.add_argument("--seeds", type=int, default=4, help="seeds per arm, 0..N-1 (default 4; at least 2)")
    ablate.add_argument("--space", default="quick", help="whose base configuration (default quick)")
    ablate.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="set one base field")
    ablate.add_argument("--policy-file", help="YAML file of your own policies {name: definition}")
    for p in (run, ablate):
        p.add_argument("--name", help="sweep name (default <space>-<time>)")
        _add_sweep_options(p)
        p.add_argument("--experiment", help="MLflow experiment (default: the sweep name)")
        p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default 1, or CPUs/GPUs when GPUs are present)")
        p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default 1 if GPUs are present)")
        p.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: what the resources allow)")
        p.add_argument("--num-samples", type=int, help="override the space's num_samples")
        p.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker failed (default 2)")
        p.add_argument("--checkpoint-every", type=int, default=1, help="checkpoint every N epochs (and at ASHA rungs)")
        p.add_argument("--seed", type=int, default=0, help="seed of the search algorithm")
        p.add_argument("--no-report", dest="report", action="store_false", help="do not write the report at the end")
        p.add_argument("--allow-large", action="store_true",
                         help="run a sweep of more than 10,000 trials or a grid of more than 1,000 combinations")

    resume = sub.add_parser("resume", help="continue a sweep whose driver stopped",
                            description="Continue a sweep whose driver stopped (Ctrl-C, SIGTERM, a crash): finished "
                                        "trials stay finished, unfinished ones continue from their last checkpoint, "
                                        "then the final stage runs or continues. " + REFUSES_UNSIGNED)
    resume.add_argument("name", help="the sweep's name (as `byol-sweep run` printed it)")
    _add_sweep_options(resume)
    resume.add_argument("--no-report", dest="report", action="store_false", help="do not write the report at the end")

    finalize = sub.add_parser(
        "finalize", help="run (or continue) the final stage of a sweep whose search has finished",
        description="Train the search's top configurations again with new seeds for the full budget and evaluate "
                    "them on the test split (the space's `final:` settings, or these options). " + REFUSES_UNSIGNED)
    finalize.add_argument("name", help="the sweep's name (as `byol-sweep run` printed it)")
    _add_sweep_options(finalize)
    finalize.add_argument("--top-k", type=int, help="configurations to re-train (default: the space's, else 1)")
    finalize.add_argument("--seeds", type=int, help="new seeds per configuration (default: the space's, else 3)")
    finalize.add_argument("--per", help="re-train the top-k of each value of this swept field (e.g. policy)")
    finalize.add_argument("--no-report", dest="report", action="store_false", help="do not write the report at the end")

    trust = sub.add_parser("trust", help=TRUST_HELP[0], description=TRUST_HELP[1])
    trust.add_argument("name", help="the sweep's name (as `byol-sweep run` printed it)")
    trust.add_argument("--storage", default="byol-runs", help="the sweep's folder or URI (default ./byol-runs)")

    export = sub.add_parser(
        "export", help="write a trained encoder to a file",
        description="Write the encoder a run logged (model/encoder.pt: a trial that ran the full budget, or a "
                    "final-stage run) to a file that trainer.export.load_encoder turns back into a network.")
    export.add_argument("run_id", nargs="?", help="the MLflow run id of a trial or final-stage run")
    export.add_argument("--sweep", help="instead of a run: the sweep's (experiment's) selected configuration, the "
                                        "first seed of its final stage, else its best trial")
    export.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    export.add_argument("--out", help="the file to write (default encoder-<run id>.pt)")

    sync = sub.add_parser("sync", help="send the MLflow records a sweep's journal still holds (its server was away)",
                          description="Send what a sweep's (or a `train --tracking-uri` run's) local journal holds "
                                      "and MLflow does not yet have (a tracking server that was unreachable); each "
                                      "record is sent exactly once.")
    sync.add_argument("name", help="the sweep's name (as `byol-sweep run` printed it), or the output folder of a "
                                   "`byol-sweep train --tracking-uri` run")
    sync.add_argument("--from-results", action="store_true",
                      help="then send every epoch the trials' own results (Ray's result.json) hold and MLflow lacks: "
                           "what a damaged journal or a refused record lost, each once")
    _add_sweep_options(sync)

    validate = sub.add_parser("validate", help="check a search space file without running it",
                              description="Check a search space: every key, field, range and setting; prints what "
                                          "the sweep would run, or what is wrong.")
    validate.add_argument("file", help="a YAML search space, or a shipped space's name")
    validate.add_argument("--allow-large", action="store_true", help="accept a sweep beyond the size limits")
    validate.add_argument("--name", help="check this sweep name (default <space>-<time>, as run names it)")
    validate.add_argument("--storage", default="byol-runs", help="check this folder or URI for results (default ./byol-runs)")
    validate.set_defaults(address=None, cpus_per_trial=None, gpus_per_trial=None, seed=0)  # run's, for its checks
    status = sub.add_parser("status", help="show a sweep's progress: each trial's status, epoch and latest metric",
                            description="Show a sweep's progress from its folder and MLflow, from another terminal "
                                        "or after it ended: whether its driver runs, each stage's epochs of its "
                                        "budget and ETA, each trial's status, epoch and latest metric. Creates nothing.")
    status.add_argument("name", help="the sweep's name (as `byol-sweep run` printed it)")
    status.add_argument("--storage", default="byol-runs", help="the sweep's folder or URI (default ./byol-runs)")
    status.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else the one the "
                                               "sweep recorded in its sweep.json)")
    plan = sub.add_parser("plan", help="what a sweep will cost before it runs: trials, epochs, hours, wall time",
                          description="Before spending a cluster's hours: a space's trials, its scheduler's epochs "
                                      "(lowest, expected, highest), trial-hours, GPU-hours and wall time at the "
                                      "concurrency the resources allow. `byol-sweep run SPACE --simulate` runs the "
                                      "whole sweep on a synthetic learning curve, with no training.")
    plan.add_argument("space", help="a shipped space's name or a YAML file")
    plan.add_argument("--epoch-seconds", type=float, metavar="S", help="one epoch's seconds on the machine that will run it")
    plan.add_argument("--measure", action="store_true", help="time a few real steps of the space's base configuration here")
    plan.add_argument("--gpus", type=int, metavar="N", help="GPUs the sweep will have (one trial per GPU); default: this machine's")
    plan.add_argument("--cpus", type=int, metavar="N", help="CPUs the sweep will have (one trial per CPU without GPUs); "
                                                          "default: this machine's")
    views = sub.add_parser("views", help="draw a policy's views of a few dataset images to a PNG",
                           description="Draw 8 dataset images and a few draws of a policy's two views (T, T').")
    views.add_argument("policy", help="a shipped policy, or one of --policy-file")
    views.add_argument("--policy-file", help="YAML file of your own policies {name: definition}")
    views.add_argument("--strength", type=float, default=1.0, help="aug_strength (default 1.0: the policy as written)")
    views.add_argument("--dataset", default="cifar10_mini", help="whose images (default cifar10_mini)")
    views.add_argument("--draws", type=int, default=2, choices=range(1, 9), metavar="N", help="draws of each view (1-8)")
    views.add_argument("--out", default="views.png", help="the PNG to write (default views.png)")
    sub.add_parser("spaces", help="list the shipped search spaces",
                   description="List the search spaces that ship with byol-sweep, with their trials and what they run.")

    report = sub.add_parser("report", help="write the results report of one sweep (or two side by side)",
                            description="Write a sweep's results report (report.html, report.md with PNGs, "
                                        "trials.csv, curves.csv) from its MLflow runs.")
    report.add_argument("--experiment", action="append", required=True, help="MLflow experiment; twice to compare two")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    report.add_argument("--out", help=f"output folder (default {REPORTS}/<experiment>, or <a>-vs-<b> for two)")
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("byol-sweep")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


COMMANDS = {"train": cmd_train, "run": cmd_run, "ablate": cmd_run, "resume": cmd_resume, "finalize": cmd_finalize, "export": cmd_export,
            "trust": cmd_trust, "sync": cmd_sync, "validate": cmd_validate, "views": cmd_views,
            "status": cmd_status, "plan": cmd_plan, "spaces": cmd_spaces, "report": cmd_report}


def user_errors() -> tuple[type[Exception], ...]:
    from trainer.data import DataError  # torch

    return ConfigError, DataError, SpaceError, SweepError, TrackingError, ReportError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its "View run at <URI>" shows a token
    try:
        return COMMANDS[args.command](args)
    except user_errors() as err:
        print(f"byol-sweep {args.command}: error: {mask_secrets(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"byol-sweep {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
