"""The BYOL maths: loss, EMA target, tau schedule and learning-rate schedule."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.byol import BYOL, ema_update, regression_loss, symmetric_loss, tau_at
from trainer.optim import lr_at

# -- loss ----------------------------------------------------------------------------------------

def test_regression_loss_is_two_minus_two_cosine():
    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(16, 32, generator=gen), torch.randn(16, 32, generator=gen)
    expected = 2 - 2 * (p * z).sum(1) / (p.norm(dim=1) * z.norm(dim=1))
    torch.testing.assert_close(regression_loss(p, z), expected, rtol=0, atol=1e-6)
    # equivalently the squared distance of the L2-normalised vectors (the paper's form)
    torch.testing.assert_close(
        regression_loss(p, z), (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1), rtol=0, atol=1e-5
    )


def test_regression_loss_extremes_and_scale_invariance():
    v = torch.tensor([[1.0, 2.0, -3.0]])
    assert regression_loss(v, v).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_loss(v, -v).item() == pytest.approx(4.0, abs=1e-6)
    assert regression_loss(v, torch.tensor([[2.0, -1.0, 0.0]])).item() == pytest.approx(2.0, abs=1e-6)
    assert regression_loss(5 * v, 0.1 * v).item() == pytest.approx(0.0, abs=1e-6)


def test_symmetric_loss_is_the_mean_of_both_directions_and_symmetric():
    gen = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(8, 16, generator=gen) for _ in range(4))
    loss = symmetric_loss(p1, p2, z1, z2)
    assert loss.shape == ()
    expected = (regression_loss(p1, z2) + regression_loss(p2, z1)).mean()
    torch.testing.assert_close(loss, expected)
    # swapping the two views gives the same loss
    torch.testing.assert_close(symmetric_loss(p2, p1, z2, z1), loss, rtol=0, atol=1e-6)
    # view 1's prediction is compared with view 2's target, not its own
    assert symmetric_loss(p1, p2, p1, p2).item() != pytest.approx(0.0, abs=1e-3)
    assert symmetric_loss(p1, p2, p2, p1).item() == pytest.approx(0.0, abs=1e-5)


def test_loss_sends_no_gradient_into_the_target_projection():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    regression_loss(p, z).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


# -- networks and EMA ----------------------------------------------------------------------------

@pytest.fixture
def small_byol():
    torch.manual_seed(0)
    return BYOL("small_cnn", hidden=16, out=8, image_size=16)


def test_target_starts_as_a_copy_of_online_and_is_frozen(small_byol):
    model = small_byol
    targets, online = model.ema_pairs()
    assert len(targets) == len(online) > 0
    for t, o in zip(targets, online):
        assert t.shape == o.shape
        assert torch.equal(t, o)
        assert t.data_ptr() != o.data_ptr()
        assert not t.requires_grad
    # the predictor exists only online
    assert len(model.online_parameters()) == len(online) + len(list(model.predictor.parameters()))


def test_target_receives_no_gradient(small_byol):
    model = small_byol.train()
    gen = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(6, 3, 16, 16, generator=gen), torch.randn(6, 3, 16, 16, generator=gen)
    for concat in (False, True):
        model.zero_grad(set_to_none=True)
        loss, z1, z2 = model(v1, v2, concat_views=concat)
        assert loss.requires_grad and torch.isfinite(loss)
        assert z1.shape == z2.shape == (6, 8)
        loss.backward()
        for p in model.target_parameters():
            assert p.grad is None
            assert not p.requires_grad
        online_grads = [p.grad for p in model.online_parameters()]
        assert all(g is not None for g in online_grads)
        assert sum(float(g.abs().sum()) for g in online_grads) > 0
        assert all(p.grad is not None for p in model.predictor.parameters())


def test_target_output_is_not_part_of_the_graph(small_byol):
    z = small_byol.target(torch.randn(4, 3, 16, 16))
    assert not z.requires_grad and z.grad_fn is None


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.9, 0.996, 1.0])
def test_ema_update_formula(tau):
    gen = torch.Generator().manual_seed(2)
    # float64 so the comparison is exact up to the last bits of the formula itself
    target = [torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(7, generator=gen, dtype=torch.float64)]
    online = [torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(7, generator=gen, dtype=torch.float64)]
    before = [t.clone() for t in target]
    ema_update(target, online, tau)
    for t, b, o in zip(target, before, online):
        torch.testing.assert_close(t, tau * b + (1 - tau) * o, rtol=0, atol=1e-15)
    if tau == 1.0:
        assert all(torch.equal(t, b) for t, b in zip(target, before))
    if tau == 0.0:
        assert all(torch.equal(t, o) for t, o in zip(target, online))


def test_ema_update_moves_the_model_target_towards_online(small_byol):
    model = small_byol
    targets, online = model.ema_pairs()
    with torch.no_grad():
        for o in online:
            o.add_(torch.randn_like(o))
    before = [t.detach().clone() for t in targets]
    ema_update(targets, online, 0.9)
    for t, b, o in zip(targets, before, online):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o.detach(), rtol=0, atol=1e-6)
        assert not t.requires_grad


# -- schedules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tau_base", [0.0, 0.9, 0.99, 0.996, 1.0])
@pytest.mark.parametrize("total", [2, 10, 1000])
def test_tau_schedule_endpoints_and_monotone(tau_base, total):
    assert tau_at(0, total, tau_base) == tau_base
    assert tau_at(total - 1, total, tau_base) == 1.0
    taus = [tau_at(k, total, tau_base) for k in range(total)]
    assert all(b >= a for a, b in zip(taus, taus[1:]))
    assert all(tau_base <= t <= 1.0 for t in taus)
    assert tau_at(total + 5, total, tau_base) == 1.0  # past the end stays at 1


def test_tau_schedule_is_the_papers_cosine():
    total, base = 101, 0.99
    for k in (0, 10, 50, 77, 100):
        expected = 1 - (1 - base) * (math.cos(math.pi * k / 100) + 1) / 2
        assert tau_at(k, total, base) == pytest.approx(expected, abs=1e-15)
    assert tau_at(50, total, base) == pytest.approx((1 + base) / 2)


def test_lr_warmup_is_linear_then_cosine_to_zero():
    peak, total, warmup = 0.8, 100, 10
    lrs = [lr_at(s, total, warmup, peak) for s in range(total)]
    # warmup: equal increments, reaching the peak at the last warmup step
    steps = [b - a for a, b in zip(lrs[:warmup], lrs[1:warmup])]
    assert all(d == pytest.approx(peak / warmup) for d in steps)
    assert 0 < lrs[0] <= peak / warmup + 1e-12
    assert lrs[warmup - 1] == pytest.approx(peak)
    # after the warmup: starts at the peak, decreases monotonically, cosine-shaped, to ~0
    assert lrs[warmup] == pytest.approx(peak)
    after = lrs[warmup:]
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert lr_at(warmup + (total - warmup) // 2, total, warmup, peak) == pytest.approx(peak / 2)
    quarter = warmup + (total - warmup) // 4  # not linear: cos at a quarter is above the halfway line
    assert lr_at(quarter, total, warmup, peak) > 0.75 * peak
    assert lrs[-1] < 1e-3 * peak
    assert lr_at(total, total, warmup, peak) == pytest.approx(0.0, abs=1e-12)
    assert max(lrs) <= peak + 1e-12 and min(lrs) >= 0


def test_lr_without_warmup_starts_at_peak():
    assert lr_at(0, 50, 0, 0.3) == pytest.approx(0.3)
    assert lr_at(49, 50, 0, 0.3) < 0.3 * 1e-2


# -- evaluation maths ----------------------------------------------------------------------------

from trainer.evaluation import effective_rank, knn_accuracy, linear_probe, projection_std, z_spread  # noqa: E402


def _clusters(n_bank=60, n_query=30, classes=3, dim=16, noise=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=gen), dim=1)
    bank_y, query_y = torch.arange(n_bank) % classes, torch.arange(n_query) % classes
    bank = F.normalize(centres[bank_y] + noise * torch.randn(n_bank, dim, generator=gen), dim=1)
    queries = F.normalize(centres[query_y] + noise * torch.randn(n_query, dim, generator=gen), dim=1)
    return bank, bank_y, queries, query_y


def test_knn_weighted_vote_by_hand():
    angle = torch.tensor([0.0, 0.3, 0.5, 3.0])
    bank = torch.stack([angle.cos(), angle.sin()], dim=1)
    bank_y = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[1.0, 0.0]])
    # k=3: one vote for class 0 at cos 0 = 1 against two for class 1 at cos 0.3 and cos 0.5
    w0 = math.exp(1.0 / 0.5)
    w1 = math.exp(math.cos(0.3) / 0.5) + math.exp(math.cos(0.5) / 0.5)
    assert w1 > w0
    assert float(knn_accuracy(bank, bank_y, query, torch.tensor([1]), k=3, temperature=0.5)) == 1.0
    # a sharper temperature lets the single nearest neighbour win
    assert math.exp(1.0 / 0.05) > math.exp(math.cos(0.3) / 0.05) + math.exp(math.cos(0.5) / 0.05)
    assert float(knn_accuracy(bank, bank_y, query, torch.tensor([0]), k=3, temperature=0.05)) == 1.0
    # k is capped by the bank size
    for label in (0, 1):
        y = torch.tensor([label])
        assert knn_accuracy(bank, bank_y, query, y, k=500, temperature=0.5) == knn_accuracy(
            bank, bank_y, query, y, k=4, temperature=0.5)


def test_knn_accuracy_on_separable_features():
    bank, bank_y, queries, query_y = _clusters()
    acc = knn_accuracy(bank, bank_y, queries, query_y, k=20, temperature=0.1)
    assert acc.shape == () and float(acc) == 1.0
    shuffled = query_y[torch.randperm(len(query_y), generator=torch.Generator().manual_seed(1))]
    assert float(knn_accuracy(bank, bank_y, queries, shuffled, k=20, temperature=0.1)) < 0.7


def _reference_knn(bank, bank_y, queries, query_y, k, temperature):
    """Weighted kNN in float64 with the votes shifted by the best similarity (no overflow)."""
    sims, idx = (queries.double() @ bank.double().T).topk(k, dim=1)
    weights = ((sims - sims[:, :1]) / temperature).exp()
    votes = torch.zeros(len(queries), int(bank_y.max()) + 1, dtype=torch.float64)
    votes.scatter_add_(1, bank_y[idx], weights)
    return float((votes.argmax(1) == query_y).double().mean())


@pytest.mark.parametrize("temperature", [0.5, 0.1, 0.05, 0.01, 0.005, 0.001])
def test_knn_small_temperature_does_not_overflow(temperature):
    """Any temperature > 0 is a valid config value; exp(sim / T) must not overflow to inf
    (float32 overflows past exp(88), i.e. T < ~0.0114), which turns the votes into ties."""
    bank, bank_y, queries, query_y = _clusters(n_bank=300, n_query=300, classes=5, noise=0.4)
    expected = _reference_knn(bank, bank_y, queries, query_y, 20, temperature)
    assert 0.4 < expected < 1.0  # neighbours of mixed classes: the weights decide
    got = float(knn_accuracy(bank, bank_y, queries, query_y, k=20, temperature=temperature))
    assert got == pytest.approx(expected, abs=1e-6)


def test_projection_std_spread_and_collapse():
    gen = torch.Generator().manual_seed(0)
    spread = projection_std(torch.randn(4096, 64, generator=gen))
    assert float(spread) == pytest.approx(1 / math.sqrt(64), rel=0.05)
    collapsed = projection_std(torch.ones(128, 64) + 1e-9 * torch.randn(128, 64, generator=gen))
    assert float(collapsed) < 1e-6


def test_linear_probe_separates_separable_features():
    bank, bank_y, queries, query_y = _clusters(n_bank=90, n_query=30)
    assert linear_probe(bank, bank_y, queries, query_y, epochs=100) == 1.0
    assert linear_probe(bank, bank_y, queries, query_y, epochs=100, seed=3) == 1.0


def test_z_spread_and_effective_rank_tell_collapse_a_line_and_a_spread_cloud_apart():
    gen = torch.Generator().manual_seed(0)
    d = 64
    collapsed = torch.randn(1, d, generator=gen).expand(2048, d)
    axis = torch.zeros(d)
    axis[3] = 1.0
    line = torch.randn(2048, 1, generator=gen) * axis  # rank 1, spread along one axis both ways
    cloud = torch.randn(2048, d, generator=gen)

    assert float(z_spread(collapsed)) == pytest.approx(0.0, abs=1e-3)
    assert float(z_spread(line)) == pytest.approx(1 / math.sqrt(d), rel=0.05)  # one of d dimensions used
    assert float(z_spread(cloud)) == pytest.approx(1.0, abs=0.02)
    assert float(effective_rank(collapsed)) == pytest.approx(1.0, abs=0.01)
    assert float(effective_rank(line)) == pytest.approx(1.0, abs=0.01)
    assert 0.95 * d < float(effective_rank(cloud)) <= d
    # a cloud in k of the d dimensions has rank about k, whatever its scale
    assert float(effective_rank(100 * cloud[:, :8] @ torch.randn(8, d, generator=gen))) == pytest.approx(8, rel=0.15)


# -- backbones -----------------------------------------------------------------------------------

def test_small_cnn_half_is_small_cnn_at_half_width():
    from trainer.config import BACKBONES
    from trainer.models import build_encoder, feature_dim

    assert "small_cnn_half" in BACKBONES
    full, half = build_encoder("small_cnn"), build_encoder("small_cnn_half")
    convs = [m.out_channels for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 32, 64, 128]
    assert convs == [m.out_channels // 2 for m in full.modules() if isinstance(m, torch.nn.Conv2d)]
    assert feature_dim(half, 16) == 128 and feature_dim(full, 16) == 256
    model = BYOL("small_cnn_half", hidden=16, out=8, image_size=16)
    loss, z1, _ = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    loss.backward()
    assert z1.shape == (4, 8) and all(p.grad is not None for p in model.encoder.parameters())
