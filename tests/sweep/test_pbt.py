"""Population Based Training: a member continues another's checkpoint with new hyperparameters
(the trainer's explicit path), and a real PBT sweep on real Ray, MLflow and digits, with its report."""
from __future__ import annotations

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_BASE, new_store, write_space
from trainer import ConfigError, TrainConfig, Trainer, augment
from trainer.byol import tau_at
from trainer.loop import CONTINUABLE_CHANGES
from trainer.optim import lr_at

TINY = {**TINY_BASE, "epochs": 3, "linear_probe": False, "knn_bank_size": 128, "knn_queries": 64, "device": "cpu"}


def expected_tau_lr(trainer: Trainer, config: TrainConfig) -> tuple[float, float]:
    """tau and lr of the last step of the epoch a trainer just ran: the cosines from its step, with
    the config's tau_base and peak lr."""
    step = trainer.step - 1
    warmup = int(round(config.warmup_epochs * trainer.steps_per_epoch))
    peak = config.base_lr * trainer.batch_size / 256
    return tau_at(step, trainer.total_steps, config.tau_base), lr_at(step, trainer.total_steps, warmup, peak)


@pytest.mark.slow  # spawns byol-sweep or trains for seconds: CI runs it, the fast loop does not
def test_a_checkpoint_continues_with_new_values_of_the_continuable_fields(tmp_path):
    first = Trainer(TrainConfig(**TINY, base_lr=0.2, tau_base=0.99, aug_strength=1.0))
    next(first.fit())
    path = tmp_path / "trainer.pt"
    first.save(path)

    new = TrainConfig(**TINY, base_lr=0.5, tau_base=0.9, aug_strength=0.5)
    said = []
    copy = Trainer(new, log=said.append)
    with pytest.raises(ConfigError, match="another configuration"):  # only when asked explicitly
        copy.load(path)
    copy.load(path, allow_changes=CONTINUABLE_CHANGES)
    assert "base_lr 0.2 -> 0.5" in said[0] and f"from step {first.step}" in said[0]
    assert (copy.epoch, copy.step) == (1, first.step)  # the schedules continue from the current step
    assert copy.peak_lr == pytest.approx(0.5 * copy.batch_size / 256)
    assert copy.views != first.views and copy.views == augment.policy_views(new.policy, 0.5)  # aug_strength 0.5
    for a, b in zip(copy.model.state_dict().values(), first.model.state_dict().values()):
        assert (a == b).all()
    result = next(copy.fit())
    tau, lr = expected_tau_lr(copy, new)
    assert result.epoch == 2 and result.tau == pytest.approx(tau) and result.lr == pytest.approx(lr)
    assert result.tau != pytest.approx(expected_tau_lr(copy, first.config)[0])


def test_other_changes_are_still_refused(tmp_path):
    first = Trainer(TrainConfig(**TINY))
    path = tmp_path / "trainer.pt"
    first.save(path)
    other = Trainer(TrainConfig(**{**TINY, "weight_decay": 0.01, "base_lr": 0.5}))
    with pytest.raises(ConfigError, match=r"another configuration \(weight_decay"):
        other.load(path, allow_changes=CONTINUABLE_CHANGES)
    with pytest.raises(ValueError, match="allow_changes may name only base_lr, tau_base, aug_strength"):
        other.load(path, allow_changes=("weight_decay",))


def test_the_shipped_pbt_space():
    from sweep.space import load_space

    spec = load_space("pbt")
    assert spec.scheduler.name == "pbt" and spec.algorithm == "random" and spec.final is None
    assert set(spec.swept) == set(CONTINUABLE_CHANGES) and spec.num_samples >= 4
    assert spec.base["dataset"] == "digits" and spec.base["backbone"] == "small_cnn"


# -- a real PBT sweep ------------------------------------------------------------------------------

EPOCHS = 3


@pytest.fixture(scope="module")
def pbt_sweep(tmp_path_factory, ray_local, migrated_store):
    """Four members on two CPUs, perturbed after every epoch; the bottom half copies the top half,
    and each kept value is doubled or halved (never resampled), within its range."""
    from sweep.runner import SweepOptions, run_sweep

    folder = tmp_path_factory.mktemp("pbt")
    space = write_space(
        folder, "pbt",
        base={"epochs": EPOCHS, "linear_probe": False},
        search={"base_lr": {"loguniform": [0.02, 4.0]}, "tau_base": {"one_minus_loguniform": [0.5, 0.999]},
                "aug_strength": {"uniform": [0.1, 1.8]}},
        num_samples=4,
        scheduler={"name": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.5,
                   "resample_probability": 0.0, "perturbation_factors": [2.0, 0.5]},
    )
    uri = new_store(migrated_store, folder)
    outcome = run_sweep(str(space), SweepOptions(name="pbt", storage=str(folder / "runs"), tracking_uri=uri,
                                                 max_failures=0))
    return outcome, uri


def history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.mark.slow
def test_members_copy_each_other_and_continue_with_new_values(pbt_sweep):
    outcome, uri = pbt_sweep
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pbt")
    parent = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'sweep'")[0]
    assert parent.data.params["scheduler"] == "pbt" and parent.data.params["scheduler.perturbation_interval"] == "1"
    assert parent.data.params["search"] == "random"
    runs = client.search_runs([exp.experiment_id], "tags.`byol_sweep.role` = 'trial'")
    assert len(runs) == 4 and outcome.counts == {"completed": 4}
    by_id = {r.data.tags["byol_sweep.trial_id"]: r for r in runs}
    exploits = [(run, json.loads(v)) for run in runs for k, v in run.data.tags.items() if k.startswith("pbt.exploit_")]
    assert exploits, "no member copied another"
    spe = TINY_BASE["train_limit"] // TINY_BASE["batch_size"]
    total = spe * EPOCHS
    for run, record in exploits:
        epoch, source = record["epoch"], by_id[record["from"]]
        assert record["from_epoch"] == epoch  # synchronous: the member continues at its own epoch
        assert source.info.run_id != run.info.run_id
        assert sorted(history(client, run.info.run_id, "knn_acc")) == list(range(1, EPOCHS + 1))
        if epoch >= EPOCHS:
            continue
        # each epoch's values as MLflow holds them: the old ones up to the exploit, the new ones from the next
        for field in CONTINUABLE_CHANGES:
            values = history(client, run.info.run_id, f"hp.{field}")
            assert values[epoch] == pytest.approx(record["old"][field])
            assert values[epoch + 1] == pytest.approx(record["new"][field])
        # the new values are the copied member's, perturbed (x2 or x0.5, kept inside the range)
        source_values = history(client, source.info.run_id, "hp.base_lr")
        ratio = record["new"]["base_lr"] / source_values[epoch]
        assert any(math.isclose(ratio, f, rel_tol=1e-6) for f in (2.0, 0.5)) or record["new"]["base_lr"] in (0.02, 4.0)
        # the schedules continue from the current step with the new values
        step = (epoch + 1) * spe - 1
        tau = history(client, run.info.run_id, "tau")[epoch + 1]
        assert tau == pytest.approx(tau_at(step, total, record["new"]["tau_base"]), rel=1e-6)
        lr = history(client, run.info.run_id, "lr")[epoch + 1]
        peak = record["new"]["base_lr"] * TINY_BASE["batch_size"] / 256
        assert lr == pytest.approx(lr_at(step, total, spe, peak), rel=1e-6)


@pytest.mark.slow
def test_the_report_draws_schedules_and_lineage(pbt_sweep, tmp_path):
    from reports import build_report

    _, uri = pbt_sweep
    html_path = build_report(["pbt"], uri, tmp_path / "report")
    md = (html_path.parent / "report.md").read_text()
    html = html_path.read_text()
    assert "## Population Based Training" in md and "<h2>Population Based Training</h2>" in html
    assert "pbt_schedules.png" in md and "pbt_lineage.png" in md
    assert html.count("data:image/png;base64") >= 2
    assert "copied" in md and "| member | epoch | copied from |" in md
