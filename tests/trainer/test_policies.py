"""Policies as data: the shipped ones give exactly the views they gave before they were data, a
user's own is checked field by field, and the new ops match torchvision's transforms.v2."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from trainer import augment as A
from trainer.config import ConfigError, TrainConfig
from trainer.policies import DEFINITIONS, POLICIES, PolicyError, ViewParams, parse_policies, policy_views

# sha256 (first 16 hex) of two rounds of (T, T') over 8 fixed images, generator seed 1234, views of
# 24 px; measured with the code before policies were data (commit 37f75e1), torch 2.14.1 on CPU.
BEFORE = {
    "byol|0.5|32": "2de1e7855dd9d197",
    "byol|0.5|64": "22942d3aa0ad6d44",
    "byol|1.0|32": "859d2443b98f0bc0",
    "byol|1.0|64": "72d36a19a2c1c3ad",
    "byol|1.5|32": "d931b20b08b3b2f3",
    "byol|1.5|64": "0aca83c150839376",
    "simclr|0.5|32": "38b368b4b814e220",
    "simclr|0.5|64": "7c3b42bce8da2d21",
    "simclr|1.0|32": "12280ceefb581b21",
    "simclr|1.0|64": "5b4ad20a46440d09",
    "simclr|1.5|32": "436b9cc2df830904",
    "simclr|1.5|64": "51f0fd6782504efc",
    "crop_only|0.5|32": "5a69d3898e1b1f74",
    "crop_only|0.5|64": "dbea623811d7693a",
    "crop_only|1.0|32": "49971cb557b75797",
    "crop_only|1.0|64": "fa9e10540c15b400",
    "crop_only|1.5|32": "60b0fd81ab73345b",
    "crop_only|1.5|64": "852bdfa2ea190bbf",
    "no_color|0.5|32": "40918725dcd6bd35",
    "no_color|0.5|64": "d474d6ea21c315f3",
    "no_color|1.0|32": "2a95492c4be297ca",
    "no_color|1.0|64": "92a168e407e76bc6",
    "no_color|1.5|32": "0b7dd6a7dfa69339",
    "no_color|1.5|64": "8653d3ab9b6960ff",
    "no_blur|0.5|32": "2750f209f4f6a8a2",
    "no_blur|0.5|64": "590063c4f8a1d87a",
    "no_blur|1.0|32": "06530c403b30f6f1",
    "no_blur|1.0|64": "8a9d7c5581594242",
    "no_blur|1.5|32": "a4dfd2567b4a4a7d",
    "no_blur|1.5|64": "a812bc61f67396b0",
    "byol_small|0.5|32": "2750f209f4f6a8a2",
    "byol_small|0.5|64": "590063c4f8a1d87a",
    "byol_small|1.0|32": "06530c403b30f6f1",
    "byol_small|1.0|64": "8a9d7c5581594242",
    "byol_small|1.5|32": "a4dfd2567b4a4a7d",
    "byol_small|1.5|64": "a812bc61f67396b0",
    "simclr_small|0.5|32": "cabe32015b786420",
    "simclr_small|0.5|64": "39390c5162046dd6",
    "simclr_small|1.0|32": "e80c80b99621d9b1",
    "simclr_small|1.0|64": "a3870b8519d3c820",
    "simclr_small|1.5|32": "a9d5b7a645d8c2e2",
    "simclr_small|1.5|64": "df225ac7419d42e9"
}


def fingerprint(policy: str, strength: float, side: int) -> str:
    images = torch.randint(0, 256, (8, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(1234)
    mean, std = torch.tensor([0.4, 0.45, 0.5]).view(1, 3, 1, 1), torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)
    t1, t2 = policy_views(policy, strength)
    h = hashlib.sha256()
    for _ in range(2):
        for view in (t1, t2):
            h.update(A.augment(images, view, 24, gen, mean, std).numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.skipif(not torch.__version__.startswith("2.14.1"), reason="the fingerprints were taken with torch 2.14.1")
@pytest.mark.parametrize("key", sorted(BEFORE))
def test_the_shipped_policies_give_bit_identical_views_to_before(key):
    policy, strength, side = key.split("|")
    assert fingerprint(policy, float(strength), int(side)) == BEFORE[key]


def test_every_shipped_policy_is_written_as_data_and_resolves_to_its_views():
    assert set(DEFINITIONS) == set(POLICIES) == {"byol", "simclr", "crop_only", "no_color", "no_blur", "byol_small",
                                                "simclr_small"}
    t, t_prime = POLICIES["byol"]
    assert t.ops == ("crop", "flip", "color_jitter", "grayscale", "blur")
    assert t_prime.ops == (*t.ops, "solarize") and (t_prime.blur_p, t_prime.solarize_p) == (0.1, 0.2)
    assert "blur" not in POLICIES["byol_small"][0].ops and POLICIES["crop_only"][0].ops == ("crop", "flip")


def own(definition: dict, name: str = "mine") -> str:
    return json.dumps({name: definition})


def test_a_policy_starts_from_a_shipped_one_with_overrides_and_removals():
    text = own({"from": "byol_small", "T_prime": {"solarize": {"p": 0.4}}, "T": {"erase": {"p": 0.25}, "flip": None}})
    t, t_prime = policy_views("mine", 1.0, text)
    assert t_prime.solarize_p == 0.4 and t_prime.solarize_threshold == 0.5  # the rest of the op stays
    assert t.ops == ("crop", "color_jitter", "grayscale", "erase") and t.erase_p == 0.25
    assert TrainConfig(policy="mine", policies=text).policy == "mine"


def test_order_is_the_views_order():
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    jitter_first = ViewParams(ops=("crop", "color_jitter", "grayscale"), jitter_p=1.0, grayscale_p=0.5)
    gray_first = ViewParams(ops=("crop", "grayscale", "color_jitter"), jitter_p=1.0, grayscale_p=0.5)
    a = A.augment(x, jitter_first, 16, torch.Generator().manual_seed(0), zero, one)
    b = A.augment(x, gray_first, 16, torch.Generator().manual_seed(0), zero, one)
    assert not torch.equal(a, b)


def test_a_view_without_a_crop_is_the_whole_image_and_a_lone_flip_flips():
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    out = A.augment(x, ViewParams(ops=("flip",), flip_p=0.5), 16, torch.Generator().manual_seed(0), zero, one)
    plain, mirrored = x.float() / 255, x.float().flip(-1) / 255
    same = [torch.equal(o, p) for o, p in zip(out, plain)]
    flipped = [torch.equal(o, m) for o, m in zip(out, mirrored)]
    assert all(s or f for s, f in zip(same, flipped)) and 16 < sum(flipped) < 48


# -- the new ops against torchvision's transforms.v2 ------------------------------------------------

def test_equalize_matches_torchvision_on_fixed_images():
    x = torch.randint(30, 200, (16, 3, 20, 20), dtype=torch.uint8).float().div(255)
    x[0] = 0.5  # a single-valued image is left as it is (in 8 bits)
    ours = A.equalize(x, ViewParams(equalize_p=1.0), torch.Generator().manual_seed(0))
    theirs = TF.equalize(x)
    assert torch.allclose(ours, theirs, atol=0.5 / 255)
    assert torch.allclose(ours[0], x[0], atol=1 / 255)  # quantized to 8 bits, as torchvision does


def test_equalize_draws_its_probability_and_has_no_magnitude():
    x = torch.randint(30, 200, (2000, 3, 24, 24), dtype=torch.uint8).float().div(255)
    out = A.equalize(x, ViewParams(equalize_p=0.3), torch.Generator().manual_seed(1))
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert abs(changed - 0.3) < 0.04
    assert ViewParams(equalize_p=0.3).scaled(1.5).equalize_p == 0.3


def erased_boxes(before: torch.Tensor, after: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    boxes = []
    for b, a in zip(before, after):
        diff = (b != a).any(0).nonzero()
        if not len(diff):
            boxes.append(None)
            continue
        top, left = diff.min(0).values.tolist()
        bottom, right = diff.max(0).values.tolist()
        boxes.append((top, left, bottom - top + 1, right - left + 1))
    return boxes


def test_erase_matches_torchvision_on_fixed_parameters():
    x = torch.rand(32, 3, 24, 24) * 0.9 + 0.05  # no pixel equals the erase value
    p = ViewParams(erase_p=1.0, erase_scale=(0.25, 0.25), erase_ratio=(1.0, 1.0), erase_value=0.0)
    out = A.erase(x, p, torch.Generator().manual_seed(0))
    for image, result, box in zip(x, out, erased_boxes(x, out)):
        i, j, h, w = box
        assert (h, w) == (12, 12)  # round(sqrt(0.25 * 576)), as torchvision computes it
        assert torch.equal(result, TF.erase(image, i, j, h, w, torch.tensor(0.0)))


def test_erase_draws_boxes_distributed_as_torchvisions():
    x = torch.rand(3000, 1, 24, 24) * 0.9 + 0.05
    p = ViewParams(erase_p=0.5, erase_scale=(0.02, 0.33), erase_ratio=(0.3, 3.3))
    boxes = erased_boxes(x, A.erase(x, p, torch.Generator().manual_seed(2)))
    ours = [b for b in boxes if b is not None]
    torch.manual_seed(3)
    reference = v2.RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)
    theirs = [b for b in erased_boxes(x, torch.stack([reference(img) for img in x])) if b is not None]
    assert abs(len(ours) / len(x) - len(theirs) / len(x)) < 0.05
    for stat in (lambda b: b[2] * b[3], lambda b: b[2] / b[3], lambda b: b[0] + b[2] / 2):
        mean_ours = sum(map(stat, ours)) / len(ours)
        mean_theirs = sum(map(stat, theirs)) / len(theirs)
        assert abs(mean_ours - mean_theirs) < 0.08 * max(abs(mean_theirs), 1.0)


def test_erase_scales_its_area_with_the_strength():
    p = ViewParams(erase_p=0.5, erase_scale=(0.02, 0.33))
    assert p.scaled(0.5).erase_scale < p.erase_scale < p.scaled(1.5).erase_scale
    assert p.scaled(1.5).erase_p == 0.5


# -- bad policies: each refused with one sentence naming the key and what is allowed ---------------

BAD = [
    ({"mine": {"T": {"crop": {}}}}, "T_prime missing"),
    ({"mine": {"T": {"crop": {}}, "T_prime": {"crop": {}}, "T2": {}}}, r"mine\.T2: unknown key; allowed: from, T, T_prime"),
    ({"mine": {"from": "autoaugment"}}, r"mine\.from: 'autoaugment' is not a policy; allowed: byol"),
    ({"mine": {"from": "byol", "T": {"sharpen": {}}}}, r"mine\.T\.sharpen: unknown op; allowed: crop, flip"),
    ({"mine": {"from": "byol", "T": {"flip": {"q": 0.5}}}}, r"mine\.T\.flip\.q: unknown parameter of flip; allowed: p"),
    ({"mine": {"from": "byol", "T": {"flip": {"p": 1.5}}}}, r"mine\.T\.flip\.p: 1\.5 is outside \[0, 1\]"),
    ({"mine": {"from": "byol", "T": {"flip": {"p": -0.1}}}}, r"flip\.p: -0\.1 is outside \[0, 1\]"),
    ({"mine": {"from": "byol", "T": {"flip": {"p": "half"}}}}, r"flip\.p: expected a number, got 'half'"),
    ({"mine": {"from": "byol", "T": {"flip": {"p": True}}}}, r"flip\.p: expected a number, got True"),
    ({"mine": {"from": "byol", "T": {"crop": {"scale": [0.9, 0.2]}}}}, r"crop\.scale: range \[0\.9, 0\.2\] is inverted"),
    ({"mine": {"from": "byol", "T": {"crop": {"scale": [0.08, 1.5]}}}}, r"crop\.scale: 1\.5 is outside \[0\.01, 1\]"),
    ({"mine": {"from": "byol", "T": {"crop": {"scale": [0.001, 1.0]}}}}, r"crop\.scale: 0\.001 is outside"),
    ({"mine": {"from": "byol", "T": {"crop": {"scale": 0.5}}}}, r"crop\.scale: expected \[low, high\], got 0\.5"),
    ({"mine": {"from": "byol", "T": {"crop": {"ratio": [2.0, 0.5]}}}}, r"crop\.ratio: range \[2\.0, 0\.5\] is inverted"),
    ({"mine": {"from": "byol", "T": {"crop": {"scale": [0.08, 1.0, 2.0]}}}}, r"crop\.scale: expected \[low, high\]"),
    ({"mine": {"T": {"flip": {}, "crop": {}}, "T_prime": {"crop": {}}}}, r"mine\.T\.crop: the crop must be a view's first op"),
    ({"mine": {"from": "byol", "T": {"color_jitter": {"hue": 0.7}}}}, r"color_jitter\.hue: 0\.7 is outside \[0, 0\.49\]"),
    ({"mine": {"from": "byol", "T": {"color_jitter": {"brightness": 1.5}}}}, r"color_jitter\.brightness: 1\.5 is outside"),
    ({"mine": {"from": "byol", "T": {"blur": {"sigma": [2.0, 0.1]}}}}, r"blur\.sigma: range \[2\.0, 0\.1\] is inverted"),
    ({"mine": {"from": "byol", "T": {"solarize": {"threshold": 2}}}}, r"solarize\.threshold: 2 is outside \[0, 1\]"),
    ({"mine": {"from": "byol", "T": {"erase": {"scale": [0.1, 0.9]}}}}, r"erase\.scale: 0\.9 is outside"),
    ({"mine": {"from": "byol", "T": {"erase": {"value": 3}}}}, r"erase\.value: 3 is outside \[0, 1\]"),
    ({"mine": {"from": "byol", "T": {"equalize": {"p": 2}}}}, r"equalize\.p: 2 is outside \[0, 1\]"),
    ({"mine": {"from": "byol", "T": {"equalize": 0.5}}}, r"mine\.T\.equalize: expected a mapping of its parameters \(p\)"),
    ({"mine": {"from": "byol", "T": "crop"}}, r"mine\.T: expected a mapping of ops to overrides"),
    ({"mine": {"T": {}, "T_prime": {"crop": {}}}}, r"mine\.T: expected a mapping of ops to their parameters"),
    ({"byol": {"from": "simclr"}}, r"policies\.byol: is a shipped policy's name; choose another"),
    ({"a": {"from": "b"}, "b": {"from": "a"}}, r"policies derive from each other in a loop"),
    ({"bad name!": {"from": "byol"}}, r"a policy's name is letters, digits, _ and -"),
    ({"mine": "byol"}, r"mine: expected a mapping with T and T_prime"),
    (["byol"], r"policies: expected a mapping of policy names to definitions"),
]


@pytest.mark.parametrize("definitions, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_policy_is_refused_with_one_sentence(definitions, message):
    with pytest.raises(PolicyError, match=message) as err:
        parse_policies(definitions)
    assert "\n" not in str(err.value)


def test_an_unknown_policy_name_lists_the_shipped_and_the_users_own():
    with pytest.raises(ConfigError, match="policy 'nope' is unknown; allowed: byol, .*simclr_small, mine"):
        TrainConfig(policy="nope", policies=own({"from": "byol"}))
