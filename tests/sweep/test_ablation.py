"""Ablation: `ablate: POLICY` and `byol-sweep ablate` train the policy and each leave-one-op-out
variant on the same seeds; the report leads with each op's contribution."""
from __future__ import annotations

import json

import pytest

from sweep.cli import main
from sweep.errors import SpaceError
from sweep.space import ablation_space, parse_space
from tests.conftest import TINY_BASE, new_store

VARIANTS = ["byol_small-no_crop", "byol_small-no_flip", "byol_small-no_color_jitter", "byol_small-no_grayscale",
            "byol_small-no_solarize"]


def test_an_ablation_space_is_the_policy_and_its_variants_over_seeds_with_nothing_selected():
    spec = parse_space({"name": "a", "base": {"epochs": 2}, "grid": {"seed": [0, 1, 2]}, "ablate": "byol_small"}, "a.yaml")
    assert spec.grid["policy"] == ["byol_small", *VARIANTS] and spec.grid["seed"] == [0, 1, 2]
    assert (spec.scheduler.name, spec.algorithm, spec.final, spec.search) == ("fifo", "grid", None, {})
    assert spec.compared_fields == ["policy"] and spec.tracking_params()["ablation"] == "byol_small"
    own = json.loads(spec.base["policies"])
    assert own["byol_small-no_solarize"] == {"from": "byol_small", "T": {"solarize": None}, "T_prime": {"solarize": None}}


def test_a_users_policy_can_be_ablated():
    mine = {"from": "byol_small", "T": {"erase": {"p": 0.3}}}
    spec = parse_space({"name": "a", "base": {"epochs": 2}, "grid": {"seed": [0, 1]}, "ablate": "mine",
                        "policies": {"mine": mine}}, "a.yaml")
    assert "mine-no_erase" in spec.grid["policy"] and spec.train_config({"policy": "mine-no_erase", "seed": 0})


@pytest.mark.parametrize("extra, message", [
    ({"ablate": "nope", "grid": {"seed": [0, 1]}}, r"a\.yaml: ablate: augmentation policy 'nope' is unknown; allowed: byol"),
    ({"ablate": "byol", "grid": {"seed": [0]}}, r"a\.yaml: grid\.seed: an ablation pairs its arms by seed; give at least 2"),
    ({"ablate": "byol", "grid": {"seed": [0, 1], "policy": ["byol"]}}, r"a\.yaml: grid\.policy: ablate sets the policy arms"),
    ({"ablate": "byol", "grid": {"seed": [0, 1]}, "search": {"base_lr": {"uniform": [0.1, 1]}}}, r"a\.yaml: search: an ablation"),
    ({"ablate": "byol", "grid": {"seed": [0, 1]}, "final": {"seeds": 3}}, r"a\.yaml: final: an ablation selects nothing"),
    ({"ablate": "byol", "grid": {"seed": [0, 1]}, "asha": {"grace_period": 1}}, r"a\.yaml: scheduler: an ablation runs every arm"),
    ({"ablate": 3, "grid": {"seed": [0, 1]}}, r"a\.yaml: ablate: expected the name of a policy, got 3"),
])
def test_a_bad_ablation_is_refused_naming_the_key(extra, message):
    with pytest.raises(SpaceError, match=message):
        parse_space({"name": "a", "base": {"epochs": 2}, **extra}, "a.yaml")


def test_the_ablate_command_refuses_before_ray(capsys):
    assert main(["ablate", "byol_small", "--seeds", "1"]) == 2
    assert "--seeds is 1; allowed: an integer from 2 to 1000" in capsys.readouterr().err
    assert main(["ablate", "nope"]) == 2
    assert "policy 'nope' is unknown" in capsys.readouterr().err


@pytest.mark.slow
def test_an_ablation_runs_and_its_report_leads_with_the_contributions(tmp_path, ray_local, migrated_store):
    from reports import build_report
    from sweep.runner import SweepOptions, run_sweep

    spec = ablation_space("crop_only", 2, "quick", [f"{k}={v}" for k, v in {**TINY_BASE, "epochs": 1}.items()], None)
    uri = new_store(migrated_store, tmp_path)
    outcome = run_sweep(spec, SweepOptions(name="abl", storage=str(tmp_path / "runs"), tracking_uri=uri))
    assert outcome.counts == {"completed": 6}  # crop_only, -no_crop, -no_flip on seeds 0 and 1
    report = build_report(["abl"], uri, tmp_path / "report").with_name("report.md").read_text()
    first = report.index("## ")
    assert report[first:].startswith("## Ablation of crop_only: what each op contributes")
    assert "| crop |" in report and "| flip |" in report
