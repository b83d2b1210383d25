"""The training loop: epoch results, EMA and schedules inside the Trainer, divergence, evaluation."""
from __future__ import annotations

import math

import pytest
import torch

import trainer.byol
from trainer import ConfigError, Diverged, EpochResult, TrainConfig, Trainer
from trainer import data as D
from trainer.byol import tau_at
from trainer.optim import lr_at

TINY = dict(dataset="digits", backbone="small_cnn", epochs=2, batch_size=64, train_limit=256,
            projector_hidden=64, projector_out=32, knn_bank_size=200, knn_queries=100, linear_probe=False,
            device="cpu")
METRICS = {"epoch", "loss", "knn_acc", "z_std", "z_spread", "eff_rank", "lr", "tau", "images_per_s", "epoch_s"}


@pytest.fixture(scope="module")
def digits():
    return D.load("digits")


def tiny(digits, **overrides) -> Trainer:
    return Trainer(TrainConfig(**{**TINY, **overrides}), data=digits)


def test_fit_yields_one_result_per_epoch_with_the_house_metrics(digits):
    t = tiny(digits, epochs=2, linear_probe=True, train_limit=128, batch_size=32)
    assert t.steps_per_epoch == 4 and t.total_steps == 8
    assert t.peak_lr == pytest.approx(0.2 * 32 / 256)
    results = list(t.fit())
    assert [r.epoch for r in results] == [1, 2]
    for r in results:
        assert isinstance(r, EpochResult)
        assert METRICS <= set(r.metrics())
        assert all(isinstance(v, float) or isinstance(v, int) for v in r.metrics().values())
        assert math.isfinite(r.loss) and 0 <= r.loss <= 8
        assert 0.0 <= r.knn_acc <= 1.0
        assert 0.0 < r.z_std <= 1.0
        assert 0.0 < r.z_spread <= 1.5 and 1.0 <= r.eff_rank <= 32  # projector_out 32
        assert r.images_per_s > 0 and r.epoch_s > 0
    # the lr and tau reported are those of the epoch's last step
    assert results[0].lr == pytest.approx(lr_at(3, 8, 4, t.peak_lr))
    assert results[0].lr == pytest.approx(t.peak_lr)  # end of the one-epoch warmup
    assert results[1].lr == pytest.approx(lr_at(7, 8, 4, t.peak_lr))
    assert results[0].tau == pytest.approx(tau_at(3, 8, 0.996))
    assert results[1].tau == 1.0
    # the probe runs once, after the last epoch
    assert results[0].linear_probe_acc is None and "linear_probe_acc" not in results[0].metrics()
    assert 0.0 <= results[1].linear_probe_acc <= 1.0
    assert t.epoch == 2 and t.step == 8
    assert list(t.fit()) == []


def test_trainer_moves_the_target_by_the_ema_formula(digits):
    # one step per epoch: target_after == tau_0 * target_before + (1 - tau_0) * online_after
    t = tiny(digits, train_limit=64, epochs=3, tau_base=0.9)
    assert t.steps_per_epoch == 1
    targets, online = t.model.ema_pairs()
    before = [p.detach().clone() for p in targets]
    online_before = [p.detach().clone() for p in online]
    assert all(torch.equal(a, b) for a, b in zip(before, online_before))
    t.train_epoch()
    tau0 = tau_at(0, 3, 0.9)
    assert tau0 == 0.9
    moved = 0
    for tgt, b, o, o0 in zip(targets, before, online, online_before):
        torch.testing.assert_close(tgt.detach(), tau0 * b + (1 - tau0) * o.detach(), rtol=0, atol=1e-6)
        assert tgt.grad is None and not tgt.requires_grad
        moved += int(not torch.equal(o.detach(), o0))
    assert moved > 0
    # the target is not in the optimiser
    optimised = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in targets}
    assert optimised == {id(p) for p in t.model.online_parameters()}


def test_tau_one_keeps_the_target_fixed(digits):
    t = tiny(digits, train_limit=128, epochs=1, tau_base=1.0)
    before = {k: v.clone() for k, v in t.model.state_dict().items() if k.startswith("target_")}
    t.train_epoch()
    after = t.model.state_dict()
    for k, v in before.items():
        if "running" in k or "num_batches" in k:
            continue  # the target runs in training mode: its BatchNorm statistics move
        assert torch.equal(v, after[k]), k


def test_trainer_optimizer_excludes_norms_and_biases(digits):
    t = tiny(digits)
    regular, excluded = t.optimizer.param_groups
    assert excluded["exclude"] is True and excluded["weight_decay"] == 0.0
    assert regular["exclude"] is False and regular["weight_decay"] == t.config.weight_decay
    assert all(p.dim() == 1 for p in excluded["params"])
    assert all(p.dim() > 1 for p in regular["params"])


@pytest.mark.parametrize("optimizer", ["lars", "sgd", "adamw"])
def test_absurd_learning_rate_diverges(digits, optimizer):
    t = tiny(digits, epochs=1, base_lr=1e30, optimizer=optimizer, warmup_epochs=0.0, train_limit=128)
    with pytest.raises(Diverged, match="nan|inf"):
        list(t.fit())


def test_nan_loss_raises_diverged(digits, monkeypatch):
    real = trainer.byol.symmetric_loss
    monkeypatch.setattr(trainer.byol, "symmetric_loss", lambda *args: real(*args) * float("nan"))
    t = tiny(digits, epochs=2, train_limit=64)
    with pytest.raises(Diverged, match="epoch 1"):
        next(t.fit())
    assert issubclass(Diverged, RuntimeError)


def test_evaluation_does_not_change_the_model(digits):
    t = tiny(digits)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    gen_before = t.gen.get_state()
    a, b = t.evaluate(), t.evaluate()
    assert a == b and 0.0 <= a[0] <= 1.0
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(t.gen.get_state(), gen_before)
    assert t.model.training


def test_knn_bank_and_queries_are_fixed_subsets(digits):
    t = tiny(digits, knn_bank_size=150, knn_queries=50)
    bank, bank_y, queries, query_y = t.features()
    assert bank.shape[0] == 150 and queries.shape[0] == 50
    torch.testing.assert_close(bank.norm(dim=1), torch.ones(150))
    other = tiny(digits, knn_bank_size=150, knn_queries=50, seed=3)
    assert torch.equal(t.bank_idx, other.bank_idx) and torch.equal(t.query_idx, other.query_idx)
    everything = tiny(digits, knn_bank_size=0, knn_queries=0)
    assert len(everything.bank_idx) == 256 and len(everything.query_idx) == len(digits.eval_images)


def test_evaluate_scores_the_features_knn_sees_and_projects_a_fixed_part_of_the_bank(digits, monkeypatch):
    from trainer import loop
    from trainer.evaluation import effective_rank, embed, knn_accuracy, z_spread

    t = tiny(digits, knn_bank_size=150, knn_queries=50)
    bank, bank_y, queries, query_y = t.features()
    knn, spread, rank = t.evaluate()
    assert knn == pytest.approx(float(knn_accuracy(bank, bank_y, queries, query_y, t.config.knn_k,
                                                   t.config.knn_temperature, 10)))
    z = embed(t.model.projector, embed(t.model.encoder, t.data.train_images[t.bank_idx], t.eval_view))
    assert (spread, rank) == pytest.approx((float(z_spread(z)), float(effective_rank(z))), rel=1e-5)
    # at most HEALTH_ROWS of the bank, drawn at random from all of it, the same for every seed
    monkeypatch.setattr(loop, "HEALTH_ROWS", 40)
    small, other = tiny(digits, knn_bank_size=150), tiny(digits, knn_bank_size=150, seed=2)
    assert len(small.health_rows) == 40 and torch.equal(small.health_rows, other.health_rows)
    assert int(small.health_rows.max()) > 40
    assert len(t.health_rows) == 150


def test_concat_views_option_trains(digits):
    (result,) = list(tiny(digits, epochs=1, train_limit=64, concat_views=True).fit())
    assert math.isfinite(result.loss)


@pytest.mark.parametrize("policy", ["simclr", "simclr_small", "byol_small", "crop_only", "no_color", "no_blur"])
def test_every_policy_trains(digits, policy):
    t = tiny(digits, epochs=1, train_limit=64, batch_size=32, policy=policy, aug_strength=1.8)
    (result,) = list(t.fit())
    assert math.isfinite(result.loss)


def test_fewer_than_two_training_images_are_refused(digits):
    with pytest.raises(ConfigError, match="training needs at least 2 images; digits gives 1 with train_limit 1"):
        tiny(digits, train_limit=1)


def test_an_imagefolder_without_a_path_is_refused():
    with pytest.raises(ConfigError, match="names no folder"):
        TrainConfig(dataset="imagefolder:")


def test_cuda_device_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="device 'cuda' was asked for, but CUDA is not available"):
        Trainer(TrainConfig(**{**TINY, "device": "cuda"}))


def test_a_malformed_device_is_refused_by_name():
    with pytest.raises(ConfigError, match="device 'cuda:x' is unknown; allowed: auto, cpu, cuda, cuda:N"):
        TrainConfig(**{**TINY, "device": "cuda:x"})


def test_the_console_line_shows_collapse_health(digits):
    from trainer.standalone import format_result

    (result,) = list(tiny(digits, epochs=1, train_limit=64).fit())
    line = format_result(result.metrics())
    assert f"z_spread {result.z_spread:.3f}" in line and f"eff_rank {result.eff_rank:.1f}" in line


def test_predictor_lr_scale_moves_the_predictor_that_many_times_as_far(digits):
    """On the same first batch (same seed, same gradients), plain SGD without momentum or weight decay
    moves each predictor weight by lr x scale x grad: 10 times as far at predictor_lr_scale 10, and
    every other online weight exactly as far as at scale 1."""
    settings = dict(train_limit=64, batch_size=32, optimizer="sgd", momentum=0.0, weight_decay=0.0, warmup_epochs=0)
    moves = {}
    for scale in (1.0, 10.0):
        t = tiny(digits, predictor_lr_scale=scale, **settings)
        before = {k: v.detach().clone() for k, v in t.model.named_parameters() if not k.startswith("target")}
        t.train_step(t.data.train_images[:32], warmup_steps=0)
        moves[scale] = {k: (dict(t.model.named_parameters())[k].detach() - v) for k, v in before.items()}
        lrs = sorted({g["lr"] for g in t.optimizer.param_groups})
        assert lrs == ([t.peak_lr] if scale == 1 else pytest.approx([t.peak_lr, 10 * t.peak_lr]))
        assert len(t.optimizer.param_groups) == (2 if scale == 1 else 4)  # scale 1: the groups of older checkpoints
    predictor = [k for k in moves[1.0] if k.startswith("predictor")]
    assert predictor and all(moves[1.0][k].abs().max() > 0 for k in predictor)
    for k, move in moves[1.0].items():
        expected = 10 * move if k in predictor else move
        torch.testing.assert_close(moves[10.0][k], expected, rtol=1e-3, atol=2e-6)  # float32 differences


def test_predictor_lr_scale_refuses_values_out_of_range():
    for bad in (0.0, -1.0, 1000.0):
        with pytest.raises(ConfigError, match="predictor_lr_scale"):
            TrainConfig(predictor_lr_scale=bad).validate()
