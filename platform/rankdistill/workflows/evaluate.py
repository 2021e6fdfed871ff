"""``jobs/evaluate.py``: first stage (BM25 on Ray, or a given run) → ir-measures → MLflow.

``output_dir`` is a folder or a storage URI (``s3://...``): the run and the evaluation are written
locally and uploaded when the job ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rankdistill.data.trec import write_trec_run
from rankdistill.evaluation.metrics import EvaluationResult
from rankdistill.data.datasets import DatasetConfig, load_dataset
from rankdistill.evaluation.runner import EvaluationConfig, evaluate_run, per_query_figure
from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
from rankdistill.retrieval.first_stage import FirstStageConfig, first_stage
from rankdistill.tracking import TrackingConfig, start_run
from rankdistill.tracking.mlflow_tracking import write_json


@dataclass
class EvaluateConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    retrieval: FirstStageConfig = field(default_factory=FirstStageConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="evaluate"))
    output_dir: str = "outputs/evaluate"  # a folder, or a storage URI (s3://...) on clusters


def run_evaluate(config: EvaluateConfig) -> EvaluationResult:
    from rankdistill.storage import writable_folder

    with writable_folder(config.output_dir) as output:
        return _run_evaluate(config, output)


def _run_evaluate(config: EvaluateConfig, output: Path) -> EvaluationResult:
    data = load_dataset(config.dataset)
    started = init_ray(config.ray) if config.retrieval.method == "bm25" else False
    try:
        run = first_stage(config.retrieval, data)
    finally:
        shutdown_ray(started, config.ray)
    result = evaluate_run(run, data, config.evaluation)
    label = config.retrieval.run if config.retrieval.method == "run" else "bm25"
    title = f"{data.spec.name} / {config.dataset.split} / {label}"
    print(result.table(title), flush=True)

    run_path = output / "run.trec"
    write_trec_run(run, run_path, tag=str(label).replace(" ", "_"))
    eval_path = write_json(result.to_dict(), output / "evaluation.json")
    tags = {"job": "evaluate", "dataset": data.spec.name, "split": config.dataset.split, "first_stage": label}
    with start_run(config.tracking, tags=tags) as tracker:
        tracker.log_config(config)
        tracker.log_params({"num_queries": result.num_queries})
        tracker.log_metrics(result.aggregate, prefix=f"{config.dataset.split}/")
        tracker.log_artifact(run_path, "runs")
        tracker.log_artifact(eval_path, "evaluation")
        first = next(iter(result.aggregate))
        if tracker.active:
            import matplotlib.pyplot as plt

            fig = per_query_figure(result, first, title)
            tracker.log_figure(fig, f"plots/per_query_{first.replace('@', '_at_')}.png")
            plt.close(fig)
        if tracker.active:
            print(f"MLflow run {tracker.run_id} ({config.tracking.experiment})", flush=True)
    return result
