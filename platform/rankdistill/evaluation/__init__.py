"""Evaluation layered like tevatron's: the ir-measures core (``metrics``), then evaluating a loaded
dataset's run (``runner``) and reranking candidate lists with a student on Ray (``rerank``).
Datasets themselves load through :mod:`rankdistill.data.datasets`."""

from rankdistill.evaluation.metrics import DEFAULT_MEASURES, EvaluationResult, evaluate

__all__ = ["DEFAULT_MEASURES", "EvaluationResult", "evaluate"]
