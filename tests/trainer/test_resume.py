"""Exact resume: 2 epochs straight == 1 epoch, save, load in a new process, 1 more epoch."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer as trainer_package
from trainer import ConfigError, TrainConfig, Trainer

TINY = dict(dataset="digits", backbone="small_cnn", epochs=2, batch_size=64, train_limit=256,
            projector_hidden=64, projector_out=32, knn_bank_size=200, knn_queries=100, linear_probe=False,
            device="cpu")

TIMING = {"images_per_s", "epoch_s"}

RESUME_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import trainer as package
    from trainer import TrainConfig, Trainer

    config, checkpoint, out, parent_package = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    assert os.path.realpath(package.__file__) == parent_package, (package.__file__, parent_package)
    trainer = Trainer(TrainConfig.from_dict(config))
    trainer.load(checkpoint)
    assert trainer.epoch == 1, trainer.epoch
    results = [r.metrics() for r in trainer.fit()]
    torch.save({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "results": results, "epoch": trainer.epoch, "step": trainer.step,
                "generator": trainer.gen.get_state()}, out)
""")


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def _assert_same_optimizer(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    assert len(a["state"]) > 0
    for index in a["state"]:
        for name, value in a["state"][index].items():
            other = b["state"][index][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other


@pytest.fixture(scope="module")
def straight():
    trainer = Trainer(TrainConfig(**TINY))
    results = [r.metrics() for r in trainer.fit()]
    return trainer, results


@pytest.mark.slow  # a second Python process: CI runs it
@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_resume_in_a_new_process_is_exact(straight, tmp_path):
    trainer, results = straight
    assert len(results) == 2

    first = Trainer(TrainConfig(**TINY))
    for result in first.fit():  # one epoch, then stop as a preempted trial would
        first_result = result.metrics()
        break
    assert first.epoch == 1
    assert _without_timing(first_result) == _without_timing(results[0])
    checkpoint = tmp_path / "ckpt" / "epoch1.pt"
    first.save(checkpoint)
    assert checkpoint.exists()
    assert [p.name for p in checkpoint.parent.iterdir()] == ["epoch1.pt"]  # no temporary left behind
    del first

    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    out = tmp_path / "resumed.pt"
    # the new process must import the very same trainer package as this one
    package_root = str(Path(trainer_package.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(TINY), str(checkpoint), str(out), os.path.realpath(trainer_package.__file__)],
        capture_output=True, text=True, timeout=300, env=env, cwd=package_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(out, weights_only=True)

    assert resumed["epoch"] == 2 and resumed["step"] == trainer.step == 8
    _assert_same_tensors(trainer.model.state_dict(), resumed["model"], "model")
    _assert_same_optimizer(trainer.optimizer.state_dict(), resumed["optimizer"])
    assert torch.equal(trainer.gen.get_state(), resumed["generator"])
    assert len(resumed["results"]) == 1
    assert _without_timing(resumed["results"][0]) == _without_timing(results[1])


def test_training_changed_the_weights(straight):
    trainer, _ = straight
    fresh = Trainer(TrainConfig(**TINY))
    changed = [k for k, v in fresh.model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, trainer.model.state_dict()[k])]
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("target_encoder.") for k in changed)
    assert any(k.startswith("predictor.") for k in changed)


def test_other_seed_other_initialisation():
    # same seed, same run is shown by the resume test (its first epoch equals the straight run's)
    a = Trainer(TrainConfig(**TINY)).model.state_dict()
    b = Trainer(TrainConfig(**TINY)).model.state_dict()
    c = Trainer(TrainConfig(**{**TINY, "seed": 1})).model.state_dict()
    _assert_same_tensors(a, b, "model")
    assert not torch.equal(a["encoder.0.weight"], c["encoder.0.weight"])


def test_checkpoint_holds_config_and_round_trips_in_process(straight, tmp_path):
    trainer, _ = straight
    path = tmp_path / "final.pt"
    random.random(), np.random.rand(), torch.rand(1)  # global RNGs away from where a new Trainer seeds them
    trainer.save(path)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    state = torch.load(path, weights_only=True)
    assert TrainConfig.from_dict(state["config"]) == trainer.config
    assert state["epoch"] == 2 and state["step"] == 8
    loaded = Trainer(TrainConfig(**TINY))
    loaded.load(path)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws  # global RNGs restored
    _assert_same_tensors(trainer.model.state_dict(), loaded.model.state_dict(), "model")
    assert loaded.epoch == 2
    assert list(loaded.fit()) == []  # nothing left to train
    # the EMA pairs still point at the live parameters after loading
    targets, online = loaded.model.ema_pairs()
    assert [t.data_ptr() for t in loaded.ema_target] == [t.data_ptr() for t in targets]
    assert [o.data_ptr() for o in loaded.ema_online] == [o.data_ptr() for o in online]


def test_save_overwrites_atomically(straight, tmp_path):
    trainer, _ = straight
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"an older checkpoint")
    trainer.save(path)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_checkpoint_of_another_configuration_is_refused(straight, tmp_path):
    trainer, _ = straight
    path = tmp_path / "ckpt.pt"
    trainer.save(path)
    other = Trainer(TrainConfig(**{**TINY, "base_lr": 0.5, "backbone": "small_cnn"}))
    with pytest.raises(ConfigError, match=r"another configuration \(base_lr 0.2 -> 0.5\)"):
        other.load(path)
    # how fast or where it runs may change; more epochs are allowed and said
    said = []
    longer = Trainer(TrainConfig(**{**TINY, "epochs": 3, "precision": "bf16", "linear_probe": True}), log=said.append)
    longer.load(path)
    assert longer.epoch == 2 and "epochs changed from 2 to 3" in said[0]


def test_a_checkpoint_from_another_kind_of_device_is_refused(straight, tmp_path):
    trainer, _ = straight
    state = trainer.state_dict()
    state["device_type"] = "cuda"
    path = tmp_path / "from-gpu.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="written on cuda and this run is on cpu"):
        Trainer(TrainConfig(**TINY)).load(path)


# -- only tensors and plain values are ever loaded -----------------------------------------------

class _TouchOnLoad:
    """Unpickling this creates a marker file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch on the legacy file, refused anyway
def test_a_crafted_pickle_is_refused_without_running_its_code(tmp_path):
    import pickle

    proof = tmp_path / "payload-works"
    pickle.loads(pickle.dumps(_TouchOnLoad(proof)))  # the payload really runs when unpickled naively
    assert proof.exists()

    marker = tmp_path / "pwned"
    zipped = tmp_path / "crafted.pt"
    torch.save({"config": {}, "model": _TouchOnLoad(marker)}, zipped)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(_TouchOnLoad(marker)))
    for path in (zipped, legacy):
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not a byol-sweep checkpoint \(") as err:
            Trainer(TrainConfig(**TINY)).load(path)
        assert "\n" not in str(err.value)
        assert not marker.exists()


def test_a_truncated_checkpoint_is_refused_in_one_sentence(straight, tmp_path):
    trainer, _ = straight
    path = tmp_path / "ckpt.pt"
    trainer.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConfigError) as err:
        Trainer(TrainConfig(**TINY)).load(path)
    assert str(err.value) == f"{path} is not a byol-sweep checkpoint (it is truncated or corrupt)"


@pytest.mark.parametrize("edit, problem", [
    (lambda state: [1, 2, 3], "it holds a list, not a dict"),
    (lambda state: {k: v for k, v in state.items() if k not in ("model", "rng")}, "keys missing: model, rng"),
    (lambda state: {**state, "rng": {"torch": state["rng"]["torch"]}}, "its rng entry lacks some of"),
    (lambda state: {**state, "epoch": "2"}, "its epoch and step are not integers"),
    (lambda state: {**state, "model": {"encoder.0.weight": torch.zeros(1)}}, "of this model"),
])
def test_a_file_of_another_layout_is_refused_naming_it(straight, tmp_path, edit, problem):
    trainer, _ = straight
    path = tmp_path / "other.pt"
    torch.save(edit(trainer.state_dict()), path)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not a byol-sweep checkpoint.*{problem}") as err:
        Trainer(TrainConfig(**TINY)).load(path)
    assert "\n" not in str(err.value)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'none.pt'))} cannot be read"):
        Trainer(TrainConfig(**TINY)).load(tmp_path / "none.pt")
