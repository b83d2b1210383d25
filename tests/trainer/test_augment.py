"""Batched augmentation: per-image randomness, identity at strength 0, the paper's recipe, clamps."""
from __future__ import annotations

import itertools
import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from trainer import augment as A
from trainer.augment import ViewParams

ZERO = torch.zeros(1, 3, 1, 1)
ONE = torch.ones(1, 3, 1, 1)


def colourful(h: int, w: int | None = None, square: bool = True) -> torch.Tensor:
    """A uint8 (3, H, W) image with structure in every channel: gradients, waves, a square."""
    w = w or h
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    r = x
    g = 0.5 + 0.5 * torch.sin(7 * y + 3 * x)
    b = 0.5 + 0.5 * torch.cos(5 * x * y + 1)
    img = torch.stack([r, g, b])
    if square:
        img[:, h // 4 : h // 2, w // 4 : w // 2] = torch.tensor([0.9, 0.1, 0.3]).view(3, 1, 1)
    return (img * 255).round().to(torch.uint8)


def batch_of_identical(n: int = 8, size: int = 32) -> torch.Tensor:
    return colourful(size).unsqueeze(0).repeat(n, 1, 1, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def all_pairs_differ(x: torch.Tensor, atol: float = 1e-3) -> bool:
    return all(not torch.allclose(x[i], x[j], atol=atol) for i, j in itertools.combinations(range(len(x)), 2))


NO_COLOUR = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


# -- per-image randomness ------------------------------------------------------------------------

def test_identical_images_get_different_crops():
    x = batch_of_identical().float() / 255
    out = A.crop_and_flip(x, ViewParams(**NO_COLOUR), 32, gen())
    assert out.shape == (8, 3, 32, 32)
    assert all_pairs_differ(out)


def test_identical_images_get_different_colours():
    x = batch_of_identical().float() / 255
    p = ViewParams(jitter_p=1.0, grayscale_p=0.0, blur_p=0.0)
    out = A.color_jitter(x, p, gen())
    assert all_pairs_differ(out)
    # per-image mean colour differs, not only the geometry
    means = out.mean(dim=(2, 3))
    assert all(not torch.allclose(means[i], means[j], atol=1e-3) for i, j in itertools.combinations(range(8), 2))
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("policy", sorted(A.POLICIES))
def test_full_augment_differs_per_image(policy):
    t, t_prime = A.policy_views(policy, 1.0)
    images = batch_of_identical()
    for view in (t, t_prime):
        out = A.augment(images, view, 32, gen(), ZERO, ONE)
        assert all_pairs_differ(out)


def test_same_seed_same_views_other_seed_other_views():
    images = batch_of_identical(4)
    t, _ = A.policy_views("byol", 1.0)
    a = A.augment(images, t, 32, gen(5), ZERO, ONE)
    b = A.augment(images, t, 32, gen(5), ZERO, ONE)
    c = A.augment(images, t, 32, gen(6), ZERO, ONE)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_per_sample_probabilities_are_per_image():
    x = batch_of_identical(200, 16).float() / 255
    gray = A.grayscale(x, ViewParams(grayscale_p=0.5), gen(1))
    is_gray = (gray[:, 0] == gray[:, 1]).flatten(1).all(1) & (gray[:, 1] == gray[:, 2]).flatten(1).all(1)
    assert 0.3 < is_gray.float().mean() < 0.7
    flipped = A.crop_and_flip(x, ViewParams(crop_min_area=1.0, crop_ratio=(1.0, 1.0), flip_p=0.5), 16, gen(2))
    is_flipped = torch.tensor([torch.allclose(f, x[0].flip(-1), atol=1e-5) for f in flipped])
    is_same = torch.tensor([torch.allclose(f, x[0], atol=1e-5) for f in flipped])
    assert bool((is_flipped | is_same).all())
    assert 0.3 < is_flipped.float().mean() < 0.7


# -- identity at strength 0 ----------------------------------------------------------------------

def test_full_crop_is_the_identity_and_flip_is_exact():
    x = colourful(32).unsqueeze(0).float() / 255
    keep = ViewParams(crop_min_area=1.0, crop_ratio=(1.0, 1.0), flip_p=0.0, **NO_COLOUR)
    torch.testing.assert_close(A.crop_and_flip(x, keep, 32, gen()), x, rtol=0, atol=1e-5)
    flip = ViewParams(crop_min_area=1.0, crop_ratio=(1.0, 1.0), flip_p=1.0, **NO_COLOUR)
    torch.testing.assert_close(A.crop_and_flip(x, flip, 32, gen()), x.flip(-1), rtol=0, atol=1e-5)


def test_non_square_full_crop_keeps_the_image():
    x = colourful(24, 40).unsqueeze(0).float() / 255
    keep = ViewParams(crop_min_area=1.0, crop_ratio=(40 / 24, 40 / 24), flip_p=0.0, **NO_COLOUR)
    out = A.crop_and_flip(x, keep, 32, gen())
    expected = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def _without_probabilities(view: ViewParams) -> ViewParams:
    """What strength 0 leaves of a view once its unscaled coin flips (flip, grayscale, solarize) are off."""
    return replace(view, flip_p=0.0, grayscale_p=0.0, solarize_p=0.0)


@pytest.mark.parametrize("policy", sorted(A.POLICIES))
def test_strength_zero_is_resize_only_at_input_size_apart_from_the_coin_flips(policy):
    images = batch_of_identical(4, 32)
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    for view in A.policy_views(policy, 0.0):
        out = A.augment(images, _without_probabilities(view), 32, gen(), mean, std)
        torch.testing.assert_close(out, A.resize_only(images, 32, mean, std), rtol=0, atol=1e-5)


@pytest.mark.parametrize("side", [40, 64, 96])
def test_strength_zero_is_resize_only_up_to_interpolation(side):
    images = colourful(side, square=False).unsqueeze(0).repeat(3, 1, 1, 1)  # smooth: filters agree
    for view in A.policy_views("byol", 0.0):
        out = A.augment(images, _without_probabilities(view), 32, gen(), ZERO, ONE)
        ref = A.resize_only(images, 32, ZERO, ONE)
        assert out.shape == ref.shape == (3, 3, 32, 32)
        assert (out - ref).abs().max() < 0.03
        assert (out - ref).abs().mean() < 0.005


def test_resize_only_is_normalised_identity_at_size_and_handles_one_channel():
    images = batch_of_identical(2, 32)
    mean, std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(A.resize_only(images, 32, mean, std), (images.float() / 255 - mean) / std)
    gray = images[:, :1]
    out = A.resize_only(gray, 16, ZERO, ONE)
    assert out.shape == (2, 3, 16, 16)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    out = A.augment(gray, A.policy_views("byol", 1.0)[0], 16, gen(), ZERO, ONE)
    assert out.shape == (2, 3, 16, 16)


def test_augment_does_not_modify_its_input():
    images = batch_of_identical(4)
    before = images.clone()
    A.augment(images, A.policy_views("byol", 1.0)[1], 32, gen(), ZERO, ONE)
    A.resize_only(images, 32, ZERO, ONE)
    assert torch.equal(images, before)


# -- the paper's recipe --------------------------------------------------------------------------

def _assert_byol_view(v: ViewParams, blur_p: float, solarize_p: float, exact: bool):
    eq = (lambda a, b: a == b) if exact else (lambda a, b: a == pytest.approx(b, rel=1e-12))
    assert eq(v.crop_min_area, 0.08)
    assert eq(v.crop_ratio[0], 3 / 4) and eq(v.crop_ratio[1], 4 / 3)
    assert v.flip_p == 0.5
    assert v.jitter == (0.4, 0.4, 0.2, 0.1)
    assert v.jitter_p == 0.8
    assert v.grayscale_p == 0.2
    assert v.blur_p == blur_p
    assert v.blur_sigma == (0.1, 2.0)
    assert v.solarize_p == solarize_p
    assert v.solarize_threshold == 0.5


def test_byol_recipe_is_the_papers():
    t, t_prime = A.POLICIES["byol"]
    _assert_byol_view(t, blur_p=1.0, solarize_p=0.0, exact=True)
    _assert_byol_view(t_prime, blur_p=0.1, solarize_p=0.2, exact=True)


def test_byol_policy_at_strength_one_is_the_papers_recipe_exactly():
    """design.md: 'Augmentation strength 1.0 means exactly this.'"""
    t, t_prime = A.policy_views("byol", 1.0)
    _assert_byol_view(t, blur_p=1.0, solarize_p=0.0, exact=False)
    _assert_byol_view(t_prime, blur_p=0.1, solarize_p=0.2, exact=False)
    # bit-for-bit: what a run logs as its parameters is the paper's numbers, not 0.07999999999999996
    assert (t, t_prime) == A.POLICIES["byol"]
    for policy, views in A.POLICIES.items():
        assert A.policy_views(policy, 1.0) == views, policy


def test_policy_variants_differ_from_byol_only_where_named():
    byol_t, byol_tp = A.POLICIES["byol"]
    for (v, ref) in zip(A.POLICIES["no_color"], (byol_t, byol_tp)):
        assert v.jitter_p == 0 and v.grayscale_p == 0
        assert (v.blur_p, v.solarize_p, v.crop_min_area) == (ref.blur_p, ref.solarize_p, ref.crop_min_area)
    for (v, ref) in zip(A.POLICIES["no_blur"], (byol_t, byol_tp)):
        assert v.blur_p == 0
        assert (v.jitter_p, v.grayscale_p, v.solarize_p) == (ref.jitter_p, ref.grayscale_p, ref.solarize_p)
    for v in A.POLICIES["crop_only"]:
        assert v.jitter_p == v.grayscale_p == v.blur_p == v.solarize_p == 0
        assert v.crop_min_area == 0.08 and v.flip_p == 0.5


def test_small_image_policies_follow_solo_learn_and_simclr_on_cifar():
    t, t_prime = A.POLICIES["byol_small"]  # solo-learn's asymmetric CIFAR views: the paper's without blur
    without_blur = [replace(v, blur_p=0.0, ops=tuple(op for op in v.ops if op != "blur")) for v in A.POLICIES["byol"]]
    assert [t, t_prime] == without_blur
    assert (t.solarize_p, t_prime.solarize_p) == (0.0, 0.2)
    for v in A.POLICIES["simclr_small"]:
        assert v.blur_p == 0 and v.solarize_p == 0 and v.jitter == (0.4, 0.4, 0.4, 0.1)
        assert (v.jitter_p, v.grayscale_p, v.crop_min_area) == (0.8, 0.2, 0.08)


# -- scaling rules -------------------------------------------------------------------------------

GRID = [A.MAX_STRENGTH * i / 24 for i in range(25)]
PROBABILITIES = ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p")


def magnitudes(v: ViewParams) -> dict[str, float]:
    """Each scaled magnitude, signed so that stronger is larger."""
    return {"crop area": -v.crop_min_area, "ratio low": -v.crop_ratio[0], "ratio high": v.crop_ratio[1],
            **{name: m for name, m in zip(("brightness", "contrast", "saturation", "hue"), v.jitter)},
            "sigma low": v.blur_sigma[0], "sigma high": v.blur_sigma[1], "solarize": -v.solarize_threshold}


@pytest.mark.parametrize("policy", sorted(A.POLICIES))
def test_strength_moves_every_magnitude_strictly_and_no_probability(policy):
    for which, recipe in enumerate(A.POLICIES[policy]):
        views = [A.policy_views(policy, s)[which] for s in GRID]
        for name in magnitudes(recipe):
            values = [magnitudes(v)[name] for v in views]
            if magnitudes(recipe)[name] == 0:  # not part of this recipe: stays off
                assert set(values) == {0.0}, name
            else:
                assert all(a < b for a, b in zip(values, values[1:])), (name, values)
        for name in PROBABILITIES:
            assert {getattr(v, name) for v in views} == {getattr(recipe, name)}, name


@pytest.mark.parametrize("policy", sorted(A.POLICIES))
def test_no_magnitude_reaches_its_limit_over_the_allowed_range(policy):
    for s in GRID:
        for v in A.policy_views(policy, s):
            assert A.CROP_AREA_FLOOR <= v.crop_min_area <= 1.0
            assert 0 < v.crop_ratio[0] <= 1.0 <= v.crop_ratio[1]
            b, c, sat, h = v.jitter
            assert 0 <= b < 1 and 0 <= c < 1 and 0 <= sat < 1 and 0 <= h < 0.5
            assert 0 <= v.blur_sigma[0] <= v.blur_sigma[1]
            assert 0 < v.solarize_threshold <= 1


def test_the_allowed_range_ends_where_the_first_limit_is_met():
    from trainer.config import TrainConfig

    meta = TrainConfig.fields()["aug_strength"].metadata
    assert (meta["low"], meta["high"]) == (0.0, A.MAX_STRENGTH)
    beyond = A.MAX_STRENGTH + 0.05
    assert min(v.crop_min_area for views in A.POLICIES.values() for v in views) ** beyond < A.CROP_AREA_FLOOR


def test_strength_half_and_one_and_a_half():
    t = A.policy_views("byol", 0.5)[0]
    assert t.crop_min_area == pytest.approx(0.08 ** 0.5)
    assert t.crop_ratio == pytest.approx((math.exp(-0.5 * math.log(4 / 3)), math.exp(0.5 * math.log(4 / 3))))
    assert (t.flip_p, t.jitter_p, t.grayscale_p, t.blur_p) == (0.5, 0.8, 0.2, 1.0)
    assert t.jitter == pytest.approx((1 - 0.6 ** 0.5, 1 - 0.6 ** 0.5, 1 - 0.8 ** 0.5, 0.5 - 0.5 * 0.8 ** 0.5))
    assert t.blur_sigma == pytest.approx((0.05, 1.0))
    t_prime = A.policy_views("byol", 1.5)[1]
    assert t_prime.solarize_threshold == pytest.approx(0.5 ** 1.5) and t_prime.solarize_p == 0.2
    assert t_prime.crop_min_area == pytest.approx(0.08 ** 1.5)


def test_strength_zero_turns_every_magnitude_off():
    for policy in A.POLICIES:
        for v in A.policy_views(policy, 0.0):
            assert v.crop_min_area == 1.0 and v.crop_ratio == (1.0, 1.0)
            assert v.jitter == (0.0, 0.0, 0.0, 0.0) and v.blur_sigma == (0.0, 0.0)
            assert v.solarize_threshold == 1.0


def test_unknown_policy_is_refused_with_its_name():
    with pytest.raises(ValueError, match="autoaugment"):
        A.policy_views("autoaugment", 1.0)


# -- the individual operations -------------------------------------------------------------------

def test_blur_changes_the_image_and_matches_torchvision():
    x = batch_of_identical(2, 32).float() / 255
    sigma = 1.5
    p = ViewParams(blur_p=1.0, blur_sigma=(sigma * 224 / 32, sigma * 224 / 32))  # sigma 1.5 at 32 px
    assert A.blur_sigmas(p, 32) == pytest.approx((sigma, sigma))
    out = A.gaussian_blur(x, p, gen())
    assert not torch.allclose(out, x, atol=1e-2)
    assert out.std() < x.std()
    k = A.blur_kernel_size(sigma, 32)
    assert k == 11  # 3 sigma = 4.5 px either side
    ref = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # a constant image stays constant (normalised kernel)
    flat = torch.full((2, 3, 16, 16), 0.37)
    torch.testing.assert_close(A.gaussian_blur(flat, p, gen()), flat)



def test_blur_scales_with_the_image_and_its_kernel_covers_three_sigma():
    p = A.POLICIES["byol"][0]
    assert A.blur_sigmas(p, 224) == (0.1, 2.0)
    assert A.blur_sigmas(p, 32) == pytest.approx((0.1 / 7, 2.0 / 7))
    assert A.blur_kernel_size(2.0, 224) == 13
    assert A.blur_kernel_size(2.0 / 7, 32) == 3
    assert A.blur_kernel_size(40.0, 16) == 31  # never wider than reflect padding allows
    # the same blur, relative to the image, at 32 and at 224 px: a 224 px image blurred then
    # shrunk to 32 px matches the 32 px image blurred with the scaled sigma
    big = colourful(224, square=True).unsqueeze(0).float() / 255
    small = torch.nn.functional.interpolate(big, size=(32, 32), mode="area")
    fixed = ViewParams(blur_p=1.0, blur_sigma=(14.0, 14.0))
    blurred_big = torch.nn.functional.interpolate(A.gaussian_blur(big, fixed, gen()), size=(32, 32), mode="area")
    blurred_small = A.gaussian_blur(small, fixed, gen())
    assert (blurred_small - small).abs().mean() > 0.01
    assert (blurred_small - blurred_big).abs().mean() < 0.2 * (blurred_small - small).abs().mean()


def test_blur_sigma_is_per_image():
    x = batch_of_identical(6, 32).float() / 255
    out = A.gaussian_blur(x, ViewParams(blur_p=1.0, blur_sigma=(0.7, 14.0)), gen())  # (0.1, 2.0) at 32 px
    assert all_pairs_differ(out, atol=1e-4)


def test_blur_probability_zero_leaves_image():
    x = batch_of_identical(2, 16).float() / 255
    assert torch.equal(A.gaussian_blur(x, ViewParams(blur_p=0.0), gen()), x)


def test_solarize_inverts_pixels_at_or_above_half():
    values = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0])
    x = values.view(1, 1, 1, -1).expand(2, 3, 4, -1).contiguous()
    out = A.solarize(x, ViewParams(solarize_p=1.0), gen())
    expected = torch.where(values >= 0.5, 1 - values, values)
    assert torch.equal(out[0, 0, 0], expected)
    assert torch.equal(out, expected.view(1, 1, 1, -1).expand_as(x))
    assert torch.equal(A.solarize(x, ViewParams(solarize_p=0.0), gen()), x)
    lower = A.solarize(x, ViewParams(solarize_p=1.0, solarize_threshold=0.25), gen())
    assert torch.equal(lower[0, 0, 0], torch.where(values >= 0.25, 1 - values, values))


def test_grayscale_gives_equal_channels_with_luma_weights():
    x = batch_of_identical(3, 16).float() / 255
    out = A.grayscale(x, ViewParams(grayscale_p=1.0), gen())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[:, 0], luma)


def test_hsv_round_trip():
    x = torch.rand(4, 3, 8, 8, generator=gen(3))
    torch.testing.assert_close(A._hsv_to_rgb(A._rgb_to_hsv(x)), x, rtol=0, atol=1e-5)


def test_large_images_are_antialiased_per_crop_and_small_crops_keep_their_detail():
    """96 px -> 32 px views: a full-image view averages away detail finer than the output can
    show; a small crop (about 32 source pixels wide) keeps the detail it has at full resolution."""
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    board = ((yy + xx) % 2).expand(4, 3, 96, 96)
    full = A.crop_and_flip(board, ViewParams(crop_min_area=1.0, flip_p=0.0), 32, gen())
    assert full.std(dim=(1, 2, 3)).max() < 0.05  # a 1-pixel checkerboard becomes grey, not aliased stripes

    wave = (0.5 + 0.5 * torch.sin(2 * math.pi * xx / 6)).expand(64, 3, 96, 96)  # 6 px period
    p = ViewParams(crop_min_area=0.08, crop_ratio=(1.0, 1.0), flip_p=0.0)
    out = A.crop_and_flip(wave, p, 32, gen(1))
    _, _, cw, ch = A.crop_boxes(64, 96, 96, p, gen(1), "cpu")  # crop_and_flip's first draws
    small = cw * ch < 0.2  # crops under 43 px wide
    assert small.sum() >= 3
    assert out[small].std(dim=(1, 2, 3)).min() > 0.3  # of the wave's 0.354; one 32 px copy of the image kept 0.18


def test_jitter_matches_torchvision_applied_image_by_image_in_each_drawn_order():
    """The batched jitter == torchvision's adjust_* on each image, in the order drawn for it."""
    n = 48
    x = torch.rand(n, 3, 12, 12, generator=gen(5))
    p = ViewParams(jitter_p=0.8, jitter=(0.4, 0.4, 0.2, 0.1))
    out = A.color_jitter(x, p, gen(7))

    g = gen(7)  # the same draws, in color_jitter's order
    apply = torch.rand(n, generator=g) < p.jitter_p
    factors = [torch.rand(n, generator=g) * 2 * m + 1 - m for m in p.jitter[:3]]
    hue = torch.rand(n, generator=g) * 2 * p.jitter[3] - p.jitter[3]
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    assert len({tuple(o.tolist()) for o in order}) > 10  # orders really are drawn per image
    ops = [lambda y, i: TF.adjust_brightness(y, factors[0][i].item()),
           lambda y, i: TF.adjust_contrast(y, factors[1][i].item()),
           lambda y, i: TF.adjust_saturation(y, factors[2][i].item()),
           lambda y, i: TF.adjust_hue(y, hue[i].item())]
    for i in range(n):
        expected = x[i]
        if apply[i]:
            for j in order[i].tolist():
                expected = ops[j](expected, i)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-4, msg=f"image {i}, order {order[i].tolist()}")


def test_jitter_with_probability_zero_or_zero_magnitude_is_identity():
    x = batch_of_identical(3, 16).float() / 255
    assert torch.equal(A.color_jitter(x, ViewParams(jitter_p=0.0), gen()), x)
    assert torch.equal(A.color_jitter(x, ViewParams(jitter_p=1.0, jitter=(0.0, 0.0, 0.0, 0.0)), gen()), x)


def test_gray_images_stay_gray_under_jitter():
    x = batch_of_identical(4, 16).float() / 255
    x = A.grayscale(x, ViewParams(grayscale_p=1.0), gen())
    out = A.color_jitter(x, ViewParams(jitter_p=1.0), gen())
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, 1], out[:, 2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("policy", sorted(A.POLICIES))
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, A.MAX_STRENGTH])
def test_every_policy_produces_valid_views(policy, strength):
    images = batch_of_identical(4, 48)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.2, 0.2]).view(1, 3, 1, 1)
    for view in A.policy_views(policy, strength):
        assert {f.name for f in fields(view)} == {f.name for f in fields(ViewParams)}
        out = A.augment(images, view, 24, gen(), mean, std)
        assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        raw = out * std + mean
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


# -- random resized crop: torchvision's distribution ---------------------------------------------

def _torchvision_boxes(n: int, h: int, w: int, scale, ratio) -> tuple[np.ndarray, np.ndarray]:
    """(area fraction, log aspect) of n boxes from torchvision's RandomResizedCrop.get_params."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = torch.zeros(1, h, w)
    boxes = np.array([RandomResizedCrop.get_params(image, scale, ratio) for _ in range(n)], dtype=np.float64)
    return boxes[:, 2] * boxes[:, 3] / (h * w), np.log(boxes[:, 3] / boxes[:, 2])


@pytest.mark.parametrize("h, w", [(512, 512), (600, 800)])
def test_crop_boxes_have_torchvisions_distribution_of_area_and_aspect(h, w):
    from scipy.stats import ks_2samp

    n = 8000
    p = ViewParams()
    cx, cy, cw, ch = A.crop_boxes(n, h, w, p, gen(0), "cpu")
    assert bool(((cx - cw / 2 >= -1e-6) & (cx + cw / 2 <= 1 + 1e-6)).all())
    assert bool(((cy - ch / 2 >= -1e-6) & (cy + ch / 2 <= 1 + 1e-6)).all())
    area, log_aspect = (cw * ch).double().numpy(), torch.log(cw * w / (ch * h)).double().numpy()
    ref_area, ref_log_aspect = _torchvision_boxes(n, h, w, (p.crop_min_area, 1.0), p.crop_ratio)
    assert ks_2samp(area, ref_area).pvalue > 1e-3
    assert ks_2samp(log_aspect, ref_log_aspect).pvalue > 1e-3
    if h == w:
        assert area.mean() == pytest.approx(0.48, abs=0.01)  # clamping boxes instead of redrawing gave 0.535
    assert area.mean() == pytest.approx(ref_area.mean(), abs=0.01)
    assert log_aspect.mean() == pytest.approx(ref_log_aspect.mean(), abs=0.01)


def test_crop_boxes_fall_back_to_torchvisions_central_crop():
    # no box of 90-100% of a square image has an aspect of 2 to 3: every try fails
    p = ViewParams(crop_min_area=0.9, crop_ratio=(2.0, 3.0))
    cx, cy, cw, ch = A.crop_boxes(50, 64, 64, p, gen(0), "cpu")
    torch.testing.assert_close(cw, torch.ones(50))
    torch.testing.assert_close(ch, torch.full((50,), 0.5))  # the widest box of aspect 2
    torch.testing.assert_close(torch.stack([cx, cy]), torch.full((2, 50), 0.5))  # central
    ref_area, ref_log_aspect = _torchvision_boxes(50, 64, 64, (0.9, 1.0), (2.0, 3.0))
    assert np.allclose(ref_area, 0.5) and np.allclose(ref_log_aspect, math.log(2))
    # a wide image and tall ratios: the full height, clamped to the tallest aspect allowed
    cx, cy, cw, ch = A.crop_boxes(50, 40, 80, ViewParams(crop_min_area=0.95, crop_ratio=(0.5, 0.75)), gen(0), "cpu")
    torch.testing.assert_close(ch, torch.ones(50))
    torch.testing.assert_close(cw, torch.full((50,), 40 * 0.75 / 80))
