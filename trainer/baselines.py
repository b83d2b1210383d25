"""What a trained encoder must beat: kNN on raw pixels and on the untrained encoder, measured on
exactly the bank and queries a trial of the same configuration is evaluated on."""
from __future__ import annotations

from torch import nn

from .config import TrainConfig
from .evaluation import extract_features, knn_accuracy
from .loop import Trainer


def baseline_accuracies(config: TrainConfig) -> dict[str, float]:
    """{"raw_pixels": kNN top-1 on the resized, normalised pixels, "untrained": kNN top-1 on the
    encoder at initialisation (config.seed), "queries": how many images were classified}."""
    trainer = Trainer(config)
    d, cfg = trainer.data, config
    bank_y, query_y = d.train_labels[trainer.bank_idx], d.eval_labels[trainer.query_idx]
    flatten = nn.Flatten()
    bank = extract_features(flatten, d.train_images[trainer.bank_idx], trainer.eval_view)
    queries = extract_features(flatten, d.eval_images[trainer.query_idx], trainer.eval_view)
    raw = float(knn_accuracy(bank, bank_y, queries, query_y, cfg.knn_k, cfg.knn_temperature, len(d.classes)))
    return {"raw_pixels": raw, "untrained": trainer.evaluate()[0], "queries": float(len(trainer.query_idx))}
