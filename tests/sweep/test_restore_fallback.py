"""A trial restored from a checkpoint Tune had deleted before a killed driver saved its state goes on
from its newest checkpoint short of the last epoch (sweep/tuner/trainable.py: restore)."""
from __future__ import annotations

import shutil

import pytest

from sweep.tracking.encoders import CHECKPOINT_FILE
from sweep.tuner.trainable import restore
from trainer import ConfigError, TrainConfig, Trainer

TINY = dict(dataset="digits", backbone="small_cnn", epochs=3, batch_size=64, train_limit=256,
            projector_hidden=64, projector_out=32, knn_bank_size=200, knn_queries=100, linear_probe=False,
            device="cpu")


@pytest.fixture(scope="module")
def trial_dir(tmp_path_factory):
    """A trial's folder as Tune leaves it: checkpoint_00000N holds epoch N + 1, of 3."""
    folder = tmp_path_factory.mktemp("trial")
    trainer = Trainer(TrainConfig(**TINY))
    for index, _ in enumerate(trainer.fit()):
        (folder / f"checkpoint_{index:06d}").mkdir()
        trainer.save(folder / f"checkpoint_{index:06d}" / CHECKPOINT_FILE)
    return folder


def copy_of(trial_dir, tmp_path):
    return shutil.copytree(trial_dir, tmp_path / "trial")


def test_an_existing_checkpoint_is_loaded(trial_dir, tmp_path):
    trainer = Trainer(TrainConfig(**TINY))
    restore(trainer, copy_of(trial_dir, tmp_path) / "checkpoint_000000")
    assert trainer.epoch == 1


def test_a_deleted_checkpoint_goes_on_from_the_newest_short_of_the_last_epoch(trial_dir, tmp_path, capsys):
    trial = copy_of(trial_dir, tmp_path)
    (trial / "checkpoint_000000" / CHECKPOINT_FILE).unlink()  # Tune deleted it; the folder stays
    trainer = Trainer(TrainConfig(**TINY))
    restore(trainer, trial / "checkpoint_000000")
    assert trainer.epoch == 2  # checkpoint_000001: checkpoint_000002 is the last epoch's, nothing left to report
    assert [r.epoch for r in trainer.fit()] == [3]
    assert "continuing from checkpoint_000001, epoch 2" in capsys.readouterr().err


def test_with_only_the_last_epoch_s_checkpoint_left_the_trial_starts_again(trial_dir, tmp_path, capsys):
    trial = copy_of(trial_dir, tmp_path)
    for index in (0, 1):
        shutil.rmtree(trial / f"checkpoint_{index:06d}")
    (trial / "checkpoint_000001").mkdir()
    trainer = Trainer(TrainConfig(**TINY))
    restore(trainer, trial / "checkpoint_000001")
    assert trainer.epoch == 0 and "starting it again" in capsys.readouterr().err


def test_a_checkpoint_of_another_configuration_is_still_refused(trial_dir, tmp_path):
    trainer = Trainer(TrainConfig(**{**TINY, "projector_out": 16}))
    with pytest.raises(ConfigError):
        restore(trainer, copy_of(trial_dir, tmp_path) / "checkpoint_000001")
