"""Encoders and the BYOL heads. The encoder's feature size is read off the network."""
from __future__ import annotations

import torch
import torchvision
from torch import nn


def small_cnn(width: int = 32) -> nn.Sequential:
    """Four conv blocks (width x 1-2-4-8: 32-64-128-256 by default), global average pool: trains in
    minutes on 2 CPU cores. `small_cnn_half` (width 16: 16-32-64-128, a quarter of the
    multiply-adds) takes a step about twice as fast at 16 px."""
    layers: list[nn.Module] = []
    channels = [3, width, 2 * width, 4 * width, 8 * width]
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _torchvision_resnet(name: str, cifar_stem: bool) -> nn.Module:
    net = getattr(torchvision.models, name)(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def build_encoder(backbone: str) -> nn.Module:
    if backbone == "small_cnn":
        return small_cnn()
    if backbone == "small_cnn_half":
        return small_cnn(width=16)
    if backbone == "resnet18_cifar":
        return _torchvision_resnet("resnet18", cifar_stem=True)
    if backbone in ("resnet18", "resnet50"):
        return _torchvision_resnet(backbone, cifar_stem=False)
    raise ValueError(f"backbone {backbone!r} is unknown; allowed: small_cnn, small_cnn_half, resnet18_cifar, resnet18, resnet50")


@torch.no_grad()
def feature_dim(encoder: nn.Module, image_size: int = 32) -> int:
    was_training = encoder.training
    encoder.eval()
    dim = encoder(torch.zeros(1, 3, image_size, image_size)).shape[1]
    encoder.train(was_training)
    return int(dim)


def mlp(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """BYOL's head: Linear -> BatchNorm -> ReLU -> Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
    )
