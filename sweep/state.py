"""Where a sweep lives and what it must remember: its name, its folder, `sweep.json` (everything
`resume`, `finalize` and `sync` need) and SweepRun, the state one driver carries through a sweep."""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import SweepError
from sweep.space import SweepSpec
from sweep.tracking.secrets import mask_secrets
from sweep.tracking.store import check_store, client_for, mask_uri, resolve_tracking_uri
from vocabulary.journal_files import sweep_folder

STATE_FILE = "sweep.json"
# a sweep's name becomes a folder, an MLflow run name and part of a filter: a safe set only
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_name(name: str, what: str) -> None:
    """Refuse a sweep name outside [A-Za-z0-9._-], with a leading dot, or over 100 characters."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SweepError(f"{what} {name!r} is not a safe sweep name; allowed: 1 to 100 of the characters "
                         "A-Z a-z 0-9 . _ - (not starting with a dot)")


def make_private_dir(folder: Path) -> None:
    """Create folder (and parents) with the sweep's folder itself readable by the user only."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def is_uri(storage: str) -> bool:
    return "://" in storage


def storage_root(storage: str) -> str:
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def local_state_dir(storage: str, name: str) -> Path:
    """Where sweep.json and Ray's temp files live: under the storage dir when it is local."""
    return sweep_folder(storage, name)


def read_state(name: str, storage: str) -> dict:
    check_name(name, "sweep name")
    path = local_state_dir(storage, name) / STATE_FILE
    if not path.exists():
        root = storage_root(storage)
        known = sorted(p.parent.name for p in Path(root).glob(f"*/{STATE_FILE}")) if not is_uri(storage) else []
        listing = f"; sweeps there: {', '.join(known)}" if known else "; there are no sweeps there"
        raise SweepError(f"no sweep named {name!r} in {root}{listing}")
    return json.loads(path.read_text())


def sync_command(name: str, storage: str) -> str:
    return f"byol-sweep sync {name} --storage {storage}"


@dataclass
class SweepRun:
    """One sweep as its driver runs it: what it is, where it is recorded, and with what resources."""

    name: str
    spec: SweepSpec
    storage: str  # as the user gave it (--storage): a folder or a URI
    uri: str  # the resolved tracking URI, secrets included
    experiment: str
    experiment_id: str
    parent_run_id: str
    resources: dict[str, float]  # per trial: {"cpu": ..., "gpu": ...}
    concurrency: int
    checkpoint_every: int = 1
    max_failures: int = 2
    simulate_epoch_s: float | None = None  # trials run the stand-in trainable (sweep/tuner/standin.py)

    @property
    def root(self) -> str:
        return storage_root(self.storage)

    @property
    def path(self) -> str:
        """Tune's folder of the sweep (the final stage's is path/final)."""
        return f"{self.root}/{self.name}"

    @property
    def state_dir(self) -> Path:
        return local_state_dir(self.storage, self.name)

    def save(self, options: dict[str, Any]) -> None:
        """Write sweep.json: what `resume`, `finalize` and `sync` read (the URI without its secrets)."""
        masked = mask_secrets(self.uri)
        (self.state_dir / STATE_FILE).write_text(json.dumps({
            "name": self.name, "space_source": self.spec.source, "space_text": self.spec.text,
            "num_samples": self.spec.num_samples, "options": {**options, "tracking_uri": masked}, "storage": self.root,
            "tracking_uri": masked, "experiment": self.experiment, "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id, "resources": self.resources, "concurrency": self.concurrency,
        }, indent=2))


def chosen_tracking_uri(state: dict, name: str, tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the URI sweep.json records (refused when its
    secret was masked there), resolved; not checked."""
    given = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not given and "***" in state["tracking_uri"]:
        raise SweepError(f"sweep {name} logs to {state['tracking_uri']}, whose secret is not stored; pass "
                         "--tracking-uri (or set MLFLOW_TRACKING_URI) with the credentials")
    return resolve_tracking_uri(given or state["tracking_uri"])


def tracking_uri_for(state: dict, name: str, tracking_uri: str | None) -> str:
    """The tracking URI to continue a sweep with, checked to hold the sweep's parent run."""
    stored_uri = state["tracking_uri"]
    uri = chosen_tracking_uri(state, name, tracking_uri)
    if not tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"sweep {name}: using the MLflow store its sweep.json records, {mask_uri(uri)} (--tracking-uri to "
              "give another)", file=sys.stderr, flush=True)
    check_store(uri)
    if not holds_run(uri, state["parent_run_id"]):
        raise SweepError(f"the MLflow store {mask_uri(uri)} does not hold sweep {name}'s parent run "
                         f"{state['parent_run_id']}; resume with the store it started with ({stored_uri})")
    return uri


def holds_run(uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException  # MLflow's own error type: only here

    try:
        client_for(uri).get_run(run_id)
    except MlflowException:
        return False
    return True
