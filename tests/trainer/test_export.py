"""A trained encoder out of a checkpoint and back, ready to extract features."""
from __future__ import annotations

import pytest
import torch

from trainer import ConfigError, TrainConfig, Trainer
from trainer.export import encoder_file_from_checkpoint, load_encoder

SMALL = dict(dataset="digits", backbone="small_cnn", train_limit=128, batch_size=64, projector_hidden=64,
             projector_out=32, knn_bank_size=128, knn_queries=64, knn_k=10, epochs=1, linear_probe=False)


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_the_exported_encoder_computes_the_trained_features(tmp_path):
    trainer = Trainer(TrainConfig(**SMALL))
    next(trainer.fit())
    trainer.save(tmp_path / "trainer.pt")
    path = encoder_file_from_checkpoint(tmp_path / "trainer.pt", tmp_path / "encoder.pt")
    encoder = load_encoder(path)
    assert not encoder.training and encoder.config.backbone == "small_cnn"
    batch = trainer.data.eval_images[:8]
    trainer.model.encoder.eval()
    with torch.no_grad():  # the file's encoder takes images in [0, 1] and normalises them itself
        assert torch.allclose(encoder(batch.float() / 255), trainer.model.encoder(trainer.eval_view(batch)), atol=1e-4)
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_a_file_that_is_not_an_encoder_is_refused_in_one_sentence(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(ConfigError, match="is not a byol-sweep encoder file"):
        load_encoder(bad)
    with pytest.raises(ConfigError, match="is not a byol-sweep checkpoint"):
        encoder_file_from_checkpoint(bad, tmp_path / "out.pt")
