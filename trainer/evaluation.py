"""Frozen-feature evaluation: weighted kNN, collapse health (z_std, z_spread, eff_rank), linear probe."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def embed(network: nn.Module, inputs: torch.Tensor, view=lambda x: x, batch_size: int = 512) -> torch.Tensor:
    """network(view(batch)) over inputs in eval mode, as float; view maps a batch to network input."""
    was_training = network.training
    network.eval()
    chunks = [network(view(inputs[i : i + batch_size])).float() for i in range(0, len(inputs), batch_size)]
    network.train(was_training)
    return torch.cat(chunks)


def extract_features(encoder: nn.Module, images: torch.Tensor, view, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised encoder features of uint8 images."""
    return F.normalize(embed(encoder, images, view, batch_size), dim=1)


@torch.no_grad()
def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                 query_labels: torch.Tensor, k: int = 200, temperature: float = 0.1,
                 num_classes: int | None = None) -> torch.Tensor:
    """Weighted kNN top-1 (Wu et al. 2018) on normalised features; a 0-dim tensor in [0, 1]."""
    k = min(k, len(bank))
    num_classes = num_classes or int(max(bank_labels.max(), query_labels.max())) + 1
    correct = torch.zeros((), device=bank.device)
    for i in range(0, len(queries), 1024):
        q = queries[i : i + 1024]
        sims, idx = (q @ bank.T).topk(k, dim=1)
        weights = ((sims - sims[:, :1]) / temperature).exp()  # shifted by the best: no overflow at small T
        votes = torch.zeros(len(q), num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[idx], weights)
        correct += (votes.argmax(1) == query_labels[i : i + 1024]).sum()
    return correct / len(queries)


def projection_std(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of L2-normalised projections: 1/sqrt(d) when spread, 0 when collapsed."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def z_spread(z: torch.Tensor) -> torch.Tensor:
    """projection_std * sqrt(d): 1 when the normalised projections spread over the sphere, 0 collapsed."""
    return projection_std(z) * math.sqrt(z.shape[1])


def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the singular values of z normalised to
    sum 1; from 1 (every row on one line) to min(n, d) (all directions used equally)."""
    s = torch.linalg.svdvals(z.float())
    p = s / s.sum().clamp(min=eps) + eps
    return torch.exp(-(p * p.log()).sum())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 epochs: int = 100, seed: int = 0) -> float:
    """Top-1 of a logistic-regression probe trained full-batch with Adam on frozen features."""
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    xt, xe = (train_x - mean) / std, (test_x - mean) / std
    probe = nn.Linear(xt.shape[1], num_classes).to(xt.device)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=gen).mul_(0.01))
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(probe(xt), train_y).backward()
            opt.step()
    with torch.no_grad():
        return float((probe(xe).argmax(1) == test_y).float().mean())
