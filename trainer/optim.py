"""Optimisers (LARS, SGD, AdamW) with norm and bias parameters excluded, and the lr schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def split_parameters(modules: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(regular, excluded): biases and normalisation parameters get no weight decay or LARS adaptation."""
    regular, excluded = [], []
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                is_norm = isinstance(sub, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                (excluded if is_norm or name == "bias" else regular).append(p)
    return regular, excluded


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al. 2017), as in BYOL.

    Groups with `exclude=True` get neither weight decay nor the trust ratio.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, trust: float = 1e-3):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust=trust, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if not group["exclude"]:
                if group["weight_decay"]:
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                p_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = torch.where(
                    (p_norm > 0) & (g_norm > 0), group["trust"] * p_norm / g_norm, torch.ones_like(p_norm)
                )
                grads = torch._foreach_mul(grads, list(trust.unbind()))
            bufs = []
            for p, g in zip(params, grads):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])


def build_optimizer(name: str, modules: list[nn.Module], lr: float, weight_decay: float, momentum: float,
                    last_lr_scale: float = 1.0):
    """Two parameter groups (regular; biases and norms excluded), each with an `lr_scale` that the
    schedule's lr is multiplied by; with last_lr_scale != 1, the last module (the predictor) gets two
    groups of its own at that scale (with 1, the groups are those of checkpoints written before it)."""
    scaled = last_lr_scale != 1.0
    parts = [(modules[:-1], 1.0), (modules[-1:], last_lr_scale)] if scaled else [(modules, 1.0)]
    groups = []
    for part, scale in parts:
        regular, excluded = split_parameters(part)
        if name == "lars":
            groups += [dict(params=regular, lr_scale=scale),
                       dict(params=excluded, exclude=True, weight_decay=0.0, lr_scale=scale)]
        else:
            groups += [dict(params=regular, weight_decay=weight_decay, lr_scale=scale),
                       dict(params=excluded, weight_decay=0.0, lr_scale=scale)]
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer {name!r} is unknown; allowed: lars, sgd, adamw")


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup from 0 to peak, then cosine decay to 0 at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
