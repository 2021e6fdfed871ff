"""``jobs/label.py``: candidate lists → teacher labels (Ray Data actor pool) → the label store.

One query through it: the dataset's queries and a first stage (a TREC run file, or BM25) give
candidate lists; each list becomes work units (its windows, sampled pairs or documents); units
whose keys are already in the store for this teacher + template hash are dropped before anything
is loaded; the rest go through ``map_batches`` over an actor pool, each actor holding one backend;
every output batch is written atomically as its own Parquet file. One MLflow run per job logs the
teacher, template hash, counts, repair rates and throughput (and, for listwise labels on a judged
collection, the teacher ranking's nDCG@10).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rankdistill.data.candidates import candidate_lists, needed_documents
from rankdistill.data.datasets import DatasetConfig, load_dataset
from rankdistill.data.records import Run
from rankdistill.errors import ConfigError
from rankdistill.evaluation.metrics import evaluate
from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
from rankdistill.retrieval.first_stage import FirstStageConfig, first_stage
from rankdistill.teachers.backends import BackendConfig
from rankdistill.teachers.config import TeacherConfig, check_backend_files, check_teacher, teacher_id
from rankdistill.teachers.listwise import ListwiseConfig
from rankdistill.teachers.pairwise import PairwiseConfig
from rankdistill.teachers.parsing import REPAIR_KINDS
from rankdistill.teachers.pipeline import (
    LabelerSpec,
    PipelineConfig,
    PipelineStats,
    plan_labels,
    run_plan,
)
from rankdistill.teachers.pointwise import PointwiseConfig
from rankdistill.teachers.prompts import load_template
from rankdistill.teachers.store import LabelStore
from rankdistill.tracking import TrackingConfig, start_run
from rankdistill.tracking.mlflow_tracking import write_json

logger = logging.getLogger(__name__)


@dataclass
class LabelConfig:
    kind: str = "listwise"  # listwise | pairwise | pointwise
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    candidates: FirstStageConfig = field(default_factory=lambda: FirstStageConfig(k=100))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    listwise: ListwiseConfig = field(default_factory=ListwiseConfig)
    pairwise: PairwiseConfig = field(default_factory=PairwiseConfig)
    pointwise: PointwiseConfig = field(default_factory=PointwiseConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    store: str = "outputs/labels"
    evaluate: bool = True  # listwise: nDCG@10 of the teacher's final rankings on judged queries
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="label"))
    output_dir: str = "outputs/label"


@dataclass
class LabelSummary:
    kind: str
    teacher: str
    template_id: str
    template_hash: str
    queries: int
    units_total: int
    units_skipped: int
    stats: PipelineStats
    stored_labels: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "teacher": self.teacher, "template_id": self.template_id,
            "template_hash": self.template_hash, "queries": self.queries, "units_total": self.units_total,
            "units_skipped": self.units_skipped, "units_labeled": self.stats.units, "labels_written": self.stats.labels,
            "files_written": self.stats.files, "backend_calls": self.stats.backend_calls,
            "seconds": round(self.stats.seconds, 3), "units_per_second": round(self.stats.units_per_second, 3),
            "repairs": self.stats.repairs, "stored_labels": self.stored_labels, "metrics": self.metrics,
        }


def labeler_spec(config: LabelConfig) -> LabelerSpec:
    if config.kind not in ("listwise", "pairwise", "pointwise"):
        raise ConfigError(f"unknown label kind '{config.kind}' (listwise, pairwise, pointwise)", "kind")
    if config.kind == "listwise":
        config.listwise.check()
    elif config.kind == "pairwise":
        config.pairwise.check()
    return LabelerSpec(
        kind=config.kind, teacher_id=teacher_id(config.teacher), template=config.teacher.template,
        template_overrides=dict(config.teacher.template_overrides), backend=config.teacher.backend,
        listwise=config.listwise, pairwise=config.pairwise, pointwise=config.pointwise,
    )


def _resolve_replay_file(backend: BackendConfig, dataset_root: Path) -> BackendConfig:
    """A relative ``replay_file`` that does not exist as given is looked up in the dataset folder
    (e.g. ``teacher/rankvicuna-7b.bm25.windows.jsonl``)."""
    from rankdistill.storage import is_uri

    if backend.name != "replay" or not backend.replay_file or is_uri(backend.replay_file) \
            or Path(backend.replay_file).exists():
        return backend
    candidate = Path(dataset_root) / backend.replay_file
    if not candidate.exists():
        raise ConfigError(f"replay file '{backend.replay_file}' not found (nor in {dataset_root})",
                          "teacher.backend.replay_file")
    return replace(backend, replay_file=str(candidate))


def _pointwise_reranked(lists, store: LabelStore, config: PairwiseConfig):
    """Each list reordered by its stored pointwise labels (PairDistill's pointwise reranking;
    a duplicate label: the earliest written, :meth:`LabelStore.pointwise_scores`)."""
    from rankdistill.teachers.pairwise import rerank_by_scores

    by_query = store.pointwise_scores(config.rerank_by_teacher, config.rerank_by_template)
    if not by_query:
        raise ConfigError(f"no pointwise labels of teacher '{config.rerank_by_teacher}' (template "
                          f"{config.rerank_by_template}) in the store to rerank by", "pairwise.rerank_by_teacher")
    return [rerank_by_scores(cl, by_query.get(cl.qid, {})) for cl in lists]


def check_before_ray(config: LabelConfig, template) -> None:
    """What can be wrong with the teacher, found before candidates are built and Ray starts."""
    check_teacher(config.teacher, config.kind, template, "teacher")
    backend = config.teacher.backend
    gpus = config.pipeline.gpus_per_actor
    if backend.name == "vllm" and config.pipeline.use_ray and 0 < gpus < backend.tensor_parallel_size:
        raise ConfigError(f"{gpus} GPU(s) per actor cannot hold tensor_parallel_size "
                          f"{backend.tensor_parallel_size}: set pipeline.gpus_per_actor: {backend.tensor_parallel_size}",
                          "pipeline.gpus_per_actor")


def build_candidate_lists(config: LabelConfig):
    data = load_dataset(config.dataset)
    run = first_stage(config.candidates, data, use_ray=False, key="candidates")
    docs = needed_documents(data.folder.iter_corpus(), {d for q in run for d in run[q]})
    lists = list(candidate_lists(run, data.queries, docs, k=config.candidates.k))
    return data, lists


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="unit", disable=not enabled or total == 0, mininterval=1.0)


def run_label(config: LabelConfig) -> LabelSummary:
    """``store`` and ``output_dir`` may be storage URIs (``s3://...``)."""
    from rankdistill.storage import writable_folder

    with writable_folder(config.output_dir) as output:
        return _run_label(config, output)


def _run_label(config: LabelConfig, output: Path) -> LabelSummary:
    spec = labeler_spec(config)
    template = load_template(spec.template, spec.template_overrides)
    check_before_ray(config, template)
    store = LabelStore(config.store)
    store.cleanup()
    data, lists = build_candidate_lists(config)
    spec.backend = _resolve_replay_file(spec.backend, data.folder.root)
    if config.kind == "pairwise" and config.pairwise.rerank_by_teacher:
        lists = _pointwise_reranked(lists, store, config.pairwise)
    plan = plan_labels(lists, spec, store)
    print(f"label {config.kind}: teacher {spec.teacher_id}, template {template.id} ({template.hash}); "
          f"{len(lists)} queries, {len(plan.units)} units, {len(plan.units) - len(plan.pending)} already stored, "
          f"{len(plan.pending)} to label", flush=True)
    on_ray = bool(plan.pending) and config.pipeline.use_ray
    started = init_ray(config.ray) if on_ray else False
    try:
        if on_ray:
            check_backend_files(spec.backend)
        result = run_plan(plan, store, config.pipeline, desc=f"labeling ({config.kind})")
    finally:
        shutdown_ray(started, config.ray)
    units, pending, stats = plan.units, plan.pending, result.stats

    summary = LabelSummary(
        kind=config.kind, teacher=spec.teacher_id, template_id=template.id, template_hash=template.hash,
        queries=len(lists), units_total=len(units), units_skipped=len(units) - len(pending), stats=stats,
        stored_labels=store.count(config.kind, spec.teacher_id, template.hash),
    )
    summary.metrics = _metrics(config, summary, store, data, lists)
    _report(config, summary, output)
    return summary


def _metrics(config: LabelConfig, summary: LabelSummary, store: LabelStore, data, lists) -> dict[str, float]:
    stats = summary.stats
    metrics: dict[str, float] = {
        "units_total": summary.units_total, "units_skipped": summary.units_skipped, "units_labeled": stats.units,
        "labels_written": stats.labels, "files_written": stats.files, "backend_calls": stats.backend_calls,
        "seconds": stats.seconds, "units_per_second": stats.units_per_second,
        "labels_per_second": stats.labels / stats.seconds if stats.seconds > 0 else 0.0,
        "stored_labels": summary.stored_labels,
    }
    if config.kind == "listwise":
        windows = sum(stats.repairs.values())
        for kind in REPAIR_KINDS:
            metrics[f"repair_rate_{kind}"] = stats.repairs[kind] / windows if windows else 0.0
        if config.evaluate and data.qrels:
            rankings = store.final_rankings(summary.teacher, summary.template_hash)
            by_qid = {cl.qid: cl for cl in lists}
            reranked = {q: r for q, r in rankings.items() if q in by_qid and q in data.qrels}
            if reranked:
                # ranking_after holds the whole list (below rank_end: first-stage order)
                run = Run({q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in reranked.items()})
                qrels = data.qrels.restricted_to(run)
                result = evaluate(run, qrels, ["nDCG@10"], data.spec.relevance_threshold)
                metrics["teacher_nDCG@10"] = result.aggregate["nDCG@10"]
                metrics["teacher_evaluated_queries"] = len(run)
    return metrics


def _report(config: LabelConfig, summary: LabelSummary, output: Path) -> None:
    stats = summary.stats
    line = (f"labeled {stats.units} units ({stats.labels} labels, {stats.files} files, {stats.backend_calls} backend "
            f"calls) in {stats.seconds:.1f} s; skipped {summary.units_skipped}; store holds {summary.stored_labels}")
    if config.kind == "listwise" and sum(stats.repairs.values()):
        line += "; repairs " + ", ".join(f"{k} {v}" for k, v in stats.repairs.items())
    if "teacher_nDCG@10" in summary.metrics:
        line += f"; teacher nDCG@10 {summary.metrics['teacher_nDCG@10']:.4f}"
    print(line, flush=True)
    path = write_json(summary.to_dict(), output / "label_summary.json")
    tags = {"job": "label", "kind": summary.kind, "teacher": summary.teacher, "template": summary.template_id,
            "template_hash": summary.template_hash, "dataset": config.dataset.name}
    with start_run(config.tracking, tags=tags) as tracker:
        tracker.log_config(config)
        tracker.log_params({"teacher_id": summary.teacher, "template_hash": summary.template_hash,
                            "num_queries": summary.queries})
        tracker.log_metrics(summary.metrics)
        tracker.log_artifact(path, "labels")
        if tracker.active:
            print(f"MLflow run {tracker.run_id} ({config.tracking.experiment})", flush=True)
