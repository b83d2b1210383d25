"""Ray's state signed as a sweep runs (sweep/trust.py says why). Tune saves its experiment state to
the driver's staging folder, then copies that folder to the sweep's; in between it asks its callbacks
for their state, and SignRayState adds the staged files' signatures to the sweep folder's manifest
then, so a driver killed at any moment (SIGKILL, a lost machine) leaves a folder whose files, old
copy or new, are signed. When a fit ends, however it ends, the folder is signed as it is."""
from __future__ import annotations

import sys

import pyarrow.fs
from ray import tune

from sweep.trust import Folder, add_signatures, sign_folder, signature, user_key
from sweep.tuner.driver import Driver


class SignRayState(tune.Callback):
    """Signs what Tune staged each time it saves its experiment state."""

    def __init__(self) -> None:
        self._storage = None  # the running experiment's StorageContext, from its trials
        self._key: bytes | None = None
        self._signed: dict[str, tuple[tuple[int, int], str]] = {}  # staged file -> ((size, mtime), signature)
        self._warned = False

    def __getstate__(self):  # Tune pickles its callbacks into tuner.pkl: never the key, nor this driver's paths
        return {"_warned": False}  # not empty: pickle skips __setstate__ for a falsy state

    def __setstate__(self, state) -> None:
        self.__init__()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if trials:
            self._storage = trials[0].storage  # a restored trial gets the restoring driver's storage

    def get_state(self) -> None:
        """Tune's call as it saves its experiment state: the staged files are complete and not yet
        copied. No state of its own (None: Tune writes no file for it)."""
        if self._storage is None:
            return None
        try:
            self._sign_staged()
        except Exception as err:  # the end of the fit signs again; a sweep never fails for this
            if not self._warned:
                self._warned = True
                print(f"Ray's state could not be signed as the sweep ran ({err}); a driver killed now leaves a "
                      "folder that `byol-sweep resume` refuses until you `byol-sweep trust` it",
                      file=sys.stderr, flush=True)
        return None

    def _sign_staged(self) -> None:
        storage = self._storage
        staged = Folder(storage.experiment_driver_staging_path)
        fs = storage.storage_filesystem
        sweep = Folder(storage.experiment_fs_path, None if isinstance(fs, pyarrow.fs.LocalFileSystem) else fs)
        self._key = self._key or user_key()
        signed = {}
        for relative, stamp in staged.ray_state().items():
            known = self._signed.get(relative)
            if known is None or known[0] != stamp:
                data = staged.read(relative)
                if data is None:
                    continue
                known = self._signed[relative] = (stamp, signature(self._key, relative, data))
            signed[relative] = known[1]
        add_signatures(sweep, signed)


def fit_signed(driver: Driver, tuner, path: str):
    """driver.fit(tuner), then the Tune folder at path signed as the fit left it: ended, stopped or failed."""
    try:
        return driver.fit(tuner)
    finally:
        try:
            sign_folder(Folder.at(path))
        except Exception as err:  # never hides what stopped the fit
            print(f"Ray's state in {path} could not be signed ({err}); `byol-sweep resume` will refuse it until "
                  "you `byol-sweep trust` it", file=sys.stderr, flush=True)
