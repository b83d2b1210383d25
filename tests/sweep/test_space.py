"""Search space validation: every class of bad file gets a message naming the file and key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sweep.space import SpaceError, load_space, shipped_spaces


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


VALID = """
base: {dataset: digits, backbone: small_cnn, epochs: 4}
search:
  base_lr: {loguniform: [0.01, 1.0]}
  tau_base: {one_minus_loguniform: [0.9, 0.9999]}
asha: {grace_period: 1, reduction_factor: 2, max_epochs: 4}
"""


@pytest.mark.parametrize("text, key, allowed", [
    ("bogus: 1\n" + VALID, "bogus", "allowed: name, description, base"),
    ("base: {learning_rate: 0.1}\nsearch: {base_lr: {uniform: [0.1, 1]}}", "base.learning_rate", "allowed: dataset"),
    ("search: {lr: {uniform: [0.1, 1]}}", "search.lr", "allowed: dataset"),
    ("base: {epochs: ten}\nsearch: {base_lr: {uniform: [0.1, 1]}}", "base.epochs", "must be an integer"),
    ("base: {batch_size: 1}\nsearch: {base_lr: {uniform: [0.1, 1]}}", "base.batch_size", "[2, 65536]"),
    ("search: {base_lr: {uniform: [1.0, 0.1]}}", "search.base_lr", "empty or inverted"),
    ("search: {base_lr: {uniform: [0.5, 0.5]}}", "search.base_lr", "empty or inverted"),
    ("search: {base_lr: {normal: [0, 1]}}", "search.base_lr", "allowed: uniform, loguniform"),
    ("search: {base_lr: {loguniform: [0, 1]}}", "search.base_lr", "low > 0"),
    ("search: {base_lr: {uniform: [0.1]}}", "search.base_lr", "[low, high]"),
    ("search: {tau_base: {one_minus_loguniform: [0.9, 1.0]}}", "search.tau_base", "high < 1"),
    ("search: {tau_base: {uniform: [0.5, 1.5]}}", "search.tau_base", "[0.0, 1.0]"),
    ("search: {policy: {choice: [byol, fancy]}}", "search.policy", "allowed: byol, simclr"),
    ("search: {policy: {uniform: [0, 1]}}", "search.policy", "not numeric"),
    ("grid: {seed: []}\nalgorithm: grid", "grid.seed", "non-empty list"),
    ("grid: {seed: [0, 1]}\nsearch: {base_lr: {uniform: [0.1, 1]}}", "grid", "Optuna cannot search a grid"),
    ("search: {base_lr: {uniform: [0.1, 1]}}\nmetric: accuracy", "metric", "allowed: knn_acc"),
    ("search: {base_lr: {uniform: [0.1, 1]}}\nmode: up", "mode", "allowed: max, min"),
    ("search: {base_lr: {uniform: [0.1, 1]}}\nalgorithm: bayes", "algorithm", "allowed: optuna, random, grid"),
    ("search: {base_lr: {uniform: [0.1, 1]}}\nnum_samples: 0", "num_samples", "integer >= 1"),
    ("search: {base_lr: {uniform: [0.1, 1]}}\nasha: {grace: 1}", "asha.grace", "allowed: grace_period"),
    ("base: {epochs: 4}\nsearch: {base_lr: {uniform: [0.1, 1]}}\nasha: {grace_period: 4}", "asha.grace_period", "below max_epochs"),
    ("base: {epochs: 4}\nsearch: {base_lr: {uniform: [0.1, 1]}}\nasha: {max_epochs: 8}", "asha.max_epochs", "must agree"),
    ("search: {base_lr: {uniform: [0.1, 1]}}\nasha: {reduction_factor: 1}", "asha.reduction_factor", ">= 2"),
    ("base: {dataset: mnist}\nsearch: {base_lr: {uniform: [0.1, 1]}}", "base.dataset", "imagefolder:<path>"),
    ("base: {base_lr: 0.1}\nsearch: {base_lr: {uniform: [0.1, 1]}}", "base.base_lr", "also swept"),
    ("search: {base_lr: {quniform: [0.1, 1, 0.3]}}", "search.base_lr", "0.1 is not a multiple of 0.3"),
    ("search: {batch_size: {quniform: [64, 256, 0.5]}}", "search.batch_size", "integer field: quniform needs whole"),
    ("grid: {epochs: [1, 2]}\nalgorithm: grid\nasha: false", "grid.epochs", "epochs cannot be swept"),
    ("search: {epochs: {quniform: [2, 8, 2]}}", "search.epochs", "epochs cannot be swept"),
])
def test_each_bad_space_is_refused_with_file_key_and_what_is_allowed(tmp_path, text, key, allowed):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}"), message
    assert allowed in message, message


def test_broken_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "search:\n  base_lr: {uniform: [0.1, 1]\n")
    with pytest.raises(SpaceError, match=r"not valid YAML at line \d+"):
        load_space(path)


def test_missing_file_or_unknown_name_lists_shipped_spaces():
    with pytest.raises(SpaceError, match="shipped: ablate_byol_small, bootstrap, default, pbt, policies, policies_tuned, quick"):
        load_space("no-such-space")


def test_a_valid_space_becomes_tune_params_and_train_configs(tmp_path):
    spec = load_space(write(tmp_path, VALID))
    space = spec.param_space()
    assert set(space) == {"base_lr", "one_minus_tau_base"}
    assert space["one_minus_tau_base"].lower == pytest.approx(1e-4)
    assert space["one_minus_tau_base"].upper == pytest.approx(0.1)
    config = spec.train_config({"base_lr": 0.3, "one_minus_tau_base": 0.01})
    assert config.tau_base == pytest.approx(0.99) and config.base_lr == 0.3 and config.epochs == 4
    assert spec.asha.rungs() == [1, 2]


@pytest.mark.parametrize("name", sorted(shipped_spaces()))
def test_every_shipped_space_is_valid(name):
    spec = load_space(name)
    assert spec.total_trials >= 1
    yaml.safe_load(spec.text)


def test_policies_space_is_a_policy_by_seed_grid_without_early_stopping():
    spec = load_space("policies")
    assert spec.algorithm == "grid" and spec.asha is None
    assert set(spec.grid) == {"policy", "seed"} and len(spec.grid["seed"]) >= 2
    assert spec.total_trials == len(spec.grid["policy"]) * len(spec.grid["seed"])


def test_bootstrap_space_pairs_a_moving_and_a_fixed_target_at_the_main_jobs_settings():
    spec, quick = load_space("bootstrap"), load_space("quick")
    assert spec.algorithm == "grid" and spec.asha is None and not spec.final
    assert set(spec.grid) == {"tau_base", "seed"} and len(spec.grid["seed"]) >= 5
    assert 1.0 in spec.grid["tau_base"] and any(t < 1.0 for t in spec.grid["tau_base"])
    assert {k: spec.base.get(k) for k in quick.base} == quick.base
    assert spec.max_epochs == quick.max_epochs  # the main job's budget
    # measured on the test split's 10,000 queries; nothing is selected there (no search, no final stage)
    assert spec.base["eval_split"] == "test" and spec.search == {}


def test_the_readme_example_space_is_valid(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"```yaml\n(name: my-sweep.*?)```", readme, re.S).group(1)
    spec = load_space(write(tmp_path, example))
    assert spec.total_trials == 4 * 5 * 3 and spec.asha is not None


THREE_MISTAKES = """
base: {dataset: digits, batch_size: 1, epochs: 4}
search:
  base_lr: {loguniform: [0.01, 1.0]}
  lr: {uniform: [0.1, 1]}
metric: accuracy
asha: {grace_period: 1, max_epochs: 4}
"""


def test_space_problems_lists_every_independent_mistake_first_the_one_parse_space_raises(tmp_path):
    from sweep.space import read_space, space_problems

    path = write(tmp_path, THREE_MISTAKES)
    _, data, _ = read_space(path)
    problems = space_problems(data, path)
    assert [p.split(": ")[1] for p in problems] == ["base.batch_size", "search.lr", "metric"], problems
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert problems[0] == str(err.value)
    assert space_problems(yaml.safe_load(VALID), path) == []


def test_space_problems_leaves_out_what_only_follows_from_another_mistake():
    from sweep.space import space_problems

    # the only searched field is misspelt: optuna's "needs a searched field" would only follow from it
    problems = space_problems(yaml.safe_load("search: {lr: {uniform: [0.1, 1]}}\nmode: up"), "s.yaml")
    assert [p.split(": ")[1] for p in problems] == ["search.lr", "mode"], problems
    # base.epochs unreadable: the scheduler's budget checks are not run against a made-up budget
    problems = space_problems(yaml.safe_load("base: {epochs: ten}\nsearch: {base_lr: {uniform: [0.1, 1]}}\n"
                                             "asha: {grace_period: 8}"), "s.yaml")
    assert [p.split(": ")[1] for p in problems] == ["base.epochs"], problems


@pytest.mark.parametrize("selection, what", [
    ("search:\n  base_lr: {loguniform: [0.1, 1.0]}\nasha: false\nfinal: false\n", "a search"),
    ("grid:\n  seed: [0, 1]\nalgorithm: grid\nfinal: false\n", "asha scheduling"),
    ("grid:\n  base_lr: [0.1, 0.2]\nalgorithm: grid\nasha: false\n", "a final stage"),
])
def test_trials_evaluate_on_the_test_split_only_when_nothing_is_selected_by_their_metric(tmp_path, selection, what):
    text = "base: {dataset: digits, epochs: 4, eval_split: test}\n" + selection
    with pytest.raises(SpaceError, match=rf"base\.eval_split: test is allowed only in a sweep that selects nothing.*"
                                         rf"this one has {what}: evaluate its trials on val \(a final stage measures"):
        load_space(write(tmp_path, text))
    # the same sweep on val is fine, and a grid compared as it stands may use the test split
    load_space(write(tmp_path, text.replace("eval_split: test", "eval_split: val")))
    load_space(write(tmp_path, "base: {dataset: digits, epochs: 4, eval_split: test}\ngrid:\n  seed: [0, 1]\n"
                               "algorithm: grid\nasha: false\nfinal: false\n"))


@pytest.mark.parametrize("seeds, key", [
    ("base: {dataset: digits, epochs: 4, seed: 10001}\nsearch:\n  base_lr: {loguniform: [0.1, 1.0]}\n", "base.seed"),
    ("base: {dataset: digits, epochs: 4}\ngrid:\n  seed: [1, 10002]\n  base_lr: [0.1, 1.0]\nalgorithm: grid\n", "grid.seed"),
    ("base: {dataset: digits, epochs: 4}\nsearch:\n  seed: {uniform: [0, 20000]}\n", "search.seed"),
    ("base: {dataset: digits, epochs: 4}\nsearch:\n  seed: {choice: [3, 10000]}\n", "search.seed"),
])
def test_the_final_stages_seeds_are_never_seeds_the_search_used(tmp_path, seeds, key):
    with pytest.raises(SpaceError, match=rf"{re.escape(key)}: seed 1000\d is also a final-stage seed: the final stage "
                                         r"trains on new seeds 10000-10002"):
        load_space(write(tmp_path, seeds))
    # without a final stage, or with seeds below the final ones, the same space is valid
    load_space(write(tmp_path, seeds + "final: false\n"))
    load_space(write(tmp_path, "base: {dataset: digits, epochs: 4}\nsearch:\n  seed: {uniform: [0, 9999]}\n"))
