"""Ray's state in a sweep's folder, signed (sweep/trust.py): the key, the manifest, what is refused.
No Ray starts here."""
from __future__ import annotations

import json
import os
import pickle
import stat

import pytest

from sweep.errors import SweepError
from sweep.trust import (
    HISTORY,
    MANIFEST,
    Folder,
    add_signatures,
    check_trusted,
    first_untrusted,
    key_path,
    sign_folder,
    signature,
    user_key,
)

TRIAL = "train_byol_00000_0_seed=0"


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def tune_folder(root) -> Folder:
    """A folder laid out as Tune leaves an interrupted sweep's."""
    (root / TRIAL / "checkpoint_000000").mkdir(parents=True)
    (root / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (root / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": []}')
    (root / "basic-variant-state-2026-01-01_00-00-00.json").write_bytes(pickle.dumps({"iterators": []}))
    (root / TRIAL / "params.pkl").write_bytes(pickle.dumps({"seed": 0}))
    (root / TRIAL / "params.json").write_text('{"seed": 0}')
    (root / TRIAL / "result.json").write_text('{"epoch": 1}\n')
    (root / TRIAL / "checkpoint_000000" / "trainer.pt").write_bytes(b"PK tensors")
    (root / "sweep.json").write_text("{}")
    return Folder(str(root))


def test_the_key_is_made_once_private_and_read_back(config_home):
    key = user_key()
    path = key_path()
    assert path == config_home / "byol-sweep" / "hmac.key" and len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert user_key() == key and os.listdir(path.parent) == ["hmac.key"]  # no temporary file left


def test_a_key_others_can_read_or_a_damaged_one_is_refused():
    path = key_path()
    user_key()
    path.chmod(0o644)
    with pytest.raises(SweepError, match=f"signing key {path} can be read by other users .mode 0644"):
        user_key()
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(SweepError, match="is damaged .5 bytes, not 32.; delete it"):
        user_key()


def test_a_signed_folder_is_trusted_and_plain_files_may_change(tmp_path):
    folder = tune_folder(tmp_path / "sweep")
    assert sign_folder(folder) == 4  # tuner.pkl, the two states, params.pkl
    assert set(json.loads((tmp_path / "sweep" / MANIFEST).read_text())["files"]) == {
        f"{TRIAL}/params.pkl", "basic-variant-state-2026-01-01_00-00-00.json",
        "experiment_state-2026-01-01_00-00-00.json", "tuner.pkl"}
    for plain in (f"{TRIAL}/result.json", f"{TRIAL}/params.json", f"{TRIAL}/checkpoint_000000/trainer.pt",
                  f"{TRIAL}/model/config.json", "sweep.json", "ray/session_1/artifacts/x.pkl", "final/tuner.pkl"):
        (tmp_path / "sweep" / plain).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sweep" / plain).write_bytes(b"anything")
    assert first_untrusted(folder) is None


@pytest.mark.parametrize("name", ["tuner.pkl", f"{TRIAL}/params.pkl", "experiment_state-2026-01-01_00-00-00.json",
                                  "basic-variant-state-2026-01-01_00-00-00.json"])
def test_a_tampered_file_is_named(tmp_path, name):
    folder = tune_folder(tmp_path / "sweep")
    sign_folder(folder)
    (tmp_path / "sweep" / name).write_bytes(pickle.dumps(["not", "what", "ray", "wrote"]))
    assert first_untrusted(folder) == (f"{folder}/{name} does not match its signature in {MANIFEST} (it changed "
                                       "after it was signed, or another user's key signed it)")


@pytest.mark.parametrize("name", ["experiment_state-2099-01-01_00-00-00.json", f"{TRIAL}/error.pkl",
                                  f"{TRIAL}/trial_metadata.json", "search_gen_state-1.json",
                                  f"{TRIAL}/checkpoint_000000/_dict_checkpoint.pkl", "searcher-state-1.pkl"])
def test_an_added_file_is_named(tmp_path, name):
    folder = tune_folder(tmp_path / "sweep")
    sign_folder(folder)
    (tmp_path / "sweep" / name).write_bytes(pickle.dumps("added"))
    assert first_untrusted(folder) == f"{folder}/{name} is not signed in its {MANIFEST}"


def test_a_pickle_behind_a_symbolic_link_is_checked(tmp_path):
    folder = tune_folder(tmp_path / "sweep")
    sign_folder(folder)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "error.pkl").write_bytes(pickle.dumps("outside"))
    (tmp_path / "sweep" / "train_byol_00001").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "sweep" / "loop").symlink_to(tmp_path / "sweep")  # listed once, not forever
    assert first_untrusted(folder) == f"{folder}/train_byol_00001/error.pkl is not signed in its {MANIFEST}"


def test_a_missing_damaged_or_forged_manifest_is_refused(tmp_path, config_home):
    folder = tune_folder(tmp_path / "sweep")
    assert first_untrusted(folder).startswith(f"{folder} has no {MANIFEST} (a sweep made before")
    (tmp_path / "sweep" / MANIFEST).write_text("{not json")
    assert first_untrusted(folder).endswith(f"is not signed in its {MANIFEST}")
    sign_folder(folder)
    manifest = json.loads((tmp_path / "sweep" / MANIFEST).read_text())
    data = (tmp_path / "sweep" / "tuner.pkl").read_bytes()
    manifest["files"]["tuner.pkl"] = [signature(b"k" * 32, "tuner.pkl", data)]  # signed with another key
    (tmp_path / "sweep" / MANIFEST).write_text(json.dumps(manifest))
    assert first_untrusted(folder).startswith(f"{folder}/tuner.pkl does not match its signature")


def test_a_new_key_refuses_what_the_old_one_signed(tmp_path):
    folder = tune_folder(tmp_path / "sweep")
    sign_folder(folder)
    key_path().unlink()
    assert "does not match its signature" in first_untrusted(folder)


def test_signatures_added_while_a_sweep_runs_accept_the_old_copy_and_the_new(tmp_path):
    folder = tune_folder(tmp_path / "sweep")
    sign_folder(folder)
    key, name = user_key(), "experiment_state-2026-01-01_00-00-00.json"
    add_signatures(folder, {name: signature(key, name, b'{"trial_data": [1]}')})  # staged, not yet copied
    assert first_untrusted(folder) is None
    (tmp_path / "sweep" / name).write_text('{"trial_data": [1]}')  # the copy arrives
    assert first_untrusted(folder) is None
    for n in range(HISTORY + 2):
        add_signatures(folder, {name: signature(key, name, str(n).encode())})
    assert len(json.loads((tmp_path / "sweep" / MANIFEST).read_text())["files"][name]) == HISTORY


def test_the_refusal_is_one_sentence_with_the_way_out(tmp_path):
    folder = tune_folder(tmp_path / "sweep")
    with pytest.raises(SweepError) as refused:
        check_trusted(folder, "sweep", "runs")
    message = str(refused.value)
    assert message.startswith(f"sweep sweep's Ray state is refused: {folder} has no {MANIFEST}")
    assert message.endswith("sign it with `byol-sweep trust sweep --storage runs`") and "\n" not in message


def test_a_file_uri_is_the_local_folder(tmp_path):
    folder = tune_folder(tmp_path / "sweep")
    sign_folder(Folder.at(f"file://{tmp_path}/sweep"))
    assert first_untrusted(folder) is None and Folder.at(f"file://{tmp_path}/sweep").fs is None


def test_trust_then_resume_through_the_command(tmp_path, monkeypatch, capsys):
    """`resume` refuses a folder without signatures before anything starts; `trust` signs it."""
    from tests.sweep.test_cli import byol_sweep_in_process

    folder = tune_folder(tmp_path / "runs" / "old")
    (tmp_path / "runs" / "old" / "sweep.json").write_text(json.dumps({"storage": str(tmp_path / "runs")}))
    refused = byol_sweep_in_process("resume", "old", "--storage", "runs", cwd=tmp_path, monkeypatch=monkeypatch,
                                    capsys=capsys)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"sweep old's Ray state is refused: {folder} has no {MANIFEST}" in refused.stderr, refused.stderr
    assert "`byol-sweep trust old --storage runs`" in refused.stderr
    trusted = byol_sweep_in_process("trust", "old", "--storage", "runs", cwd=tmp_path, monkeypatch=monkeypatch,
                                    capsys=capsys)
    assert trusted.returncode == 0 and f"signed 4 Ray state files in {folder}" in trusted.stdout
    assert first_untrusted(folder) is None
