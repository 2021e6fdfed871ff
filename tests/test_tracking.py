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


def test_default_uri_is_the_machines_one_home_and_env_overrides(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RANKDISTILL_HOME", str(tmp_path / "home"))
    assert tracking_uri(TrackingConfig()) == f"sqlite:///{(tmp_path / 'home').resolve()}/mlruns/mlflow.db"
    monkeypatch.delenv("RANKDISTILL_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert tracking_uri() == f"sqlite:///{(tmp_path / 'user').resolve()}/.rankdistill/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(TrackingConfig()) == "http://127.0.0.1:5000"
    assert tracking_uri(TrackingConfig(uri="file:///x")) == "file:///x"


@pytest.mark.parametrize("uri,local", [("sqlite:////a/b.db", True), ("file:///x", True), ("/tmp/mlruns", True),
                                       ("mlruns", True), ("http://head:5000", False), ("https://m.example", False),
                                       ("databricks", True)])
def test_machine_local_stores(uri, local):
    from rankdistill.tracking.mlflow_tracking import is_machine_local

    assert is_machine_local(uri) is local


def test_run_names_say_what_ran():
    from rankdistill.tracking.mlflow_tracking import run_name_for

    assert run_name_for({"job": "train_reranker", "architecture": "mono", "loss": "infonce",
                         "dataset": "nfcorpus"}) == "train_reranker mono nfcorpus"
    assert run_name_for({"job": "evaluate", "dataset": "demo", "split": "test", "first_stage": "bm25"}) == \
        "evaluate bm25 demo test"
    assert run_name_for({}) is None


@dataclass
class Inner:
    lr: float = 1e-5


@dataclass
class Job:
    inner: Inner = field(default_factory=Inner)
    name: str = "demo"


def test_run_logs_params_metrics_artifacts_and_registers_model(tmp_path: Path, monkeypatch, rankdistill_home):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "run.trec").write_text("q Q0 d 1 1.0 t\n")
    with start_run(TrackingConfig(experiment="t"), tags={"job": "test"}) as tracker:
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
    assert {"config.yaml", "runs"} <= artifacts
    mv = client.get_model_version("tiny-reranker", version)
    assert mv.tags["arch"] == "mono" and mv.run_id == run_id
    assert client.get_run(run_id).info.run_name == "test"
    assert (rankdistill_home / "mlruns" / "mlflow.db").exists()


def test_disabled_tracking_is_a_no_op(tmp_path: Path, rankdistill_home):
    with start_run(TrackingConfig(enabled=False)) as tracker:
        tracker.log_metrics({"x": 1.0})
        assert not tracker.active
    assert not (rankdistill_home / "mlruns").exists()


def test_jobs_share_one_store_and_do_not_leak_the_uri(tmp_path: Path, monkeypatch):
    """Two jobs in one process land in the machine's one store (so the UI compares them), and
    mlflow.set_tracking_uri's export of MLFLOW_TRACKING_URI does not outlive a run."""
    import os

    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ids = []
    for job in ("evaluate", "train_reranker"):
        with start_run(TrackingConfig(experiment="t"), tags={"job": job}) as tracker:
            tracker.log_metrics({"test/nDCG@10": 0.5})
            ids.append(tracker.run_id)
        assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    assert {r.info.run_name for r in runs} == {"evaluate", "train_reranker"}
    assert all(r.data.metrics == {"test/nDCG_at_10": 0.5} for r in runs)


def test_nested_runs_are_children_in_the_parents_experiment(monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with start_run(TrackingConfig(experiment="jobs"), tags={"job": "pairdistill"}) as parent:
        for i in range(2):
            with start_run(TrackingConfig(experiment="jobs"), tags={"job": f"pairdistill iteration {i}"},
                           nested=True) as child:
                child.log_metrics({"dev/nDCG@10": 0.1 * i})
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("jobs").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.run_id]
    assert sorted(r.info.run_name for r in children) == ["pairdistill iteration 0", "pairdistill iteration 1"]


def test_a_registered_student_is_found_in_its_downloaded_model(tmp_path: Path, monkeypatch):
    """``models:/NAME/1`` downloads MLflow's model folder; the student folder sits where its MLmodel
    says (``artifacts/<original folder name>``), which serving and evaluation load from."""
    import mlflow
    from rankdistill.tracking.models import resolve_model_source

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    student = tmp_path / "my-student"
    student.mkdir()
    (student / "config.json").write_text('{"model_type": "x"}')
    with start_run(TrackingConfig(experiment="t"), tags={"job": "test"}) as tracker:
        version = tracker.register_model(student, "found-student")
    mlflow.set_tracking_uri(tracking_uri())
    folder = resolve_model_source(f"models:/found-student/{version}", tracking_uri=tracking_uri())
    assert folder.name == "my-student" and (folder / "config.json").read_text() == '{"model_type": "x"}'
