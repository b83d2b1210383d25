"""Where a sweep started on this machine keeps Ray's temp files."""
from __future__ import annotations

import tempfile
from pathlib import Path

from sweep.runner import MAX_RAY_TEMP_DIR, _ray_temp_dir


def test_a_short_storage_path_holds_rays_files_directly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _ray_temp_dir(Path("s")) == "s/ray"
    assert (tmp_path / "s" / "ray").is_dir()


def test_a_long_storage_path_is_reached_through_a_short_link(tmp_path):
    state_dir = tmp_path / ("deep" * 20) / "my-sweep"
    temp = _ray_temp_dir(state_dir)
    assert len(temp) <= MAX_RAY_TEMP_DIR
    assert Path(temp).is_symlink() and Path(temp).resolve() == (state_dir / "ray").resolve()
    assert _ray_temp_dir(state_dir) == temp  # resume: the same link
    (Path(temp) / "session_x").mkdir()
    assert (state_dir / "ray" / "session_x").is_dir()  # the files themselves stay with the sweep
    Path(temp).unlink()


def test_links_to_deleted_sweeps_are_cleared(tmp_path):
    stale = Path(tempfile.gettempdir()) / "byol-ray-0000000000"
    stale.unlink(missing_ok=True)
    stale.symlink_to(tmp_path / "gone", target_is_directory=True)
    link = Path(_ray_temp_dir(tmp_path / ("deep" * 20)))
    assert not stale.is_symlink()
    link.unlink()
