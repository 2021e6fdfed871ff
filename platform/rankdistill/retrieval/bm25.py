"""BM25 first stage on ``bm25s`` (Lucene variant, English Snowball stemmer and stopwords).

Defaults follow Anserini/Pyserini: ``k1=0.9``, ``b=0.4``, document text = ``title + " " + text``,
and only documents with a positive score are returned (so a query sharing no term with the
corpus gets no hits, as in Lucene).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankdistill.data.records import Document, Query, Run
from rankdistill.data.trec import write_trec_run
from rankdistill.errors import DataFormatError


@dataclass
class BM25Config:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"  # a PyStemmer language, or null for none
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        from rankdistill.config import check_range

        check_range("k1", self.k1, minimum=0)
        check_range("b", self.b, minimum=0, maximum=1)


class BM25Index:
    """Index documents, retrieve the top ``k`` per query, save and load."""

    META = "rankdistill_bm25.json"

    def __init__(self, config: BM25Config | None = None):
        import bm25s

        self.config = config or BM25Config()
        self._retriever = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._stemmer = self._make_stemmer(self.config.stemmer)
        self.docids: list[str] = []

    @staticmethod
    def _make_stemmer(language: str | None):
        if not language:
            return None
        import Stemmer

        return Stemmer.Stemmer(language)

    def _tokenize(self, texts: Sequence[str], show_progress: bool = False):
        import bm25s

        return bm25s.tokenize(
            list(texts), stopwords=self.config.stopwords, stemmer=self._stemmer, show_progress=show_progress
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stemmer"] = None  # PyStemmer objects do not pickle; rebuilt from the config
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._stemmer = self._make_stemmer(self.config.stemmer)

    def index(self, documents: Iterable[Document], show_progress: bool = True) -> BM25Index:
        docs = list(documents)
        if not docs:
            raise DataFormatError("cannot build a BM25 index over an empty corpus")
        self.docids = [d.docid for d in docs]
        tokens = self._tokenize([d.contents for d in docs], show_progress)
        self._retriever.index(tokens, show_progress=show_progress)
        return self

    def search(self, queries: Sequence[Query], k: int = 100, show_progress: bool = False) -> Run:
        """Top-``k`` documents per query (score > 0 only)."""
        if not self.docids:
            raise RuntimeError("the BM25 index is empty: call index() or load() first")
        run = Run()
        if not queries:
            return run
        k_eff = min(k, len(self.docids))
        tokens = self._tokenize([q.text for q in queries])
        results, scores = self._retriever.retrieve(
            tokens, k=k_eff, show_progress=show_progress, n_threads=1, return_as="tuple"
        )
        for query, idx_row, score_row in zip(queries, results, scores, strict=True):
            keep = np.asarray(score_row) > 0
            run[query.qid] = {
                self.docids[int(i)]: float(s) for i, s in zip(np.asarray(idx_row)[keep], np.asarray(score_row)[keep])
            }
        return run

    def search_to_trec(self, queries: Sequence[Query], path: str | Path, k: int = 100, tag: str = "bm25") -> Run:
        run = self.search(queries, k)
        write_trec_run(run, path, tag)
        return run

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(folder))
        (folder / self.META).write_text(json.dumps({"config": self.config.__dict__, "docids": self.docids}))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        import bm25s

        folder = Path(folder)
        meta_path = folder / cls.META
        if not meta_path.exists():
            raise DataFormatError("not a rankdistill BM25 index (no metadata file)", meta_path)
        meta = json.loads(meta_path.read_text())
        index = cls(BM25Config(**meta["config"]))
        index._retriever = bm25s.BM25.load(str(folder))
        index.docids = list(meta["docids"])
        return index
