"""Optimisers: parameter split (no decay / no LARS adaptation for norms and biases), LARS maths."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.byol import BYOL
from trainer.optim import LARS, build_optimizer, split_parameters


def _model():
    torch.manual_seed(0)
    return BYOL("small_cnn", hidden=16, out=8, image_size=16)


def _expected_split(modules):
    """Hand classification by parameter name and owning module type."""
    regular, excluded = set(), set()
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)) or name == "bias":
                    excluded.add(id(p))
                else:
                    assert isinstance(sub, (nn.Conv2d, nn.Linear)) and name == "weight"
                    regular.add(id(p))
    return regular, excluded


def test_split_puts_norm_and_bias_parameters_aside():
    model = _model()
    modules = [model.encoder, model.projector, model.predictor]
    regular, excluded = split_parameters(modules)
    exp_regular, exp_excluded = _expected_split(modules)
    assert {id(p) for p in regular} == exp_regular
    assert {id(p) for p in excluded} == exp_excluded
    assert len(regular) + len(excluded) == len(model.online_parameters())
    assert all(p.dim() > 1 for p in regular)  # conv and linear weights only
    assert all(p.dim() == 1 for p in excluded)
    # the target network is not optimised at all
    target_ids = {id(p) for p in model.target_parameters()}
    assert not target_ids & {id(p) for p in regular + excluded}


def test_split_covers_layernorm_groupnorm_and_skips_frozen():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4))
    net[2].weight.requires_grad_(False)
    regular, excluded = split_parameters([net])
    assert [id(p) for p in regular] == [id(net[0].weight)]
    assert {id(p) for p in excluded} == {
        id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[2].bias), id(net[3].weight), id(net[3].bias)
    }


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_build_optimizer_groups(name):
    model = _model()
    modules = [model.encoder, model.projector, model.predictor]
    opt = build_optimizer(name, modules, lr=0.3, weight_decay=1e-4, momentum=0.9)
    assert len(opt.param_groups) == 2
    reg, exc = opt.param_groups
    exp_regular, exp_excluded = _expected_split(modules)
    assert {id(p) for p in reg["params"]} == exp_regular
    assert {id(p) for p in exc["params"]} == exp_excluded
    assert reg["weight_decay"] == 1e-4
    assert exc["weight_decay"] == 0.0
    assert reg["lr"] == exc["lr"] == 0.3
    if name == "lars":
        assert isinstance(opt, LARS)
        assert reg["exclude"] is False and exc["exclude"] is True
        assert reg["momentum"] == exc["momentum"] == 0.9
        assert reg["trust"] == 1e-3


def test_build_optimizer_refuses_unknown_name():
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer("rmsprop", [nn.Linear(2, 2)], lr=0.1, weight_decay=0.0, momentum=0.9)


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def test_lars_step_matches_hand_computation():
    lr, wd, mom, trust = 0.5, 0.1, 0.9, 1e-3
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = LARS([dict(params=[w]), dict(params=[b], exclude=True, weight_decay=0.0)],
               lr=lr, weight_decay=wd, momentum=mom, trust=trust)

    hw, hb = [3.0, 4.0], [1.0, -2.0]
    buf_w, buf_b = [0.0, 0.0], [0.0, 0.0]
    for grad_w, grad_b in [([0.6, -0.2], [0.5, 0.25]), ([-1.0, 2.0], [0.1, -0.3])]:
        w.grad = torch.tensor(grad_w, dtype=torch.float64)
        b.grad = torch.tensor(grad_b, dtype=torch.float64)
        opt.step()
        # regular: decay, then trust ratio eta * |w| / |g + wd w|, then momentum, then lr
        g = [gi + wd * wi for gi, wi in zip(grad_w, hw)]
        ratio = trust * _norm(hw) / _norm(g)
        buf_w = [mom * m + ratio * gi for m, gi in zip(buf_w, g)]
        hw = [wi - lr * m for wi, m in zip(hw, buf_w)]
        # excluded: plain momentum SGD, no decay, no trust ratio
        buf_b = [mom * m + gi for m, gi in zip(buf_b, grad_b)]
        hb = [bi - lr * m for bi, m in zip(hb, buf_b)]
        assert w.detach().tolist() == pytest.approx(hw, abs=1e-12)
        assert b.detach().tolist() == pytest.approx(hb, abs=1e-12)


def test_lars_first_step_size_is_trust_times_weight_norm():
    # one step from zero momentum moves a regular tensor by lr * eta * |w|, whatever the gradient scale
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([w], lr=2.0, weight_decay=0.0, momentum=0.9, trust=1e-3)
    w.grad = torch.tensor([1e4, -3e4], dtype=torch.float64)
    before = w.detach().clone()
    opt.step()
    assert float((w.detach() - before).norm()) == pytest.approx(2.0 * 1e-3 * 5.0, rel=1e-12)


def test_lars_excluded_group_ignores_weight_decay_even_if_set():
    b = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = LARS([dict(params=[b], exclude=True)], lr=0.1, weight_decay=0.5, momentum=0.0)
    b.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()
    assert b.detach().tolist() == pytest.approx([0.9, 1.9], abs=1e-12)


def test_lars_zero_weights_fall_back_to_plain_gradient():
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = LARS([w], lr=0.1, weight_decay=0.0, momentum=0.0)
    w.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt.step()
    assert w.detach().tolist() == pytest.approx([-0.1, 0.2, -0.05], abs=1e-12)


def test_lars_skips_parameters_without_gradient():
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = LARS([w], lr=0.1)
    opt.step()
    assert w.detach().tolist() == [1.0, 1.0]
    assert not opt.state
