"""``jobs/train_reranker.py``: examples (qrels + hard negatives, or teacher labels) → Ray Train
(DDP / DeepSpeed) → rerank a first-stage run on Ray → ir-measures → MLflow (+ model registry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankdistill.config import check_range
from rankdistill.data.candidates import candidate_lists
from rankdistill.data.datasets import DatasetConfig, load_dataset, resolve, resolve_run_path
from rankdistill.data.trec import read_trec_run, write_trec_run
from rankdistill.errors import ConfigError
from rankdistill.evaluation.metrics import DEFAULT_MEASURES, evaluate
from rankdistill.evaluation.rerank import RerankConfig, rerank_on_ray
from rankdistill.evaluation.runner import per_query_figure
from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
from rankdistill.retrieval.bm25 import BM25Index
from rankdistill.tracking import TrackingConfig, start_run
from rankdistill.tracking.mlflow_tracking import check_reachable_from_workers, write_json
from rankdistill.training import TrainingConfig, fit
from rankdistill.training.examples import ExamplesConfig, training_rows
from rankdistill.training.factories import (
    LossConfig,
    LossFactory,
    StudentConfig,
    StudentFactory,
    check_student,
    extra_fields,
)


@dataclass
class RerankEvalConfig:
    """Rerank ``first_stage_run`` (TREC path or dataset ``runs/`` name; null: BM25) on a split."""

    enabled: bool = True
    dataset: str | None = None  # default: the training dataset
    split: str = "test"
    first_stage_run: str | None = None
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    relevance_threshold: int | None = None
    max_queries: int | None = None
    rerank: RerankConfig = field(default_factory=RerankConfig)

    def __post_init__(self) -> None:
        check_range("max_queries", self.max_queries, minimum=1)
        check_range("relevance_threshold", self.relevance_threshold, minimum=1)
        if not self.measures:
            raise ConfigError("needs at least one measure", "measures")


@dataclass
class TrainRerankerConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: ExamplesConfig = field(default_factory=ExamplesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: RerankEvalConfig = field(default_factory=RerankEvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="train_reranker"))
    output_dir: str = "outputs/train_reranker"  # a folder, or a storage URI (s3://...) on clusters


def train_stages(config: TrainRerankerConfig, rows: list[dict[str, Any]], output: Path, tracking):
    """One Ray Train run, or two when the first ``freeze_backbone_steps`` train with the
    embedding model frozen (ListConRanker's first stage) and the rest fine-tune everything."""
    import dataclasses

    import ray.data

    training = config.training
    extras = extra_fields(rows, config.loss)
    # a checkpoint in the same run folder is only resumed for the same student, loss and data
    identity = {"student": dataclasses.asdict(config.student), "loss": dataclasses.asdict(config.loss),
                "data": dataclasses.asdict(config.data)}
    frozen = training.freeze_backbone_steps
    if frozen <= 0:
        return fit(StudentFactory(config.student), LossFactory(config.loss), ray.data.from_items(rows),
                   training, output, tracking=tracking, extra_fields=extras, identity=identity)
    check_freeze(config)
    stage1 = dataclasses.replace(training, max_steps=frozen, run_name=f"{training.run_name}-frozen")
    first = fit(StudentFactory(config.student, freeze_backbone=True), LossFactory(config.loss),
                ray.data.from_items(rows), stage1, output / "stage1", tracking=tracking, extra_fields=extras,
                identity=identity)
    stage2 = dataclasses.replace(training, max_steps=training.max_steps - frozen)
    return fit(StudentFactory(config.student, init_from=str(first.model_dir), freeze_backbone=False),
               LossFactory(config.loss), ray.data.from_items(rows), stage2, output, tracking=tracking,
               extra_fields=extras, step_offset=first.steps, identity=identity)


def check_freeze(config: TrainRerankerConfig) -> None:
    from rankdistill.models import get_reranker_class

    frozen, training = config.training.freeze_backbone_steps, config.training
    if not hasattr(get_reranker_class(config.student.architecture), "freeze_embedding_model"):
        raise ConfigError(f"'{config.student.architecture}' has no embedding model to freeze",
                          "training.freeze_backbone_steps")
    if frozen >= training.max_steps:
        raise ConfigError("must be smaller than training.max_steps", "training.freeze_backbone_steps")


def check_before_ray(config: TrainRerankerConfig) -> None:
    """Everything that can be checked on the driver before examples are built and Ray starts:
    the student (architecture, options, backbone / init_from folder), the loss, the two-stage
    schedule, the evaluation's dataset and first-stage run. Errors name the config key."""
    check_student(config.student, config.loss)
    if config.training.freeze_backbone_steps > 0:
        check_freeze(config)
    if config.evaluation.enabled:
        ev = config.evaluation
        _, folder = resolve(ev.dataset or config.data.dataset, "evaluation.dataset" if ev.dataset else "data.dataset")
        if ev.first_stage_run:
            resolve_run_path(ev.first_stage_run, folder, "evaluation.first_stage_run")


def run_train_reranker(config: TrainRerankerConfig) -> dict[str, Any]:
    """``output_dir`` may be a storage URI (``s3://...``): the job writes into a local staging
    folder and uploads it at the end; Ray Train then stores under ``<output_dir>/ray_train``
    unless ``training.storage_path`` says otherwise."""
    import dataclasses

    from rankdistill.storage import is_uri, join, writable_folder

    check_before_ray(config)

    if is_uri(config.output_dir) and not config.training.storage_path:
        config = dataclasses.replace(config, training=dataclasses.replace(
            config.training, storage_path=join(config.output_dir, "ray_train")))
    with writable_folder(config.output_dir if is_uri(config.output_dir)
                         else Path(config.output_dir).resolve()) as output:
        summary = _train_reranker(config, output)
        if is_uri(config.output_dir):
            summary["model_dir"] = join(config.output_dir, "model")
        write_json(summary, output / "summary.json")
    return summary


def _train_reranker(config: TrainRerankerConfig, output: Path) -> dict[str, Any]:
    rows = training_rows(config.data, config.student.architecture, config.loss.name)
    extra_fields(rows, config.loss)  # rows and loss agree (before Ray starts)
    started = init_ray(config.ray)
    summary: dict[str, Any] = {"num_examples": len(rows)}
    tags = {"job": "train_reranker", "architecture": config.student.architecture, "loss": config.loss.name,
            "dataset": config.data.dataset, "strategy": config.training.strategy}
    try:
        with start_run(config.tracking, tags=tags) as tracker:
            tracker.log_config(config)
            tracker.log_params({"num_examples": len(rows)})
            tracking = tracker.worker_handle()
            if tracking:
                check_reachable_from_workers(tracking["uri"])
            result = train_stages(config, rows, output, tracking)
            summary.update(model_dir=str(result.model_dir), steps=result.steps)
            print(f"trained {config.student.architecture} for {result.steps} steps -> {result.model_dir}", flush=True)
            if config.evaluation.enabled:
                metrics = evaluate_student(result.model_dir, config, output, tracker)
                summary["metrics"] = metrics
            if config.tracking.register_model:
                version = tracker.register_model(result.model_dir, config.tracking.register_model,
                                                 tags={**tags, **{k: f"{v:.4f}" for k, v in summary.get("metrics", {}).items()}})
                summary["registered_version"] = version
    finally:
        shutdown_ray(started, config.ray)
    return summary


def evaluate_student(model_dir: Path, config: TrainRerankerConfig, output: Path, tracker) -> dict[str, float]:
    ev = config.evaluation
    data = load_dataset(DatasetConfig(ev.dataset or config.data.dataset, ev.split, ev.max_queries),
                        "evaluation.dataset" if ev.dataset else "data.dataset")
    spec, folder, queries, qrels = data.spec, data.folder, data.queries, data.qrels
    corpus = folder.corpus()
    if ev.first_stage_run:
        first = read_trec_run(resolve_run_path(ev.first_stage_run, folder, "evaluation.first_stage_run"))
        first = type(first)({q: d for q, d in first.items() if q in queries})
    else:
        first = BM25Index().index(corpus.values(), show_progress=False).search(list(queries.values()), ev.rerank.depth)
    lists = list(candidate_lists(first, queries, corpus, k=ev.rerank.depth))
    reranked = rerank_on_ray(model_dir, lists, ev.rerank)
    threshold = ev.relevance_threshold or spec.relevance_threshold
    before = evaluate(first.top(ev.rerank.depth), qrels, ev.measures, threshold)
    after = evaluate(reranked, qrels, ev.measures, threshold)
    title = f"{spec.name} / {ev.split} / {config.student.architecture} reranking top-{ev.rerank.depth}"
    print(before.table(f"{spec.name} / {ev.split} / first stage"), flush=True)
    print(after.table(title), flush=True)
    write_trec_run(reranked, output / "rerank.trec", tag=config.student.architecture)
    write_json({"first_stage": before.to_dict(), "reranked": after.to_dict()}, output / "evaluation.json")
    tracker.log_metrics(before.aggregate, prefix="first_stage/")
    tracker.log_metrics(after.aggregate, prefix=f"{ev.split}/")
    tracker.log_artifact(output / "rerank.trec", "runs")
    tracker.log_artifact(output / "evaluation.json", "evaluation")
    if tracker.active:
        import matplotlib.pyplot as plt

        first_measure = next(iter(after.aggregate))
        fig = per_query_figure(after, first_measure, title)
        tracker.log_figure(fig, "plots/per_query_reranked.png")
        plt.close(fig)
    return after.aggregate
