"""Evaluation layered like tevatron's: metrics core, dataset registry, runner."""

from rankdistill.evaluation.datasets import REGISTRY, DatasetSpec, DatasetUnavailable, resolve
from rankdistill.evaluation.metrics import DEFAULT_MEASURES, EvaluationResult, evaluate

__all__ = ["DEFAULT_MEASURES", "REGISTRY", "DatasetSpec", "DatasetUnavailable", "EvaluationResult",
           "evaluate", "resolve"]
