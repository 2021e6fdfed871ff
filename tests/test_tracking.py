"""MLflow tracking: embedded sqlite default, env override, safe names, artifacts, registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rankdistill.tracking import TrackingConfig, mlflow_safe_name, start_run, tracking_uri


@pytest.mark.parametrize(
    "name,safe",
    [("nDCG@10", "nDCG_at_10"), ("RR(rel=2)@10", "RR_rel_2_at_10"), ("AP(rel=2)", "AP_rel_2"),
     ("loss/train", "loss/train"), ("R@1000", "R_at_1000")],
)
def test_mlflow_safe_name(name, safe):
    assert mlflow_safe_name(name) == safe


def test_default_uri_is_sqlite_under_output_and_env_overrides(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/db.sqlite")
    assert tracking_uri(TrackingConfig(), tmp_path) == "sqlite:////elsewhere/db.sqlite"
    assert tracking_uri(TrackingConfig(uri="file:///x"), tmp_path) == "file:///x"


@dataclass
class Inner:
    lr: float = 1e-5


@dataclass
class Job:
    inner: Inner = field(default_factory=Inner)
    name: str = "demo"


def test_run_logs_params_metrics_artifacts_and_registers_model(tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "run.trec").write_text("q Q0 d 1 1.0 t\n")
    with start_run(TrackingConfig(experiment="t"), tmp_path, tags={"job": "test"}) as tracker:
        tracker.log_config(Job())
        tracker.log_metrics({"nDCG@10": 0.5, "RR(rel=2)@10": 0.25})
        tracker.log_artifact(tmp_path / "run.trec", "runs")
        version = tracker.register_model(tmp_path / "model", "tiny-reranker", tags={"arch": "mono"})
        run_id = tracker.run_id
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.params["inner.lr"] == "1e-05" and run.data.params["name"] == "demo"
    assert run.data.metrics == {"nDCG_at_10": 0.5, "RR_rel_2_at_10": 0.25}
    assert run.data.tags["job"] == "test"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "runs", "model"} <= artifacts
    mv = client.get_model_version("tiny-reranker", version)
    assert mv.tags["arch"] == "mono" and mv.run_id == run_id
    assert (tmp_path / "mlruns" / "mlflow.db").exists()


def test_disabled_tracking_is_a_no_op(tmp_path: Path):
    with start_run(TrackingConfig(enabled=False), tmp_path) as tracker:
        tracker.log_metrics({"x": 1.0})
        assert not tracker.active
    assert not (tmp_path / "mlruns").exists()


def test_two_jobs_in_one_process_log_to_their_own_stores(tmp_path: Path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a finished run must not leak it."""
    import os

    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ids = []
    for name in ("first", "second"):
        with start_run(TrackingConfig(experiment="t"), tmp_path / name) as tracker:
            tracker.log_metrics({"x": 1.0})
            ids.append(tracker.run_id)
        assert "MLFLOW_TRACKING_URI" not in os.environ
    for name, run_id in zip(("first", "second"), ids, strict=True):
        client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / name).resolve()}/mlruns/mlflow.db")
        assert client.get_run(run_id).data.metrics == {"x": 1.0}
