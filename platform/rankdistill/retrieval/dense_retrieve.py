"""First-stage retrieval with a dense student and its index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rankdistill.data.records import Query, Run


def retrieve(model: Any, index: Any, queries: Sequence[Query] | Mapping[str, Query], k: int = 100,
             batch_size: int | None = None) -> Run:
    """Encode ``queries`` with ``model.encode_queries`` and search ``index`` (a
    :class:`~rankdistill.retrieval.dense_index.DenseIndex` for a bi-encoder, a
    :class:`~rankdistill.retrieval.colbert_index.ColbertIndex` for ColBERT). Dense-index scores are
    the raw inner products (the bi-encoder's ``scale`` does not change the ranking)."""
    items = list(queries.values()) if isinstance(queries, Mapping) else list(queries)
    qids = [q.qid for q in items]
    vectors = model.encode_queries([q.text for q in items], batch_size=batch_size)
    return index.search(qids, vectors.numpy(), k)
