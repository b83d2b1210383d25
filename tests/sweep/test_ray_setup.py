"""Where a sweep started on this machine keeps Ray's temp files."""
from __future__ import annotations

import tempfile
from pathlib import Path

from sweep.tuner.ray_setup import MAX_RAY_TEMP_DIR, _ray_temp_dir


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


def test_a_local_sweep_asking_for_more_than_this_machine_has_is_refused_before_ray(monkeypatch):
    import os
    import sys

    import pytest

    from sweep.errors import SweepError
    from sweep.runner import SweepOptions
    from sweep.tuner import machine
    from sweep.tuner.machine import check_local_resources

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        pytest.skip("a Ray started in this process is checked by its own resources")
    monkeypatch.setattr(machine, "local_gpu_count", lambda: 0)
    with pytest.raises(SweepError, match=r"--gpus-per-trial is 0.5 but this machine has no GPU"):
        check_local_resources(SweepOptions(gpus_per_trial=0.5))
    monkeypatch.setattr(machine, "local_gpu_count", lambda: 2)
    with pytest.raises(SweepError, match=r"--gpus-per-trial is 3 but this machine has 2 GPUs; allowed: a number up to 2"):
        check_local_resources(SweepOptions(gpus_per_trial=3))
    check_local_resources(SweepOptions(gpus_per_trial=1.5))
    cpus = os.cpu_count()
    with pytest.raises(SweepError, match=rf"--cpus-per-trial is {cpus + 1} but this machine has {cpus} CPU"):
        check_local_resources(SweepOptions(cpus_per_trial=cpus + 1))
    check_local_resources(SweepOptions(cpus_per_trial=cpus, gpus_per_trial=0))
    check_local_resources(SweepOptions(address="ray://far:10001", cpus_per_trial=cpus + 1, gpus_per_trial=8))
