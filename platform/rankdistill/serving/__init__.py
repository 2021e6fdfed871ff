"""Library side of the Ray Serve app (``serve/``): request and response schemas and limits,
token-budget batching, request slicing, the fast scoring path with long-document chunking,
first-stage retrievers, app config."""

from rankdistill.serving.batching import SubBatch, padding_fraction, plan_sub_batches
from rankdistill.serving.config import ServeAppConfig
from rankdistill.serving.schemas import RequestError, RerankJob, Scored, ServeLimits
from rankdistill.serving.scoring import (
    DocumentScore,
    Prepared,
    Scorer,
    ScoringConfig,
    relevance,
)
from rankdistill.serving.slicing import split_prepared

__all__ = [
    "DocumentScore",
    "Prepared",
    "RequestError",
    "RerankJob",
    "Scored",
    "Scorer",
    "ScoringConfig",
    "ServeAppConfig",
    "ServeLimits",
    "SubBatch",
    "padding_fraction",
    "plan_sub_batches",
    "relevance",
    "split_prepared",
]
