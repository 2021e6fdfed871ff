"""First stages behind one small interface, for the ``/search`` endpoint's Retriever deployment.

A :class:`Retriever` answers ``search(query, k) -> list[Hit]`` (best first) and ``text(docid)``.
:class:`BM25Retriever` wraps :class:`rankdistill.retrieval.bm25.BM25Index`. A dense student with a
faiss index plugs in as another implementation of the same two methods (encode the query with the
student's ``encode_queries``, search the faiss index, map rows to docids) and a ``kind`` in
:func:`build_retriever`; that student and its index are being built on another branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rankdistill.errors import ConfigError


@dataclass(frozen=True)
class Hit:
    docid: str
    score: float


class Retriever(Protocol):
    """What the Retriever deployment needs from a first stage."""

    def search(self, query: str, k: int) -> list[Hit]: ...

    def text(self, docid: str) -> str: ...


class BM25Retriever:
    """BM25 (bm25s, Anserini defaults) over a corpus held in memory."""

    def __init__(self, index: Any, texts: Mapping[str, str]):
        self.index = index
        self.texts = dict(texts)

    @classmethod
    def from_corpus(cls, corpus: str | Path, index_dir: str | Path | None = None) -> BM25Retriever:
        """Index ``corpus`` (a BEIR ``corpus.jsonl`` or a BEIR folder), or load a saved index from
        ``index_dir`` built over the same corpus."""
        from rankdistill.data.beir import read_corpus
        from rankdistill.retrieval.bm25 import BM25Index

        path = Path(corpus)
        if path.is_dir():
            path = path / "corpus.jsonl"
        if not path.is_file():
            raise ConfigError(f"corpus file '{path}' does not exist", key="retriever.corpus")
        docs = list(read_corpus(path).values())
        index = BM25Index.load(index_dir) if index_dir else BM25Index().index(docs, show_progress=False)
        return cls(index, {d.docid: d.contents for d in docs})

    def search(self, query: str, k: int) -> list[Hit]:
        from rankdistill.data.records import Query

        hits = self.index.search([Query("q", query)], k=k).get("q", {})
        return [Hit(d, float(s)) for d, s in sorted(hits.items(), key=lambda x: (-x[1], x[0]))]

    def text(self, docid: str) -> str:
        return self.texts[docid]


def build_retriever(config: Mapping[str, Any]) -> Retriever:
    """``{"kind": "bm25", "corpus": path, "index": optional saved index}`` -> a retriever."""
    kind = str(config.get("kind", "bm25"))
    if kind == "bm25":
        if not config.get("corpus"):
            raise ConfigError("a BM25 retriever needs 'corpus' (a BEIR corpus.jsonl or folder)", key="retriever.corpus")
        return BM25Retriever.from_corpus(config["corpus"], config.get("index"))
    raise ConfigError(
        f"unknown retriever kind '{kind}'; available: bm25 (dense students with a faiss index are not "
        "wired into serving yet)",
        key="retriever.kind",
    )
