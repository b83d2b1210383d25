"""The BYOL maths as plain functions: loss, momentum schedule, EMA update, and the networks."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .models import build_encoder, feature_dim, mlp


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z) per sample; z is treated as a constant (the target)."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)


def symmetric_loss(p1, p2, z1, z2) -> torch.Tensor:
    """The paper's L + L~: predictor of view 1 against target of view 2, and the swap; batch mean."""
    return (regression_loss(p1, z2) + regression_loss(p2, z1)).mean()


def tau_at(step: int, total_steps: int, tau_base: float) -> float:
    """tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 with K the last step: tau_base at 0, 1 at K."""
    last = max(1, total_steps - 1)
    k = min(step, last)
    return 1 - (1 - tau_base) * (math.cos(math.pi * k / last) + 1) / 2


@torch.no_grad()
def ema_update(target: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, for every tensor at once."""
    torch._foreach_lerp_(target, online, 1 - tau)


class BYOL(nn.Module):
    """Online encoder -> projector -> predictor; target encoder -> projector as an EMA copy."""

    def __init__(self, backbone: str, hidden: int, out: int, image_size: int = 32):
        super().__init__()
        self.encoder = build_encoder(backbone)
        self.feature_dim = feature_dim(self.encoder, image_size)
        self.projector = mlp(self.feature_dim, hidden, out)
        self.predictor = mlp(out, hidden, out)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.projector.parameters(), *self.predictor.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        return [*self.target_encoder.parameters(), *self.target_projector.parameters()]

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(target, online) parameter lists in matching order."""
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        return self.target_parameters(), online

    def online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection z, prediction p) of the online network."""
        z = self.projector(self.encoder(x))
        return z, self.predictor(z)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_encoder(x))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, concat_views: bool = False):
        """Loss and the online projections of both views.

        Each view runs through the networks alone (BatchNorm statistics per view, as the
        official code); concat_views=True runs them as one batch instead.
        """
        if concat_views:
            z, p = self.online(torch.cat([v1, v2]))
            z1, z2 = z.chunk(2)
            p1, p2 = p.chunk(2)
            t1, t2 = self.target(torch.cat([v1, v2])).chunk(2)
        else:
            z1, p1 = self.online(v1)
            z2, p2 = self.online(v2)
            t1, t2 = self.target(v1), self.target(v2)
        return symmetric_loss(p1, p2, t1, t2), z1, z2
