"""Load an ``ir_datasets`` collection into the platform's records (needs the ``datasets`` extra)."""

from __future__ import annotations

from collections.abc import Iterator

from rankdistill.data.records import Document, Qrels, Query
from rankdistill.errors import require


def _dataset(name: str):
    ir_datasets = require("ir_datasets", "datasets", "Loading a collection by ir_datasets name")
    return ir_datasets.load(name)


def iter_corpus(name: str) -> Iterator[Document]:
    for doc in _dataset(name).docs_iter():
        text = getattr(doc, "text", None) or getattr(doc, "body", None) or ""
        yield Document(doc.doc_id, text, getattr(doc, "title", "") or "")


def read_queries(name: str) -> dict[str, Query]:
    out: dict[str, Query] = {}
    for q in _dataset(name).queries_iter():
        text = getattr(q, "text", None) or getattr(q, "title", None) or ""
        out[q.query_id] = Query(q.query_id, text)
    return out


def read_qrels(name: str) -> Qrels:
    qrels = Qrels()
    for qrel in _dataset(name).qrels_iter():
        qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    return qrels
