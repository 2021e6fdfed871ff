"""First stages behind one small interface, for the ``/search`` endpoint's Retriever deployment.

A :class:`Retriever` answers ``search(query, k) -> list[Hit]`` (best first) and ``text(docid)``:

- :class:`BM25Retriever` wraps :class:`rankdistill.retrieval.bm25.BM25Index`;
- :class:`DenseRetriever` is a dense student (bi-encoder or ColBERT; a folder, a storage URI or an
  MLflow ``models:/`` URI) with the faiss index of its corpus, as ``jobs/pairdistill.py`` saves
  them (``<output_dir>/iteration-N/model`` and ``.../index``): the query is encoded with the
  student's ``encode_queries`` and searched as :func:`rankdistill.retrieval.dense_retrieve.retrieve`
  does in the job's own evaluation, so ``/search`` retrieves what the job evaluated.
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

        docs = list(read_corpus(_corpus_path(corpus)).values())
        index = BM25Index.load(index_dir) if index_dir else BM25Index().index(docs, show_progress=False)
        return cls(index, {d.docid: d.contents for d in docs})

    def search(self, query: str, k: int) -> list[Hit]:
        from rankdistill.data.records import Query

        hits = self.index.search([Query("q", query)], k=k).get("q", {})
        return [Hit(d, float(s)) for d, s in sorted(hits.items(), key=lambda x: (-x[1], x[0]))]

    def text(self, docid: str) -> str:
        return self.texts[docid]


def _corpus_path(corpus: str | Path) -> Path:
    path = Path(corpus)
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file():
        raise ConfigError(f"corpus file '{path}' does not exist", key="retriever.corpus")
    return path


def _corpus_texts(corpus: str | Path) -> dict[str, str]:
    from rankdistill.data.beir import read_corpus

    return {d.docid: d.contents for d in read_corpus(_corpus_path(corpus)).values()}


class DenseRetriever:
    """A dense student and the faiss index of its corpus (see the module docstring)."""

    def __init__(self, model: Any, index: Any, texts: Mapping[str, str]):
        self.model = model.eval()
        self.index = index
        self.texts = dict(texts)

    @classmethod
    def from_sources(cls, model: str, index: str, corpus: str | Path, tracking_uri: str | None = None,
                     threads: int | None = None) -> DenseRetriever:
        """``model``: a student folder, storage URI or ``models:/`` URI; ``index``: the folder or URI
        its index was saved to; ``corpus``: the BEIR corpus it indexes (for the texts)."""
        import torch

        from rankdistill.retrieval.colbert_index import ColbertIndex
        from rankdistill.retrieval.dense_index import DenseIndex
        from rankdistill.storage import exists
        from rankdistill.tracking.models import load_reranker_from

        if threads:
            torch.set_num_threads(threads)
        student = load_reranker_from(model, tracking_uri)
        if not hasattr(student, "encode_queries"):
            raise ConfigError(f"'{model}' is a {type(student).__name__}, not a dense student (bi-encoder, colbert)",
                              key="retriever.model")
        if not exists(index):
            raise ConfigError(f"index '{index}' does not exist (jobs/pairdistill.py saves <output_dir>/iteration-N/"
                              "index)", key="retriever.index")
        colbert = student.config.model_type == "rankdistill-colbert"
        loaded = (ColbertIndex if colbert else DenseIndex).load(index)
        texts = _corpus_texts(corpus)
        missing = [d for d in loaded.docids if d not in texts]
        if missing:
            raise ConfigError(f"{len(missing)} of the index's {len(loaded.docids)} documents are not in the corpus "
                              f"'{corpus}' (e.g. '{missing[0]}'): the index was built over another collection",
                              key="retriever.corpus")
        return cls(student, loaded, texts)

    def search(self, query: str, k: int) -> list[Hit]:
        import torch

        from rankdistill.data.records import Query
        from rankdistill.retrieval.dense_retrieve import retrieve

        with torch.inference_mode():
            hits = retrieve(self.model, self.index, [Query("q", query)], k).get("q", {})
        return [Hit(d, float(s)) for d, s in sorted(hits.items(), key=lambda x: (-x[1], x[0]))]

    def text(self, docid: str) -> str:
        return self.texts[docid]


def build_retriever(config: Mapping[str, Any]) -> Retriever:
    """A retriever from its config:

    - ``{"kind": "bm25", "corpus": path, "index": optional saved BM25 index}``;
    - ``{"kind": "dense", "model": folder | URI | models:/..., "index": folder | URI, "corpus": path,
      "tracking_uri": optional MLflow store for models:/ URIs, "threads": optional torch threads}``.
    """
    kind = str(config.get("kind", "bm25"))
    if not config.get("corpus"):
        raise ConfigError(f"a {kind} retriever needs 'corpus' (a BEIR corpus.jsonl or folder)", key="retriever.corpus")
    if kind == "bm25":
        return BM25Retriever.from_corpus(config["corpus"], config.get("index"))
    if kind == "dense":
        for key in ("model", "index"):
            if not config.get(key):
                raise ConfigError(f"a dense retriever needs '{key}'", key=f"retriever.{key}")
        return DenseRetriever.from_sources(str(config["model"]), str(config["index"]), config["corpus"],
                                           config.get("tracking_uri"), config.get("threads"))
    raise ConfigError(f"unknown retriever kind '{kind}'; available: bm25, dense", key="retriever.kind")
