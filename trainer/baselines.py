"""What a trained encoder must beat: kNN (and, when the configuration runs one, the linear probe) on
raw pixels and on the untrained encoder, measured on exactly the bank and queries a trial of the
same configuration is evaluated on."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .data import ImageData
from .evaluation import extract_features, knn_accuracy, linear_probe
from .loop import Trainer

CALIBRATION_BATCH = 256


SEED_DEPENDENT = ("untrained", "untrained_bn")  # their weights are the seed's init; raw pixels have none


def baseline_accuracies(config: TrainConfig, data: ImageData | None = None, raw_pixels: bool = True) -> dict[str, float]:
    """kNN top-1 of: "raw_pixels", the resized, normalised pixels; "untrained", the encoder at
    initialisation (config.seed); "untrained_bn", the same weights with BatchNorm's running
    statistics averaged over the training images (a few forward passes, no gradient: early in
    training much of the gain over "untrained" is this bookkeeping, not learning); and
    "queries", how many images were classified. With config.linear_probe, also "<each>_probe":
    the linear probe a trained encoder gets (Trainer.probe), on the same features. raw_pixels=False
    leaves raw pixels out (another seed's measurement has them: they depend on no init)."""
    trainer = Trainer(config, data=data)  # data: images already loaded (else config.dataset's)
    d, cfg = trainer.data, config
    bank_y, query_y = d.train_labels[trainer.bank_idx], d.eval_labels[trainer.query_idx]
    out: dict[str, float] = {}

    def measure(name: str, encoder: nn.Module) -> None:
        with trainer._autocast():
            bank = extract_features(encoder, d.train_images[trainer.bank_idx], trainer.eval_view).float()
            queries = extract_features(encoder, d.eval_images[trainer.query_idx], trainer.eval_view).float()
        out[name] = float(knn_accuracy(bank, bank_y, queries, query_y, cfg.knn_k, cfg.knn_temperature, len(d.classes)))
        if cfg.linear_probe:
            out[f"{name}_probe"] = linear_probe(bank, bank_y, queries, query_y, seed=cfg.seed)

    if raw_pixels:
        measure("raw_pixels", nn.Flatten())
    measure("untrained", trainer.model.encoder)
    calibrate_batchnorm(trainer.model.encoder, d.train_images, trainer.eval_view)
    measure("untrained_bn", trainer.model.encoder)
    out["queries"] = float(len(trainer.query_idx))
    return out


@torch.no_grad()
def calibrate_batchnorm(encoder: nn.Module, images: torch.Tensor, view) -> None:
    """Set every BatchNorm's running statistics to their average over the images (weights untouched)."""
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
    encoder.train()
    for i in range(0, len(images), CALIBRATION_BATCH):
        encoder(view(images[i : i + CALIBRATION_BATCH]))
    encoder.eval()
