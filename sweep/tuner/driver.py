"""The driver process while a sweep runs: a SIGTERM (a scheduler's cancel, `timeout`) or a SIGHUP (a
closed terminal) stops Tune as Ctrl-C does, so the trials are saved and the sweep can be resumed;
any error or interruption leaves the sweep's parent run `interrupted`; the journal is sent (a bounded wait) when the driver ends."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

from sweep.tracking.runs import end_sweep
from sweep.tracking.writers import close_journal
from sweep.tuner.ray_setup import without_default_loggers

# Ctrl-C (SIGINT) Tune handles itself while it fits, and Python raises KeyboardInterrupt outside
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Driver:
    """What the SIGTERM handler needs to know: whether Tune is fitting, and whether it was told to stop."""

    def __init__(self) -> None:
        self.fitting = False
        self.stopping = False

    def fit(self, tuner):
        self.fitting, self.stopping = True, False
        try:
            with without_default_loggers():  # the Tuner names its own (ray_setup.trial_result_files)
                return tuner.fit()
        finally:
            self.fitting = False

    def on_stop_signal(self, signum, frame) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1) if self.fitting else None  # Tune's graceful stop
        if callable(tune_handler) and not self.stopping:
            self.stopping = True
            print(f"{signal.Signals(signum).name} received: stopping the trials and saving the sweep's state",
                  file=sys.stderr, flush=True)
            tune_handler(signum, frame)
        else:
            raise KeyboardInterrupt


def end_quietly(uri: str, parent_run_id: str) -> None:
    """Mark the sweep interrupted; a store that fails (it may be what stopped the sweep) is said, not raised."""
    try:
        end_sweep(uri, parent_run_id, "interrupted")
    except Exception as err:
        print(f"the sweep could not be marked interrupted in MLflow: {str(err).strip().splitlines()[-1:]}",
              file=sys.stderr, flush=True)


@contextlib.contextmanager
def driving(uri: str, parent_run_id: str):
    """Run a sweep's driver (yields the Driver whose fit() runs a Tuner)."""
    driver = Driver()
    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} if main else {}
    for signum in previous:
        signal.signal(signum, driver.on_stop_signal)
    try:
        yield driver
    except BaseException:
        end_quietly(uri, parent_run_id)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        close_journal(parent_run_id)  # waits a bounded time for the journal to be sent
