"""Ray for a sweep: a local instance bound to the loopback address, or an existing cluster; the
resources each trial gets; the environment that keeps Ray's own output out of the console."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import ray
from ray._private import ray_constants

from sweep.errors import SweepError
from sweep.state import make_private_dir

# Ray adds up to 64 bytes (/session_<date>_<time>_<pid>/sockets/plasma_store); Unix sockets allow 107.
MAX_RAY_TEMP_DIR = 43




def _ray_temp_dir(state_dir: Path) -> str:
    """Ray's temp dir: <state_dir>/ray. Ray puts Unix sockets in it, whose paths must stay under 108
    bytes, so a long one is reached through a short symlink in /tmp; the files stay under state_dir."""
    folder = state_dir / "ray"
    make_private_dir(folder)
    if len(str(folder)) <= MAX_RAY_TEMP_DIR:
        return str(folder)
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


def trial_resources(options) -> tuple[dict[str, float], int]:
    """(resources per trial, concurrency) from the options and what the cluster has."""
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
