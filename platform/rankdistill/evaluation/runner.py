"""Evaluating a run of a loaded dataset, and the per-query plot logged with it."""

from __future__ import annotations

from dataclasses import dataclass, field

from rankdistill.config import check_range
from rankdistill.data.datasets import LoadedDataset
from rankdistill.data.records import Run
from rankdistill.errors import ConfigError
from rankdistill.evaluation.metrics import DEFAULT_MEASURES, EvaluationResult, evaluate


@dataclass
class EvaluationConfig:
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    relevance_threshold: int | None = None  # binary measures' threshold; default: the dataset's

    def __post_init__(self) -> None:
        check_range("relevance_threshold", self.relevance_threshold, minimum=1)
        if not self.measures:
            raise ConfigError("needs at least one measure", "measures")


def evaluate_run(run: Run, data: LoadedDataset, config: EvaluationConfig) -> EvaluationResult:
    threshold = config.relevance_threshold or data.spec.relevance_threshold
    return evaluate(run, data.qrels, config.measures, threshold)


def per_query_figure(result: EvaluationResult, measure: str, title: str):
    """A sorted bar chart of one measure per query (logged to MLflow as an artifact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted((v.get(measure, 0.0) for v in result.per_query.values()), reverse=True)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(range(len(values)), values, width=1.0, color="#3b6ea8")
    ax.axhline(result.aggregate.get(measure, 0.0), color="#c0392b", lw=1, label=f"mean {measure}")
    ax.set_xlabel("queries (sorted)")
    ax.set_ylabel(measure)
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
