"""The final stage on a real local Ray instance and a real SQLite MLflow store: the selected
configurations re-trained on new seeds and the test split, per policy, and `finalize`."""
from __future__ import annotations

import contextlib
import io

import pytest
from mlflow.tracking import MlflowClient

from sweep.runner import SweepOptions, finalize_sweep, run_sweep
from sweep.space import FinalStage
from tests.conftest import new_store, write_space

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]
CONSOLE: dict[str, str] = {}  # a sweep's console output, by sweep


def runs_of(client: MlflowClient, experiment: str, role: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`byol_sweep.role` = '{role}'")


@pytest.fixture(scope="module")
def per_policy(tmp_path_factory, migrated_store):
    """Two policies, two lr draws each; the final stage re-trains each policy's best with 2 seeds."""
    folder = tmp_path_factory.mktemp("final")
    space = write_space(folder, "perpolicy", base={"epochs": 2}, search={"base_lr": {"loguniform": [0.2, 1.0]}},
                        grid={"policy": ["byol", "crop_only"]}, algorithm="random", num_samples=2, asha=False,
                        final={"per": "policy", "top_k": 1, "seeds": 2})
    uri = new_store(migrated_store, folder)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        outcome = run_sweep(str(space), SweepOptions(name="perpolicy", storage=str(folder / "runs"), tracking_uri=uri,
                                                     max_failures=0))
    CONSOLE["perpolicy"] = console.getvalue()
    return outcome, folder, uri


def test_each_policys_best_is_retrained_with_the_same_new_seeds_on_the_test_split(per_policy):
    outcome, _, uri = per_policy
    client = MlflowClient(uri)
    trials, finals = runs_of(client, "perpolicy", "trial"), runs_of(client, "perpolicy", "final")
    assert outcome.final_counts == {"completed": 4} and not outcome.interrupted
    assert len(trials) == 4 and len(finals) == 4
    best = {}
    for policy in ("byol", "crop_only"):
        mine = [t for t in trials if t.data.params["policy"] == policy]
        best[policy] = min(mine, key=lambda t: (-t.data.metrics["knn_acc"], t.data.tags["byol_sweep.trial_id"]))  # ties: trial order
    for run in finals:
        p, tags = run.data.params, run.data.tags
        source = best[p["policy"]]
        assert tags["final.source_trial"] == source.data.tags["byol_sweep.trial_id"]
        assert tags["final.group"] == p["policy"] and tags["final.rank"] == "1"
        assert float(p["base_lr"]) == pytest.approx(float(source.data.params["base_lr"]))
        assert p["eval_split"] == "test" and p["knn_bank_size"] == "0" and p["knn_queries"] == "0"
        assert tags["status"] == "completed" and "linear_probe_acc" in run.data.metrics
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")) == [1, 2]
    # the same seeds for every policy (pairs), none of them a search seed
    seeds = {(r.data.params["policy"], r.data.params["seed"]) for r in finals}
    assert seeds == {(p, s) for p in ("byol", "crop_only") for s in ("10000", "10001")}
    parent = runs_of(client, "perpolicy", "sweep")[0]
    assert parent.data.tags["byol_sweep.state"] == "finished"
    for split in ("val", "test"):
        assert 0 < parent.data.metrics[f"baseline.raw_pixels.{split}"] <= 1
    assert parent.data.metrics["baseline.queries.test"] == 269  # every digits test image (70/15/15 split)
    # the final runs fit a linear probe, so the test split's baselines have one too
    for what in ("raw_pixels", "untrained", "untrained_bn"):
        assert 0 < parent.data.metrics[f"baseline.{what}_probe.test"] <= 1
    # the untrained encoder of each final seed's own init, so that each run is compared with its own
    for what in ("untrained", "untrained_bn", "untrained_probe", "untrained_bn_probe"):
        for seed in (10000, 10001):
            assert 0 < parent.data.metrics[f"baseline.{what}.test.seed_{seed}"] <= 1
        assert parent.data.metrics[f"baseline.{what}.test"] == parent.data.metrics[f"baseline.{what}.test.seed_10000"]
    assert not any(k.startswith("baseline.raw_pixels.test.seed_") for k in parent.data.metrics)
    # 4 trials, 2 at a time: the test baselines ran on the slot the search's last trial left idle
    assert "test split measured on the slot the search's last wave left idle" in CONSOLE["perpolicy"]


def test_the_report_leads_with_each_policys_test_result_and_compares_them_paired(per_policy, tmp_path):
    from reports import build_report

    _, _, uri = per_policy
    md = (build_report(["perpolicy"], uri, tmp_path).parent / "report.md").read_text()
    result = md[md.index("## Result"):md.index("## Summary")]
    assert "Selected configuration (policy " in result and "10000, 10001" in result
    assert "| byol |" in result and "| crop_only |" in result
    assert "Baselines on the test split" in result and "269 queries" in result
    assert "| linear probe on raw pixels |" in result
    assert "| kNN on the untrained encoder | " in result and "paired by seed (n 2)" in result
    assert "mean of 2 inits, seeds 10000, 10001" in result and "| SD over the seeds |" in result
    assert "compared at equal tuning budget" in result and "paired by seed" in result
    # the search's own comparison refuses: the policies' trials differ in lr
    comparisons = md[md.index("## Comparisons"):md.index("## Health")]
    assert "Not compared" in comparisons and "base_lr" in comparisons


def test_finalize_runs_the_final_stage_of_a_finished_sweep_once(tmp_path, migrated_store):
    space = write_space(tmp_path, "later", base={"epochs": 2}, grid={"seed": [0]}, algorithm="grid", asha=False)
    uri = new_store(migrated_store, tmp_path)
    storage = str(tmp_path / "runs")
    run_sweep(str(space), SweepOptions(name="later", storage=storage, tracking_uri=uri, max_failures=0))
    client = MlflowClient(uri)
    assert runs_of(client, "later", "final") == []
    outcome = finalize_sweep("later", storage=storage, tracking_uri=uri, final=FinalStage(top_k=1, seeds=2))
    assert outcome.final_counts == {"completed": 2}
    finals = runs_of(client, "later", "final")
    assert sorted(r.data.params["seed"] for r in finals) == ["10000", "10001"]
    # a second call continues the stage from Tune's state: nothing is trained or logged again
    again = finalize_sweep("later", storage=storage, tracking_uri=uri)
    assert again.final_counts == {"completed": 2} and len(runs_of(client, "later", "final")) == 2
    assert runs_of(client, "later", "sweep")[0].data.tags["byol_sweep.state"] == "finished"


def test_every_completed_run_keeps_its_encoder_and_the_selected_one_exports(per_policy, tmp_path):
    import torch

    from sweep.tracking.encoders import encoder_from_run, export_encoder, selected_run
    from trainer.export import load_encoder

    _, _, uri = per_policy
    client = MlflowClient(uri)
    for run in runs_of(client, "perpolicy", "trial") + runs_of(client, "perpolicy", "final"):
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/config.json",
                                                                                      "model/encoder.pt"]
        assert run.data.tags["byol_sweep.trial_dir"]  # the trial's Ray folder, for its checkpoints
    chosen = client.get_run(selected_run(uri, "perpolicy"))
    assert chosen.data.tags["byol_sweep.role"] == "final" and chosen.data.params["seed"] == "10000"
    encoder = load_encoder(export_encoder(uri, chosen.info.run_id, tmp_path / "encoder.pt"))
    assert encoder.config.policy == chosen.data.params["policy"] and not encoder.training
    features = encoder(torch.rand(4, 3, 32, 32))
    assert features.shape == (4, 256) and torch.isfinite(features).all()
    assert torch.equal(encoder_from_run(chosen.info.run_id, uri)(torch.ones(1, 3, 32, 32)),
                       encoder(torch.ones(1, 3, 32, 32)))

