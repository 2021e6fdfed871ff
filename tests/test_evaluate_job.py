"""jobs/evaluate.py's workflow end to end: BM25 on Ray or a given run → ir-measures → MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_dataset
from rankdistill.config import load_config
from rankdistill.tracking import tracking_uri
from rankdistill.workflows.evaluate import EvaluateConfig, run_evaluate

REPO = Path(__file__).resolve().parents[1]


def mlflow_run(output: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri())  # the machine's one embedded store
    (experiment,) = [e for e in client.search_experiments() if e.name == "evaluate"]
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def test_evaluate_demo_bm25_on_ray_logs_to_mlflow(tmp_path: Path, local_ray, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(EvaluateConfig, REPO / "configs" / "evaluate.yaml", [f"output_dir={tmp_path}"])
    result = run_evaluate(config)
    assert result.num_queries == 16  # the demo slice's test queries
    # BM25 (k1 0.9, b 0.4, Lucene, English stemming) on the demo slice; the same figure comes out of
    # ir-measures reading the written run and the SciFact qrels files directly (not our reader)
    assert round(result.aggregate["nDCG@10"], 4) == 0.8371
    import ir_measures

    demo = shared_dataset("demo")[1]
    judged = set(demo.qrels("test"))
    qrels: dict[str, dict[str, int]] = {}
    for line in demo.qrels_path("test").read_text().splitlines()[1:]:  # BEIR TSV with a header
        qid, docid, grade = line.split("\t")
        if qid in judged:
            qrels.setdefault(qid, {})[docid] = int(grade)
    run = list(ir_measures.read_trec_run(str(tmp_path / "run.trec")))
    assert ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10] == pytest.approx(
        result.aggregate["nDCG@10"], abs=1e-9)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["aggregate"]["nDCG@10"] == pytest.approx(result.aggregate["nDCG@10"])
    assert set(saved["per_query"]) == set(result.per_query)
    client, run = mlflow_run(tmp_path)
    assert run.data.metrics["test/nDCG_at_10"] == pytest.approx(result.aggregate["nDCG@10"])
    assert run.data.params["dataset.name"] == "demo" and run.data.params["retrieval.bm25.k1"] == "0.9"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "runs", "evaluation", "plots"} <= artifacts


@pytest.mark.shared_data
def test_scifact_bm25_matches_published_range(tmp_path: Path, local_ray, monkeypatch):
    shared_dataset("scifact")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(EvaluateConfig, REPO / "configs" / "evaluate.yaml",
                         ["dataset.name=scifact", f"output_dir={tmp_path}"])
    result = run_evaluate(config)
    assert 0.66 <= result.aggregate["nDCG@10"] <= 0.69  # published BM25: 0.665-0.679
    assert result.num_queries == 300
    _, run = mlflow_run(tmp_path)
    assert run.data.metrics["test/nDCG_at_10"] == pytest.approx(result.aggregate["nDCG@10"])


@pytest.mark.shared_data
@pytest.mark.parametrize("run_name,ndcg", [("bm25.trec", 0.5058), ("bm25.rankvicuna-7b.trec", 0.6682)])
def test_trec_dl_2019_given_runs(tmp_path: Path, monkeypatch, run_name, ndcg):
    shared_dataset("trec-dl-2019-passage")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(EvaluateConfig, REPO / "configs" / "evaluate-trec-dl-2019.yaml",
                         [f"retrieval.run={run_name}", f"output_dir={tmp_path}"])
    result = run_evaluate(config)
    assert round(result.aggregate["nDCG@10"], 4) == ndcg
    _, run = mlflow_run(tmp_path)
    assert round(run.data.metrics["test/nDCG_at_10"], 4) == ndcg
    assert run.data.tags["first_stage"] == run_name
