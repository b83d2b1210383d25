"""The Tune callback through which the driver writes each trial to MLflow: a child run per trial
(found again after a resume), its metrics each epoch once, its status, ASHA's and PBT's decisions,
the best trial so far on the sweep's run. Every write goes through the sweep's journal
(sweep/tracking/writers.py); the layout is docs/mlflow-layout.md."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweep.errors import TrackingError
from sweep.space import SweepSpec
from sweep.tracking.encoders import ARTIFACT_DIR, save_model
from sweep.tracking.runs import FINAL, SEARCH, metric_record
from sweep.tracking.store import client_for
from sweep.tracking.writers import DRIVER_TRACKING_URI, journal_writer, write
from trainer import TrainConfig
from trainer.policies import definition
from vocabulary import (
    COMPLETED,
    DIVERGED,
    ENDED,
    EPOCH_METRICS,
    FAILED,
    FINAL_METRICS,
    INTERRUPTED,
    RUNNING,
    STOPPED_EARLY,
    better,
    outcome,
)


def error_line(trial) -> str:
    """The last non-empty line of a failed trial's error."""
    path = trial.error_file
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace")
    else:
        text = str(trial.get_error() or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:500] if lines else "unknown error"


# (parent run id, stage) -> the callback writing it in this driver (Tune restores a copy on resume)
_TRACKERS: dict[tuple[str, str], "MlflowTracking"] = {}


def tracker_for(parent_run_id: str, stage: str) -> "MlflowTracking | None":
    return _TRACKERS.get((parent_run_id, stage))


class MlflowTracking(Callback):
    """Driver-side Tune callback: the one process that writes the sweep to MLflow."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, spec: SweepSpec, resources: dict[str, float],
                 stage: str = SEARCH, decisions: dict[str, list[dict]] | None = None, encoders: bool = True):
        self.uri = uri
        self.encoders = encoders  # False: the trials train no encoder (a simulation)
        self.stage = stage  # search: the trials of the space; final: the final stage's runs
        self.decisions = {} if decisions is None else decisions  # ASHA's, shared with the scheduler
        self._decisions_logged: dict[str, int] = {}
        self._rerun_from: dict[str, int] = {}  # trial id -> the earliest epoch it ran twice
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.spec = spec
        self.resources = resources
        self._client = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_epoch: dict[str, int] = {}
        self._nodes: dict[str, list[str]] = {}  # trial id -> the Ray nodes it ran on, in order
        self.best: tuple[float, str, dict] | None = None  # (objective, trial id, config) of a completed trial
        self.ended: dict[str, str] = {}  # trial id -> status, for trials Tune ended (not interrupted ones)

    def __getstate__(self):
        # Tune pickles its callbacks into the sweep's folder: never the URI, which may hold a secret.
        # A restored copy (byol-sweep resume) writes to the URI the resuming driver gives it.
        state = self.__dict__.copy()
        state["_client"] = None
        state["uri"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            uri = self.uri or DRIVER_TRACKING_URI.get(self.parent_run_id)
            if uri is None:
                raise TrackingError(f"no tracking URI is known for the sweep of parent run {self.parent_run_id}")
            self._client = client_for(uri)
        return self._client

    def _write(self, op: str, **args: Any) -> str | None:
        return write(self.uri, self.parent_run_id, op, **args)

    @property
    def _local(self):
        """The journal's record of what this driver (and earlier ones) wrote, when it is the whole
        record: reads then need no server. None: ask MLflow."""
        writer = journal_writer(self.parent_run_id)
        return writer.state if writer is not None and writer.journal.complete else None

    def setup(self, **info):
        """Pick up the best trial so far and the trials that ended (from the journal, else from
        MLflow): after a resume this object is a stale copy."""
        _TRACKERS[(self.parent_run_id, self.stage)] = self
        self._runs, self._last_epoch = {}, {}  # a stale copy's: found again (journal, else MLflow) on first use
        self._nodes = {}
        self._rerun_from = {}
        local = self._local
        if local is not None:
            tags = local.tags.get(self.parent_run_id, {})
            if "byol_sweep.best_metric" in tags and self.stage == SEARCH:
                self.best = (float(tags["byol_sweep.best_metric"]), tags["byol_sweep.best_trial_id"],
                             json.loads(tags["byol_sweep.best_config"]))
            for run_id in local.runs(**{"mlflow.parentRunId": self.parent_run_id, "byol_sweep.role": self._role}):
                run_tags = local.tags[run_id]
                if run_tags.get("status") in ENDED and "byol_sweep.trial_id" in run_tags:
                    self.ended[run_tags["byol_sweep.trial_id"]] = run_tags["status"]
            return
        tags = self.client.get_run(self.parent_run_id).data.tags
        if "byol_sweep.best_metric" in tags and self.stage == SEARCH:
            self.best = (float(tags["byol_sweep.best_metric"]), tags["byol_sweep.best_trial_id"],
                         json.loads(tags["byol_sweep.best_config"]))
        for run in self._child_runs():
            run_tags = run.data.tags
            if run_tags.get("status") in ENDED and "byol_sweep.trial_id" in run_tags:
                self.ended[run_tags["byol_sweep.trial_id"]] = run_tags["status"]

    def _child_runs(self) -> list:
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], max_results=1000, page_token=token,
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and "
                              f"tags.`byol_sweep.role` = '{self._role}'")
            out += list(page)
            token = page.token
            if not token:
                return out

    def _run_for(self, trial) -> str:
        """The child run of a trial: found by its trial-id tag (after a resume) or created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        writer = journal_writer(self.parent_run_id)
        if writer is not None:  # the journal knows the runs it created, and their last epoch
            mine = {"byol_sweep.trial_id": trial_id, "mlflow.parentRunId": self.parent_run_id,
                    "byol_sweep.role": self._role}
            known = writer.state.runs(**mine)
            if known or writer.journal.complete:
                run_id = known[0] if known else self._create_run(trial)
                self._last_epoch[trial_id] = writer.state.last_step.get(run_id, 0)
                self._nodes[trial_id] = _node_list(writer.state.tags.get(run_id, {}))
                self._runs[trial_id] = run_id
                return run_id
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`byol_sweep.trial_id` = '{trial_id}' and tags.`mlflow.parentRunId` = "
                          f"'{self.parent_run_id}' and tags.`byol_sweep.role` = '{self._role}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "epoch_s")
            self._last_epoch[trial_id] = max((m.step for m in history), default=0)
            self._nodes[trial_id] = _node_list(found[0].data.tags)
        else:
            run_id = self._create_run(trial)
            self._last_epoch[trial_id] = 0
            self._nodes[trial_id] = []
        self._runs[trial_id] = run_id
        return run_id

    @property
    def _role(self) -> str:
        return "final" if self.stage == FINAL else "trial"

    def config_of(self, trial):
        if self.stage == FINAL:
            return TrainConfig.from_dict(trial.config["final"]["config"], source="final-stage configuration")
        return self.spec.train_config(trial.config)

    def _create_run(self, trial) -> str:
        config = self.config_of(trial)
        values = self.spec.values(config)
        swept = {name: values[name] for name in self.spec.swept}
        stage_tags = {}
        if self.stage == FINAL:
            entry = trial.config["final"]
            stage_tags = {f"final.{k}": str(entry[k]) for k in ("rank", "group", "source_trial", "source_value")}
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "byol_sweep.role": self._role,
            "byol_sweep.trial_id": trial.trial_id,
            **stage_tags,
            "status": RUNNING,
            "policy": config.policy,
            # the policy's two views in full, as trainer/policies.py resolved them (a shipped one's too)
            "byol_sweep.policy_definition": json.dumps(definition(config.policy, config.policies, config.policy_params)),
            "seed": str(config.seed),
            "resources.cpu": str(self.resources.get("cpu", 1)),
            "resources.gpu": str(self.resources.get("gpu", 0)),
            **{f"swept.{k}": str(v) for k, v in swept.items()},
        }
        prefix = "final" if self.stage == FINAL else "trial"
        run_id = self._write("create_run", experiment_id=self.experiment_id, run_name=f"{prefix}_{trial.trial_id}",
                             tags=tags, start_time=int(time.time() * 1000))
        self._write("log_batch", run_id=run_id, params=self._params(trial))  # op parameters too
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        self.ended.pop(trial.trial_id, None)
        self._write("set_tag", run_id=run_id, key="status", value=RUNNING)
        self._write("update_run", run_id=run_id, status="RUNNING")  # a resumed run was ended as KILLED

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        epoch = int(result.get("epoch", 0))
        if result.get("diverged"):
            return  # a marker result
        tags = {}
        if epoch <= self._last_epoch.get(trial.trial_id, 0):
            # restored from a checkpoint older than its last logged epoch (the driver or a worker
            # died): these epochs run again, and it is this attempt's weights that go on. Logged
            # again with a newer timestamp (readers keep the later value of a step), and said so.
            if epoch < self._rerun_from.get(trial.trial_id, epoch + 1):  # the earliest epoch that ran twice
                self._rerun_from[trial.trial_id] = epoch
                tags["rerun_from_epoch"] = str(epoch)
        nodes = self._nodes.setdefault(trial.trial_id, [])
        node = result.get("node_id")
        if isinstance(node, str) and node and (not nodes or nodes[-1] != node):  # a new attempt, on another node
            nodes.append(node)
            tags.update({"node_id": node, "nodes": json.dumps(nodes)})
        now = int(time.time() * 1000)
        keys = [k for k in (*EPOCH_METRICS, *FINAL_METRICS) if k in result]
        self._write("log_batch", run_id=run_id, metrics=[metric_record(k, result[k], epoch, now) for k in keys], tags=tags)
        self._last_epoch[trial.trial_id] = epoch
        self._log_decisions(trial, run_id)

    def _log_decisions(self, trial, run_id: str) -> None:
        """ASHA's decisions about this trial, as tags asha.rung_<epoch> (JSON), logged once each."""
        made = self.decisions.get(trial.trial_id, [])
        new = made[self._decisions_logged.get(trial.trial_id, 0):]
        if new:
            # a record names its tag (PBT: pbt.exploit_<epoch>), or is ASHA's (asha.rung_<epoch>)
            self._write("log_batch", run_id=run_id, tags={
                d["tag"] if "tag" in d else f"asha.rung_{d['rung']}":
                    json.dumps({k: v for k, v in d.items() if k != "tag"}) for d in new})
            self._decisions_logged[trial.trial_id] = len(made)

    def on_trial_recover(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        self._write("set_tag", run_id=run_id, key="restarts", value=str(trial.num_failures))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        result = trial.last_result or {}
        epoch = int(result.get("epoch", 0))
        self._log_decisions(trial, run_id)
        status = outcome(epoch, self.config_of(trial).epochs, diverged=bool(result.get("diverged")))
        tags = {"status": status}
        if status == DIVERGED:
            tags["error"] = str(result.get("error", "loss diverged"))[:500]
        elif status == STOPPED_EARLY:
            tags["stopped_epoch"] = str(epoch)
        # the objective: the metric at the last epoch, ranked across full-budget trials only
        value = result.get(self.spec.metric)
        if (self.stage == SEARCH and status == COMPLETED and value is not None
                and better(self.spec.mode, float(value), self.best and self.best[0])):
            self.best = (float(value), trial.trial_id, self.config_of(trial).to_dict())
        self.ended[trial.trial_id] = status
        if status == COMPLETED:
            self._keep_model(trial, run_id, tags)
        self._finish(run_id, tags, "FINISHED")

    def _keep_model(self, trial, run_id: str, tags: dict[str, str]) -> None:
        """A completed trial's encoder, beside its results and journalled to its run, with its folder as a
        tag: an outage loses neither, and `export` finds them."""
        tags["byol_sweep.trial_dir"] = str(trial.path)
        if not self.encoders:
            return
        try:
            model = save_model(trial.checkpoint, trial.path, self._params(trial))
        except Exception as err:  # the checkpoint stays on disk; the end of the sweep tries again
            print(f"the encoder of trial {trial.trial_id} could not be saved: {str(err).strip()[:200]}", flush=True)
            return
        if model is not None:
            self._write("log_artifacts", run_id=run_id, local_dir=str(model), artifact_path=ARTIFACT_DIR)

    def _params(self, trial) -> dict[str, str]:
        return {k: str(v) for k, v in self.spec.values(self.config_of(trial)).items()}

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        self.ended[trial.trial_id] = FAILED
        self._finish(run_id, {"status": FAILED, "error": error_line(trial)}, "FAILED")

    def _finish(self, run_id: str, tags: dict[str, str], state: str) -> None:
        self._write("log_batch", run_id=run_id, tags=tags)
        self._write("set_terminated", run_id=run_id, status=state, end_time=int(time.time() * 1000))
        self._write_best()

    def _write_best(self) -> None:
        if self.best is None:
            return
        value, trial_id, config = self.best
        self._write("log_batch", run_id=self.parent_run_id, tags={
            "byol_sweep.best_trial_id": trial_id,
            "byol_sweep.best_metric": repr(value),
            "byol_sweep.best_config": json.dumps(config),
        }, metrics=[metric_record(f"best_{self.spec.metric}", value, 0)])

    def on_experiment_end(self, trials, **info):
        """Tune ends: trials it stopped without ending them (the driver was interrupted) are
        `interrupted`, their runs KILLED; `resume` continues them."""
        for trial in trials:
            run_id = self._runs.get(trial.trial_id)
            if run_id is not None and trial.trial_id not in self.ended:
                self._write("log_batch", run_id=run_id, tags={"status": INTERRUPTED})
                self._write("set_terminated", run_id=run_id, status="KILLED", end_time=int(time.time() * 1000))
        self._write_best()


def _node_list(tags: dict[str, str]) -> list[str]:
    """The `nodes` tag of a trial's run (the Ray nodes it ran on, in order), as a list."""
    try:
        nodes = json.loads(tags.get("nodes", "[]"))
    except ValueError:
        return []
    return [n for n in nodes if isinstance(n, str)] if isinstance(nodes, list) else []
