"""The PairDistill job end to end on the demo slice with tiny random models: a mono teacher
(pointwise) and a duo teacher (pairwise) through the ``reranker`` backend, a tiny bi-encoder
student; MLflow parent run, one child per iteration, a registered pyfunc model; a second run
pays for no label twice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rankdistill.config import load_config
from rankdistill.errors import ConfigError
from rankdistill.tracking import tracking_uri
from rankdistill.workflows.pairdistill import PairDistillConfig, load_splits

REPO = Path(__file__).resolve().parents[1]


def tiny_models(root: Path) -> dict[str, Path]:
    from model_fixtures import tiny_reranker

    paths = {}
    for name, options in (("mono", {}), ("duo", {}), ("bi-encoder", {"pooling": "mean", "similarity": "dot"})):
        paths[name] = root / name
        if not (paths[name] / "config.json").exists():
            tiny_reranker(name, **options).save_pretrained(paths[name])
    return paths


def tiny_overrides(tmp_path: Path, models: dict[str, Path]) -> list[str]:
    return [
        f"student.init_from={models['bi-encoder']}", "student.architecture=bi-encoder",
        "pointwise_teacher.id=tiny-mono", f"pointwise_teacher.backend={{name: reranker, model: {models['mono']}}}",
        "pairwise_teacher.id=tiny-duo", f"pairwise_teacher.backend={{name: reranker, model: {models['duo']}}}",
        "splits.dev_queries=8", "candidates.k=8", "pointwise.top_k=8",
        "pairwise={top_k: 8, delta: 4, pairs_per_query: 4, seed: 0}", "examples.passages_per_query=6",
        "training.max_steps=3", "training.batch_size=4", "training.log_every=1", "training.num_workers=1",
        "training.cpus_per_worker=1",
        "pipeline.progress=false", "pipeline.batch_size=64", f"label_store={tmp_path / 'labels'}",
        f"output_dir={tmp_path / 'out'}", "tracking.register_model=tiny-pairdistill",
    ]


def test_shipped_pairdistill_configs_validate():
    for name in ("quickstart.yaml", "pairdistill-gpu.yaml"):
        config = load_config(PairDistillConfig, REPO / "configs" / name)
        config.check()


@pytest.mark.parametrize("override,match", [
    ("iterations=0", "iterations: must be >= 1"),
    ("candidates.method=dense", "candidates.method: must be one of bm25, run, student, got 'dense'"),
    ("candidates.method=run", "needs candidates.run"),
    ("candidates.k=1", "candidates.k: must be >= 2"),
    ("loss.name=infonce", "PairDistill trains with 'pairdistill'"),
    ("student.architecture=mono", "'mono' is not a dense student"),
])
def test_bad_configs_fail_before_ray(override: str, match: str):
    with pytest.raises(ConfigError, match=match):
        load_config(PairDistillConfig, REPO / "configs" / "quickstart.yaml", [override]).check()


@pytest.mark.parametrize("old,new", [
    ("candidates.first_stage=bm25", "candidates.method"),
    ("candidates.depth=20", "candidates.k"),
    ("candidates.bm25_shards=2", "candidates.num_shards"),
])
def test_the_old_candidate_keys_are_refused_naming_the_new_one(old: str, new: str, tmp_path: Path):
    key = old.split("=")[0]
    with pytest.raises(ConfigError) as info:
        load_config(PairDistillConfig, REPO / "configs" / "quickstart.yaml", [old])
    assert info.value.key == key and f"{key} is now {new}" in str(info.value)
    path = tmp_path / "old.yaml"
    path.write_text(f"candidates:\n  {key.split('.')[1]}: {old.split('=')[1]}\n")
    with pytest.raises(ConfigError, match=f"{path}: {key}: renamed: {key} is now {new}"):
        load_config(PairDistillConfig, path)


def test_the_dev_check_warns_naming_both_figures():
    from rankdistill.workflows.pairdistill import teacher_below_student

    assert teacher_below_student("mono", 0.62, 0.61, "nDCG@10") is None
    message = teacher_below_student("mono", 0.3797, 0.6362, "nDCG@10")
    assert "mono" in message and "nDCG@10 0.3797 (teacher) vs 0.6362 (zero-shot student)" in message
    assert teacher_below_student("mono", 0.5, 0.5, "RR@10") is not None  # equal is not above


def test_dev_is_carved_from_train_and_not_trained_on(demo):
    from rankdistill.data.datasets import resolve
    from rankdistill.workflows.pairdistill import SplitsConfig

    spec, folder = resolve("demo")
    splits = load_splits(SplitsConfig(dev_queries=8, seed=13), spec, folder)
    again = load_splits(SplitsConfig(dev_queries=8, seed=13), spec, folder)
    assert len(splits.dev) == 8 and len(splits.train) == 32 - 8 and len(splits.test) == 16
    assert not set(splits.dev) & set(splits.train)
    assert sorted(splits.dev) == sorted(again.dev)  # seeded: the same dev set every run
    assert "carved with seed 13" in splits.dev_source


@pytest.mark.slow
def test_pairdistill_job_tracks_registers_and_pays_for_no_label_twice(tmp_path: Path, local_ray, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from rankdistill.models import load_student
    from rankdistill.workflows.pairdistill import run_pairdistill

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    models = tiny_models(tmp_path / "models")
    cache = f"candidates.index_cache={tmp_path / 'index-cache'}"
    config = load_config(PairDistillConfig, REPO / "configs" / "quickstart.yaml",
                         [*tiny_overrides(tmp_path, models), cache])
    first = run_pairdistill(config)
    assert first["teacher_calls"] > 0
    names = [s["name"] for s in first["stages"]]
    assert names[0] == "first stage (BM25)" and names[-3:] == ["student zero-shot", "student iteration 1",
                                                               "student iteration 2"]
    assert (tmp_path / "out" / "iteration-2" / "index").exists()
    # every student's dev and test runs are published: evaluated again, they give the table's figures
    from rankdistill.data.trec import read_trec_run
    from rankdistill.workflows.pairdistill import PairDistill

    job = PairDistill(config)
    for n, name in enumerate(["student zero-shot", "student iteration 1", "student iteration 2"]):
        (stage,) = [s for s in first["stages"] if s["name"] == name]
        for split in ("dev", "test"):
            run = read_trec_run(tmp_path / "out" / f"iteration-{n}" / f"{split}.trec")
            assert job._evaluate(run, split).aggregate["nDCG@10"] == pytest.approx(stage[split]["nDCG@10"], abs=1e-9)
    # the dev check: the teacher's dev figure beside the zero-shot student's, in the table and summary
    assert names[-4] == "teacher tiny-mono reranking dev candidates" and "nDCG@10" in first["teacher_dev"]
    assert first["stages"][-4]["dev"] == first["teacher_dev"] and first["stages"][-4]["test"] == {}
    # every row counts the teacher calls paid for it: the checks' rows too (was: 0 in the dev check's row)
    calls = {s["name"]: s["teacher_calls"] for s in first["stages"]}
    assert calls["teacher tiny-mono reranking dev candidates"] > 0
    assert calls["teacher tiny-mono reranking first stage"] > 0
    assert sum(calls.values()) == first["teacher_calls"]

    client = MlflowClient(tracking_uri=tracking_uri())
    experiment = client.get_experiment_by_name("pairdistill")
    runs = client.search_runs([experiment.experiment_id])
    parent = client.get_run(first["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["iteration"] for r in children) == ["0", "1", "2"]
    for child in children:
        assert "dev/nDCG_at_10" in child.data.metrics and "test/nDCG_at_10" in child.data.metrics
    trained = [c for c in children if c.data.tags["iteration"] != "0"]
    assert all(c.data.metrics["train_steps"] == 3 for c in trained)
    assert "best_dev/nDCG_at_10" in parent.data.metrics and parent.info.run_name.startswith("pairdistill bi-encoder demo")

    version = client.get_model_version("tiny-pairdistill", first["registered_version"])
    assert version.tags["pointwise_teacher"] == "tiny-mono" and version.tags["parent_run"] == parent.info.run_id
    assert version.tags["pointwise_labels"].startswith("tiny-mono/")
    mlflow.set_tracking_uri(tracking_uri())
    loaded = mlflow.pyfunc.load_model(f"models:/tiny-pairdistill/{first['registered_version']}")
    texts = ["a cat sat", "vitamin d and bone density"]
    vectors = loaded.predict(pd.DataFrame({"text": texts, "kind": ["query", "passage"]}))
    student = load_student(first["best_model_dir"])
    expected = [student.encode_queries(texts[:1])[0].tolist(), student.encode_passages(texts[1:])[0].tolist()]
    np.testing.assert_allclose(np.asarray(vectors), np.asarray(expected), atol=1e-5)

    # the same job again: every label is in the store already
    # (one iteration is enough: its candidates, iteration 1's, and the teacher's test labels are stored)
    second = run_pairdistill(load_config(PairDistillConfig, REPO / "configs" / "quickstart.yaml",
                                         [*tiny_overrides(tmp_path, models), "iterations=1", cache,
                                          f"output_dir={tmp_path / 'out2'}"]))
    assert second["teacher_calls"] == 0
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["teacher_calls"] == 0
    # the zero-shot student is the same: its index came from the cache, nothing was encoded again,
    # and it retrieves what the first run's did
    assert (tmp_path / "out2" / "iteration-0" / "index").exists()
    assert not (tmp_path / "out2" / "iteration-0" / "embeddings").exists()
    assert (tmp_path / "out" / "iteration-0" / "embeddings").exists()
    (zero_first,) = [s for s in first["stages"] if s["name"] == "student zero-shot"]
    (zero_second,) = [s for s in second["stages"] if s["name"] == "student zero-shot"]
    assert zero_second == {**zero_first, "model_dir": str(tmp_path / "out2" / "iteration-0" / "model")}


def test_teachers_leave_out_the_dev_queries_the_job_carves(demo):
    """``make teachers`` trains the quickstart's teachers with ``data.holdout_queries=8
    data.holdout_seed=13``: their examples must cover exactly the quickstart's training queries,
    none of its dev queries."""
    import re

    from rankdistill.data.datasets import resolve
    from rankdistill.training.examples import ExamplesConfig, build_examples

    quickstart = load_config(PairDistillConfig, REPO / "configs" / "quickstart.yaml", [])
    splits = load_splits(quickstart.splits, *resolve(quickstart.dataset))
    make = (REPO / "Makefile").read_text()
    held, seed = map(int, re.search(r"data\.holdout_queries=(\d+) data\.holdout_seed=(\d+)", make).groups())
    assert (held, seed) == (quickstart.splits.dev_queries, quickstart.splits.seed)
    rows = build_examples(ExamplesConfig(dataset="demo", holdout_queries=held, holdout_seed=seed))
    assert {r["qid"] for r in rows} == set(splits.train)
    everything = build_examples(ExamplesConfig(dataset="demo"))
    assert set(splits.dev) <= {r["qid"] for r in everything}  # without the holdout they are trained on
