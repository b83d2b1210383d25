"""Tracking URIs: resolution, secrets never shown, unusable stores refused before any trial."""
from __future__ import annotations

import pytest

from sweep.secrets import mask_secrets
from sweep.tracking import TrackingError, check_store, mask_uri, resolve_tracking_uri


def test_default_store_is_an_absolute_sqlite_file_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///sub/x.db") == f"sqlite:///{tmp_path}/sub/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(None) == "http://tracking:5000"


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cret@host:5000", "http://alice:***@host:5000"),
    ("https://tok3n@host/mlflow", "https://***@host/mlflow"),
    ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
    ("http://host:5000/?x=1&API_KEY=abc#f", "http://host:5000/?x=1&API_KEY=***#f"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("databricks://profile", "databricks://profile"),
])
def test_secrets_are_masked(uri, shown):
    assert mask_uri(uri) == shown


def test_secrets_are_masked_inside_any_text():
    text = "failed: url http://bob:pw@h:1/api?token=t0k&run=1 then https://tok@h2/x (retry)"
    assert mask_secrets(text) == "failed: url http://bob:***@h:1/api?token=***&run=1 then https://***@h2/x (retry)"


def test_an_unreachable_server_fails_fast_with_one_sentence():
    with pytest.raises(TrackingError) as err:
        check_store("http://bob:hunter2@127.0.0.1:9")
    message = str(err.value)
    assert "unreachable" in message and "hunter2" not in message and "bob:***@127.0.0.1:9" in message


def test_a_store_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        check_store(f"sqlite:///{tmp_path}/missing/mlflow.db")
