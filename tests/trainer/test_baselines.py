"""The baselines a trained encoder must beat, on the same bank and queries as a trial."""
from __future__ import annotations

import pytest
import torch

from trainer import TrainConfig, Trainer
from trainer.baselines import baseline_accuracies, calibrate_batchnorm

SMALL = dict(dataset="digits", backbone="small_cnn", train_limit=256, batch_size=64, projector_hidden=64,
             projector_out=32, knn_bank_size=256, knn_queries=200, knn_k=20)


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_baselines_use_the_trials_bank_and_queries():
    config = TrainConfig(**SMALL)
    out = baseline_accuracies(config)
    assert out["queries"] == 200
    for key in ("raw_pixels", "untrained", "untrained_bn"):
        assert 0.1 < out[key] <= 1.0  # ten classes: chance is 0.1; digits' pixels are far above it
    # the untrained encoder is the trial's own initialisation: the same seed gives the same value
    assert baseline_accuracies(config)["untrained"] == out["untrained"]


@pytest.mark.slow  # builds Trainers and fits probes: seconds
def test_linear_probe_baselines_follow_the_trials_probe():
    without = baseline_accuracies(TrainConfig(**SMALL, linear_probe=False))
    assert not any(k.endswith("_probe") for k in without)
    config = TrainConfig(**SMALL, linear_probe=True)
    out = baseline_accuracies(config)
    for key in ("raw_pixels", "untrained", "untrained_bn"):
        assert 0.1 < out[f"{key}_probe"] <= 1.0
        assert out[key] == without[key]  # the kNN baselines do not depend on the probe
    # the untrained encoder's probe is exactly the probe a trial of this configuration gets before its first step
    assert out["untrained_probe"] == Trainer(config).probe()


def test_batchnorm_calibration_changes_running_statistics_only():
    trainer = Trainer(TrainConfig(**SMALL))
    encoder = trainer.model.encoder
    weights = {k: v.clone() for k, v in encoder.state_dict().items() if "running" not in k and "num_batches" not in k}
    means_before = [m.running_mean.clone() for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    calibrate_batchnorm(encoder, trainer.data.train_images, trainer.eval_view)
    after = encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    means_after = [m.running_mean for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert means_before and all(not torch.equal(a, b) for a, b in zip(means_before, means_after))
