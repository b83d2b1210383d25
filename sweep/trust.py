"""Ray's state in a sweep's folder, signed by its user: `tune.Tuner.restore` unpickles tuner.pkl,
the experiment and searcher states (the `.json` ones too: cloudpickle inside) and each trial's
params.pkl and error.pkl, so whoever can write the folder could run code as whoever resumes it.
The driver records an HMAC-SHA256 of each such file in the folder's `ray-state.hmac`, with a key
that is its user's alone (`~/.config/byol-sweep/hmac.key`); `resume` and `finalize` restore a Tune
folder only when every such file matches, and `byol-sweep trust` re-signs a folder on purpose."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sweep.errors import SweepError
from sweep.state import read_state

if TYPE_CHECKING:
    import pyarrow.fs

MANIFEST = "ray-state.hmac"
FORMAT = "byol-sweep ray-state signatures 1"
KEY_BYTES = 32
# Ray unpickles every .pkl it restores, and the .json state files at a Tune folder's root (cloudpickle
# inside); below the root its .json are plain (result.json, params.json), but for this one
PICKLED_JSON_BELOW = {"trial_metadata.json"}  # Trial.from_directory
PLAIN_JSON = {"sweep.json"}  # byol-sweep's own, at the root, read with `json` alone
# top-level folders that are not this Tune folder's state: Ray's temp files (never restored), and the
# final stage's own Tune folder (signed and checked on its own)
OTHER_FOLDERS = {"ray", "final"}
# digests kept per file while a driver runs: the storage's copy of a file may lag the one Tune staged
HISTORY = 8
# the command line's words for it
REFUSES_UNSIGNED = ("It first checks that Ray's pickled state in the folder is as a driver of yours left it (signed "
                    "with your key) and refuses it otherwise: see `byol-sweep trust`.")
TRUST_HELP = ("sign a sweep folder's Ray state as it is now: resume and finalize load it",
              "Sign the Ray state files of a sweep's folder (tuner.pkl, the experiment and searcher states, each "
              "trial's params.pkl) with your key, as they are now. Restoring them runs any code in them: first check "
              "that nobody else could have changed the folder (one made before byol-sweep signed, copied, refused).")


def key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "byol-sweep" / "hmac.key"


def user_key() -> bytes:
    """This user's signing key, created (0600, in a 0700 folder) on first use; a key file that other
    users could read, or that is not this user's, is refused."""
    path = key_path()
    if not path.exists():
        try:
            _create_key(path)
        except OSError as err:
            raise SweepError(f"the signing key {path} cannot be created ({err.strerror}); set XDG_CONFIG_HOME to a "
                             "folder of yours") from None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        raise SweepError(f"the signing key {path} cannot be read ({err.strerror}); it must be a file of yours "
                         "with mode 0600") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise SweepError(f"the signing key {path} can be read by other users (mode {info.st_mode & 0o777:04o}, "
                             f"owner uid {info.st_uid}); anyone who read it could sign a sweep folder: delete it "
                             "(a new one is made, then trust your sweeps again with `byol-sweep trust NAME`) or, "
                             f"if nobody else could have read it, make it yours alone with `chmod 600 {path}`")
        key = f.read()
    if len(key) != KEY_BYTES:
        raise SweepError(f"the signing key {path} is damaged ({len(key)} bytes, not {KEY_BYTES}); delete it "
                         "(a new one is made) and trust your sweeps again with `byol-sweep trust NAME`")
    return key


def _create_key(path: Path) -> None:
    """Write a new key under a temporary name with mode 0600, then link it into place: a reader never
    sees a partial key, and of two processes creating it at once, one key wins."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: its key is the key
    finally:
        temporary.unlink(missing_ok=True)


def is_ray_state(relative: str) -> bool:
    """Whether a file of a Tune folder is one that restoring it may unpickle."""
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] in OTHER_FOLDERS or relative == MANIFEST:
        return False
    name = parts[-1]
    if name.endswith(".json"):
        return name not in PLAIN_JSON if len(parts) == 1 else name in PICKLED_JSON_BELOW
    return name.endswith(".pkl")


class Folder:
    """A Tune folder: on this machine (fs None), or in a pyarrow filesystem (a storage URI)."""

    def __init__(self, root: str, fs: pyarrow.fs.FileSystem | None = None):
        self.root, self.fs = root.rstrip("/") or "/", fs

    @classmethod
    def at(cls, path: str) -> "Folder":
        if "://" not in path:
            return cls(path)
        import pyarrow.fs  # a storage URI only: `byol-sweep --help` does not wait for pyarrow

        fs, root = pyarrow.fs.FileSystem.from_uri(path)
        return cls(root, None if isinstance(fs, pyarrow.fs.LocalFileSystem) else fs)

    def __str__(self) -> str:
        return self.root

    def ray_state(self) -> dict[str, tuple[int, int]]:
        """{relative path: (size, mtime in ns)} of the folder's Ray state files (through symbolic
        links too: Tune follows them)."""
        if self.fs is not None:
            from pyarrow.fs import FileSelector, FileType  # a storage URI only, as in at()

            selector = FileSelector(self.root, recursive=True, allow_not_found=True)
            return {relative: (info.size, info.mtime_ns or 0) for info in self.fs.get_file_info(selector)
                    if info.type == FileType.File and is_ray_state(relative := info.path[len(self.root):].lstrip("/"))}
        found, seen, folders = {}, set(), [""]
        while folders:
            here = folders.pop()
            try:
                info = os.stat(Path(self.root, here))
                entries = list(os.scandir(Path(self.root, here)))
            except OSError:  # gone, or not readable: Tune cannot read it either
                continue
            if (info.st_dev, info.st_ino) in seen:  # a link back to a folder already listed
                continue
            seen.add((info.st_dev, info.st_ino))
            for entry in entries:
                relative = f"{here}/{entry.name}" if here else entry.name
                if entry.is_dir():
                    if here or entry.name not in OTHER_FOLDERS:
                        folders.append(relative)
                elif is_ray_state(relative):
                    try:
                        stat = entry.stat()
                        found[relative] = (stat.st_size, stat.st_mtime_ns)
                    except OSError:  # a broken link: listed, so that it is named
                        found[relative] = (0, 0)
        return found

    def exists(self, relative: str) -> bool:
        if self.fs is None:
            return Path(self.root, relative).is_file()
        from pyarrow.fs import FileType  # a storage URI only, as in at()

        return self.fs.get_file_info(f"{self.root}/{relative}").type == FileType.File

    def read(self, relative: str) -> bytes | None:
        try:
            if self.fs is None:
                return Path(self.root, relative).read_bytes()
            with self.fs.open_input_stream(f"{self.root}/{relative}") as f:
                return f.readall()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def write(self, relative: str, data: bytes) -> None:
        """Replace a file at once: a driver killed while writing leaves the old one."""
        if self.fs is not None:  # an object store's write is whole or nothing
            with self.fs.open_output_stream(f"{self.root}/{relative}") as f:
                f.write(data)
            return
        target = Path(self.root, relative)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)


def signature(key: bytes, relative: str, data: bytes) -> str:
    """The file's HMAC-SHA256, bound to its place in the folder."""
    return hmac.new(key, relative.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def read_manifest(folder: Folder) -> dict[str, list[str]] | None:
    """{relative path: accepted signatures}, None without a manifest; a damaged one reads as empty
    (its files are then refused as unsigned)."""
    data = folder.read(MANIFEST)
    if data is None:
        return None
    try:
        manifest = json.loads(data)
        files = manifest["files"] if manifest.get("format") == FORMAT else {}
        return {str(k): [str(s) for s in v] for k, v in files.items() if isinstance(v, list)}
    except (ValueError, AttributeError, KeyError, TypeError):
        return {}


def write_manifest(folder: Folder, files: dict[str, list[str]]) -> None:
    folder.write(MANIFEST, json.dumps({"format": FORMAT, "files": dict(sorted(files.items()))}, indent=1).encode())


def sign_folder(folder: Folder) -> int:
    """Sign the folder's Ray state files as they are now (the signatures replace any earlier ones);
    returns how many."""
    key = user_key()
    files = {}
    try:
        for relative in folder.ray_state():
            data = folder.read(relative)
            if data is not None:
                files[relative] = [signature(key, relative, data)]
        write_manifest(folder, files)
    except OSError as err:
        raise SweepError(f"Ray's state in {folder} cannot be signed: {err.filename or folder}: "
                         f"{err.strerror or err}") from None
    return len(files)


def add_signatures(folder: Folder, signed: dict[str, str]) -> None:
    """Accept these signatures too, keeping the last HISTORY of each file."""
    files = read_manifest(folder) or {}
    changed = False
    for relative, digest in signed.items():
        known = files.setdefault(relative, [])
        if digest not in known:
            known[:] = (known + [digest])[-HISTORY:]
            changed = True
    if changed:
        write_manifest(folder, files)


def first_untrusted(folder: Folder) -> str | None:
    """What makes the folder untrusted, as the end of a sentence naming the file; None if every Ray
    state file in it matches its signature."""
    key = user_key()
    try:
        manifest = read_manifest(folder)
        if manifest is None:
            return (f"{folder} has no {MANIFEST} (a sweep made before byol-sweep signed Ray's state, by another "
                    "user, or copied without it)")
        for relative in sorted(folder.ray_state()):
            if relative not in manifest:
                return f"{folder}/{relative} is not signed in its {MANIFEST}"
            data = folder.read(relative)
            if data is not None and not any(hmac.compare_digest(signature(key, relative, data), s)
                                            for s in manifest[relative]):
                return (f"{folder}/{relative} does not match its signature in {MANIFEST} (it changed after it was "
                        "signed, or another user's key signed it)")
    except OSError as err:
        return f"{err.filename or folder} cannot be read ({err.strerror or err})"
    return None


def check_trusted(folder: Folder, name: str, storage: str) -> None:
    """Refuse, in one sentence, a Tune folder whose Ray state is not signed by this user as it is."""
    problem = first_untrusted(folder)
    if problem:
        raise SweepError(f"sweep {name}'s Ray state is refused: {problem}; restoring it unpickles those files, "
                         "which runs any code in them, so byol-sweep restores only files signed with your key; "
                         f"if you have inspected the folder and trust it, sign it with `byol-sweep trust {name} "
                         f"--storage {storage}`")


def tune_folders(path: str) -> list[Folder]:
    """The sweep's Tune folders: the search's, and the final stage's when it has one."""
    search = Folder.at(path)
    final = Folder(f"{search.root}/final", search.fs)
    return [search, final] if final.exists("tuner.pkl") else [search]


def trust_sweep(name: str, storage: str) -> int:
    """Sign a stopped sweep's Ray state as it is now, on its user's word; returns how many files."""
    state = read_state(name, storage)
    signed = 0
    for folder in tune_folders(f"{state['storage']}/{name}"):
        count = sign_folder(folder)
        print(f"signed {count} Ray state files in {folder} with your key; `resume` and `finalize` now load them")
        signed += count
    return signed
