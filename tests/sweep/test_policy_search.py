"""An op's parameter as a search dimension: policy.<view>.<op>.<parameter> in a space's search or
grid, checked before Ray, sampled per trial into TrainConfig.policy_params, perturbable by PBT, and
its own column in MLflow and the report."""
from __future__ import annotations

import json
import re

import pytest

from sweep.errors import SpaceError
from sweep.space import parse_space
from tests.conftest import TINY_BASE, new_store, write_space
from tests.reports.test_render import CHECK_SCRIPT, CHROMIUM, _chromium
from trainer import TrainConfig, Trainer
from trainer.config import ConfigError
from trainer.loop import POLICY_PARAMS
from trainer.policies import policy_views

SOLARIZE = "policy.T_prime.solarize.p"


def space(search: dict, **extra) -> dict:
    return {"name": "p", "base": {"epochs": 8, "policy": "byol_small"}, "search": search, "num_samples": 4, **extra}


def test_a_searched_op_parameter_reaches_the_trials_views():
    spec = parse_space(space({SOLARIZE: {"uniform": [0.0, 0.5]}, "policy.T.crop.scale.low": {"uniform": [0.08, 0.5]},
                              "policy.T.equalize.p": {"uniform": [0.0, 0.5]}}), "p.yaml")
    config = spec.train_config({SOLARIZE: 0.3, "policy.T.crop.scale.low": 0.2, "policy.T.equalize.p": 0.1})
    t, t_prime = policy_views(config.policy, config.aug_strength, config.policies, config.policy_params)
    assert (t_prime.solarize_p, t.crop_min_area, t.equalize_p) == (0.3, 0.2, 0.1)
    assert t.ops[-1] == "equalize"  # an op the view lacked is added after the others
    assert spec.values(config)[SOLARIZE] == 0.3 and set(spec.param_space()) == set(spec.search)


def test_grid_and_pbt_take_op_parameters_too():
    grid = parse_space({"name": "g", "base": {"epochs": 2}, "grid": {SOLARIZE: [0.0, 0.4], "seed": [0, 1]},
                        "algorithm": "grid", "asha": False, "final": False}, "g.yaml")
    assert json.loads(grid.train_config({SOLARIZE: 0.4, "seed": 0}).policy_params) == {SOLARIZE: 0.4}
    pbt = parse_space(space({SOLARIZE: {"uniform": [0.0, 0.5]}}, scheduler={"name": "pbt"}), "p.yaml")
    assert pbt.scheduler.name == "pbt" and SOLARIZE in pbt.scheduler.mutations(pbt)


@pytest.mark.parametrize("search, message", [
    ({"policy.T.sharpen.p": {"uniform": [0, 1]}}, r"search\.policy\.T\.sharpen\.p: unknown op 'sharpen'; allowed: crop"),
    ({"policy.T.flip.q": {"uniform": [0, 1]}}, r"search\.policy\.T\.flip\.q: unknown parameter 'q' of flip; allowed: p"),
    ({"policy.T.crop.scale": {"uniform": [0.1, 0.5]}}, r"crop\.scale is a range: search its ends as policy\.T\.crop\.scale\.low"),
    ({"policy.T.flip.p.low": {"uniform": [0.1, 0.5]}}, r"flip\.p is a number: search it as policy\.T\.flip\.p"),
    ({"policy.T.flip.p": {"uniform": [0, 1.5]}}, r"search\.policy\.T\.flip\.p: 1\.5 is not a number in \[0, 1\] \(probability\)"),
    ({"policy.V.flip.p": {"uniform": [0, 1]}}, r"a policy dimension is policy\.<view>\.<op>\.<parameter> with view T or T_prime"),
    ({"policy.T.flip.p": {"choice": ["a"]}}, r"search\.policy\.T\.flip\.p: 'a' is not a number"),
])
def test_a_bad_op_dimension_is_refused_naming_the_key(search, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(space(search), "p.yaml")


def test_a_trial_continues_another_trials_checkpoint_with_other_op_parameters_only_when_allowed(tmp_path):
    base = {**TINY_BASE, "epochs": 2, "linear_probe": False, "policy": "byol_small"}
    first = Trainer(TrainConfig(**base, policy_params=json.dumps({SOLARIZE: 0.1})))
    next(first.fit())
    first.save(tmp_path / "ckpt.pt")
    other = Trainer(TrainConfig(**base, policy_params=json.dumps({SOLARIZE: 0.4})))
    with pytest.raises(ConfigError, match="policy_params"):
        other.load(tmp_path / "ckpt.pt")
    other.load(tmp_path / "ckpt.pt", allow_changes=(POLICY_PARAMS,))
    assert other.epoch == 1 and other.views[1].solarize_p == 0.4


@pytest.mark.slow
def test_a_search_over_an_op_parameter_is_a_column_in_mlflow_and_the_report(tmp_path, ray_local, migrated_store):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from reports import build_report
    from sweep.runner import SweepOptions, run_sweep

    path = write_space(tmp_path, "opsearch", base={"epochs": 1, "policy": "byol_small"}, algorithm="random",
                       num_samples=3, asha=False, search={SOLARIZE: {"uniform": [0.0, 0.5]}})
    uri = new_store(migrated_store, tmp_path)
    outcome = run_sweep(str(path), SweepOptions(name="opsearch", storage=str(tmp_path / "runs"), tracking_uri=uri))
    assert outcome.counts == {"completed": 3}
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("opsearch").experiment_id],
                              "tags.`byol_sweep.role` = 'trial'")
    for run in runs:
        value = float(run.data.params[SOLARIZE])
        assert 0.0 <= value <= 0.5 and run.data.tags[f"swept.{SOLARIZE}"] == str(value)
        assert json.loads(run.data.params["policy_params"]) == {SOLARIZE: value}
        assert json.loads(run.data.tags["byol_sweep.policy_definition"])["T_prime"]["solarize"]["p"] == value
    html = build_report(["opsearch"], uri, tmp_path / "report")
    table = pd.read_csv(html.with_name("trials.csv"))
    assert sorted(table[SOLARIZE]) == sorted(float(r.data.params[SOLARIZE]) for r in runs)
    assert SOLARIZE in html.with_name("report.md").read_text()
    # the report shows the policy, op by op, and the pictures of its views the driver logged
    parent = client.search_runs([runs[0].info.experiment_id], "tags.`byol_sweep.role` = 'sweep'")[0]
    drawn = json.loads(parent.data.tags["byol_sweep.views"])
    assert [(v["policy"], v["strength"]) for v in drawn] == [("byol_small", 1.0)]  # aug_strength was not searched
    page = html.read_text()
    assert "Augmentation policies" in page and 'alt="views of byol_small as written (aug_strength 1)"' in page
    assert "solarize" in page and "color_jitter" in page
    if CHROMIUM.exists():  # the browser loads every picture, the views' too
        checked = tmp_path / "checked.html"
        checked.write_text(page.replace("<head>", "<head>" + CHECK_SCRIPT, 1))
        dom = _chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", checked.as_uri()).stdout
        found = re.search(r"<title>CHECK images=(\d+) broken=(\d+) errors=(\d+)</title>", dom)
        assert found and int(found.group(1)) >= 2 and found.group(2) == "0" and found.group(3) == "0"
