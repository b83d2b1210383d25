"""`export` of a completed run whose encoder never reached MLflow: from what its trial left on disk."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from sweep.errors import SweepError
from sweep.tracking.encoders import export_encoder
from trainer import TrainConfig, Trainer
from trainer.export import load_encoder


def run_with(uri: str, tags: dict[str, str]) -> str:
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e{len(client.search_experiments())}")
    return client.create_run(exp, run_name="trial_x", tags=tags).info.run_id


def test_a_completed_run_without_a_logged_encoder_exports_from_its_trial_folders_checkpoint(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trial = tmp_path / "trial"
    (trial / "checkpoint_000001").mkdir(parents=True)
    Trainer(TrainConfig(dataset="digits", epochs=1, batch_size=64)).save(trial / "checkpoint_000001" / "trainer.pt")
    run_id = run_with(uri, {"status": "completed", "byol_sweep.trial_dir": str(trial)})
    out = export_encoder(uri, run_id, tmp_path / "enc.pt")
    assert load_encoder(out) is not None

    gone = run_with(uri, {"status": "completed", "byol_sweep.trial_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(SweepError, match=r"has no logged encoder, and its trial's folder .* is not on this machine"):
        export_encoder(uri, gone, tmp_path / "enc2.pt")
    stopped = run_with(uri, {"status": "stopped_early", "byol_sweep.trial_dir": str(trial)})
    with pytest.raises(SweepError, match="only trials that ran the full budget"):
        export_encoder(uri, stopped, tmp_path / "enc3.pt")
