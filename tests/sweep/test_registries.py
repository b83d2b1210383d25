"""One contract for every entry of every registry: each scheduler, searcher and augmentation policy
the package ships is held to the same checks, so a new entry is tested the moment it is added."""
from __future__ import annotations

import pytest
import torch

from sweep.errors import SpaceError
from sweep.space import parse_space
from sweep.space.schedulers import SCHEDULERS
from sweep.space.searchers import SEARCHERS
from trainer.augment import augment
from trainer.policies import POLICIES, policy_views

SEARCH = {"base_lr": {"loguniform": [0.1, 1.0]}, "tau_base": {"one_minus_loguniform": [0.9, 0.999]}}


def space_with(scheduler: str | None = None, searcher: str | None = None, **extra) -> dict:
    data = {"name": "s", "base": {"epochs": 8}, "search": SEARCH, "num_samples": 4}
    if searcher == "grid":
        data = {"name": "s", "base": {"epochs": 8}, "grid": {"seed": [0, 1]}, "num_samples": 1}
    if scheduler:
        data["scheduler"] = {"name": scheduler, **extra}
    if searcher:
        data["algorithm"] = {"name": searcher, **extra}
    return data


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_parses_builds_describes_and_refuses_an_unknown_key(name):
    from ray.tune.schedulers import TrialScheduler

    spec = parse_space(space_with(scheduler=name), "s.yaml")
    scheduler = spec.scheduler
    assert scheduler.name == name and isinstance(scheduler, SCHEDULERS[name])
    assert isinstance(scheduler.build(spec, {}), TrialScheduler)
    assert isinstance(scheduler.describe(), str) and scheduler.describe()
    assert spec.tracking_params()["scheduler"] == name
    marks = scheduler.checkpoint_epochs(spec.max_epochs)
    assert all(isinstance(e, int) and 1 <= e <= spec.max_epochs for e in marks)
    limit, note = scheduler.trial_limit(2, spec)
    assert (limit is None or limit >= 2) and (note is None or isinstance(note, str))
    with pytest.raises(SpaceError, match=rf"s\.yaml: scheduler\.bogus: unknown key for {name}; allowed: "):
        parse_space(space_with(scheduler=name, bogus=1), "s.yaml")


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_every_searcher_parses_builds_and_refuses_an_unknown_key(name):
    from ray.tune.search import SearchAlgorithm, Searcher

    spec = parse_space(space_with(searcher=name), "s.yaml")
    assert spec.algorithm == name
    assert isinstance(spec.searcher.build(spec, 2, 0, None), (Searcher, SearchAlgorithm))
    with pytest.raises(SpaceError, match=rf"s\.yaml: algorithm\.bogus: unknown key for {name}; allowed: "):
        parse_space(space_with(searcher=name, bogus=1), "s.yaml")


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_gives_two_views_that_scale_and_stay_in_range(name):
    t, t_prime = policy_views(name, 1.0)
    assert (t, t_prime) == POLICIES[name]  # strength 1.0 is exactly the policy
    weaker, stronger = policy_views(name, 0.5), policy_views(name, 1.5)
    for view in (0, 1):  # magnitudes move with the strength, probabilities never
        assert weaker[view].crop_min_area >= POLICIES[name][view].crop_min_area >= stronger[view].crop_min_area
        for p in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            assert getattr(weaker[view], p) == getattr(stronger[view], p) == getattr(POLICIES[name][view], p)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    for view in (t, t_prime):
        out = augment(images, view, 24, torch.Generator().manual_seed(0), zero, one)
        assert out.shape == (16, 3, 24, 24) and torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1
