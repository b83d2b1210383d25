"""Ray for a sweep: a local instance bound to the loopback address, or an existing cluster; the
resources each trial gets; the environment that keeps Ray's own output out of the console."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import tempfile
import threading
from pathlib import Path

import ray
from ray._common.network_utils import build_address, parse_address
from ray._private import ray_constants, services
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from sweep.errors import SweepError
from sweep.state import make_private_dir
from sweep.tracking.store import temporary_environment

# Ray adds up to 64 bytes (/session_<date>_<time>_<pid>/sockets/plasma_store); Unix sockets allow 107.
MAX_RAY_TEMP_DIR = 43
RESOURCE_STEPS = 10_000  # Ray counts a resource in steps of 1/10,000
PROBE_S = 5.0  # a cluster's address that accepts no TCP connection in this long is refused
NO_DEFAULT_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
ADDRESSES_ALLOWED = ("host:port of a running cluster's GCS (`ray start --head` prints it), ray://host:port of its "
                     "Ray client server, or auto")


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
        check_cluster_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as err:
            raise SweepError(_connection_error(address, err)) from None
        return
    with ray_in_own_session():
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                 _temp_dir=_ray_temp_dir(state_dir), include_dashboard=False, log_to_driver=False,
                 **local_ray_binding())


_RAY_POPEN = services.ConsolePopen


class _OwnSessionPopen(_RAY_POPEN):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, start_new_session=True, **kwargs)


@contextlib.contextmanager
def ray_in_own_session():
    """Start a local Ray's processes (GCS, raylet and, through the raylet, its workers) in their own
    session: a signal to the job's process group (a batch scheduler's cancel or preemption, `timeout`,
    a terminal's Ctrl-C or hang-up) then reaches the driver alone, which stops the trials through Ray
    and ends the sweep `interrupted` (sweep/tuner/driver.py). They still die with the driver: Ray sets
    their parent-death signal (PR_SET_PDEATHSIG), which a new session keeps. Ray starts every such
    process through services.ConsolePopen and has no option for it."""
    if os.name != "posix":  # Windows: Ray gives each process its own group already
        yield
        return
    services.ConsolePopen = _OwnSessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = _RAY_POPEN


def check_cluster_reachable(address: str) -> None:
    """Refuse in seconds (SweepError naming the address) an --address where nothing accepts a connection.

    ray.init retries an unreachable GCS for minutes (a 127.0.0.1 address first turned into this
    machine's network address), a Ray client (ray://) for about a minute; one TCP connect with a
    PROBE_S timeout, to the host and port Ray itself dials, says it at once:
    - host:port (the GCS): as Ray canonicalises it (localhost becomes this machine's address unless
      Ray's no-cluster mode is on);
    - ray://host:port (a Ray client server): as given; port 443 when none is given, as gRPC dials;
    - auto: $RAY_ADDRESS when set (as ray.init reads it), else the cluster Ray finds on this machine
      (Ray's own lookup; none found is refused with Ray's reason);
    - local (a new local instance) and another scheme's address (its client builder's own): not probed."""
    given = address
    if address == "auto" and os.environ.get(ray_constants.RAY_ADDRESS_ENVIRONMENT_VARIABLE):
        address = os.environ[ray_constants.RAY_ADDRESS_ENVIRONMENT_VARIABLE]
        given = f"auto ($RAY_ADDRESS {address})"
    if "://" in address:
        scheme, inner = address.split("://", 1)
        if scheme != "ray":
            return
        host, port = parse_address(inner) or (inner, "443")
    else:
        try:
            dialled = services.canonicalize_bootstrap_address(address)
        except ConnectionError as err:  # auto: no running cluster found
            raise SweepError(_connection_error(given, err)) from None
        except ValueError:
            raise SweepError(f"--address {given} is not a Ray cluster's address; allowed: {ADDRESSES_ALLOWED}") from None
        if dialled is None:
            return
        host, port = parse_address(dialled)
    if not host or not str(port).isdigit() or not 0 < int(port) < 65536:
        raise SweepError(f"--address {given} is not a Ray cluster's address; allowed: {ADDRESSES_ALLOWED}")
    why = _no_connection(host, int(port))
    if why:
        where = build_address(host, int(port))
        dials = "" if address.endswith(where) else f" (which Ray dials at {where})"
        raise SweepError(f"cannot connect to the Ray cluster at {given}{dials}: nothing accepted a connection within "
                         f"{PROBE_S:g} s ({why}); start the cluster, give the address `ray start --head` printed, or "
                         "leave --address out for a local Ray")


def _no_connection(host: str, port: int) -> str | None:
    """None when host:port accepts a TCP connection within PROBE_S seconds, else why not. The connect
    runs in a daemon thread: a name lookup is not bounded by the socket's timeout."""
    outcome: list[str | None] = []

    def dial():
        try:
            socket.create_connection((host, port), timeout=PROBE_S).close()
            outcome.append(None)
        except OSError as err:
            outcome.append((err.strerror or str(err) or type(err).__name__).lower())  # e.g. connection refused

    prober = threading.Thread(target=dial, name="ray-address-probe", daemon=True)
    prober.start()
    prober.join(PROBE_S + 1)
    return outcome[0] if outcome else "no answer"


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


def trial_result_files() -> list:
    """The Tune callbacks that write each trial's results to its folder: result.json (what `byol-sweep
    sync --from-results` sends to MLflow) and progress.csv (what Ray's ResultGrid reads). The sweep's
    Tuners name them, and fit without Tune's default loggers (without_default_loggers)."""
    return [JsonLoggerCallback(), CSVLoggerCallback()]


def without_default_loggers():
    """While one of the sweep's Tuners fits: no logger Tune would add by default. Its TensorBoard
    logger, whose files nothing here reads (MLflow holds the curves), took 38% of Tune's loop in a
    300-trial simulation (py-spy, BENCHMARKS.md); the two whose files are read are the Tuners' own
    (trial_result_files). Other Tuners in the process keep Tune's defaults."""
    return temporary_environment({NO_DEFAULT_LOGGERS: "1"})  # read by Tune as the fit starts


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


def simulated_trial_resources(options) -> tuple[dict[str, float], int]:
    """A simulation's (resources per trial, concurrency): --max-concurrent trials at once (default: what
    the real sweep would run here), each reserving an equal share of the cluster's CPUs (at most one)
    and no GPU. A stand-in trial only sleeps and reports, so the concurrency of a cluster the user
    plans for, GPUs included, fits on this machine."""
    concurrency = options.max_concurrent
    if not concurrency:
        try:
            concurrency = trial_resources(options)[1]
        except SweepError as err:
            raise SweepError(f"{err}; to simulate that sweep here, give --max-concurrent N, the trials the cluster "
                             "you plan for runs at once") from None
    steps = int(float(ray.cluster_resources().get("CPU", 1)) * RESOURCE_STEPS)
    if concurrency > steps:
        raise SweepError(f"--max-concurrent {concurrency:,} is more trials than a simulation fits on this cluster's "
                         f"{steps / RESOURCE_STEPS:g} CPUs; allowed: up to {steps:,}")
    return {"cpu": min(1.0, math.floor(steps / concurrency) / RESOURCE_STEPS), "gpu": 0.0}, concurrency
