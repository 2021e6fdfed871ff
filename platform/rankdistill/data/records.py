"""Typed records shared by every stage: queries, documents, candidate lists, qrels and runs.

These are the interchange types of the platform (in the spirit of rank_llm's ``Request`` /
``Candidate``): readers produce them, teachers label them, students train on them and the
evaluation consumes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Query:
    """A query: its id and text."""

    qid: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus entry (BEIR ``_id``/``title``/``text``)."""

    docid: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        """Title and text as one string, the way BEIR models usually read a document."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(slots=True)
class Candidate:
    """One retrieved document for a query: id, first-stage score and (optionally) its text."""

    docid: str
    score: float
    text: str | None = None
    title: str = ""

    @property
    def contents(self) -> str:
        text = self.text or ""
        return f"{self.title} {text}".strip() if self.title else text


@dataclass(slots=True)
class CandidateList:
    """A query with its ranked candidates (best first): the unit teachers and rerankers see."""

    query: Query
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def qid(self) -> str:
        return self.query.qid

    @property
    def docids(self) -> list[str]:
        return [c.docid for c in self.candidates]

    def __len__(self) -> int:
        return len(self.candidates)

    def top(self, k: int) -> CandidateList:
        return CandidateList(self.query, list(self.candidates[:k]))

    def reordered(self, docids: list[str]) -> CandidateList:
        """The same candidates in the order of ``docids`` (a permutation of :attr:`docids`)."""
        by_id = {c.docid: c for c in self.candidates}
        if len(docids) != len(self.candidates) or set(docids) != set(by_id):
            raise ValueError(f"query {self.qid}: reordering is not a permutation of the candidates")
        return CandidateList(self.query, [by_id[d] for d in docids])

    def to_dict(self) -> dict[str, Any]:
        """A flat, Arrow-friendly row (used by Ray Datasets)."""
        return {
            "qid": self.query.qid,
            "query": self.query.text,
            "docids": [c.docid for c in self.candidates],
            "scores": [float(c.score) for c in self.candidates],
            "texts": [c.contents for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> CandidateList:
        texts = row.get("texts")
        if texts is None:
            texts = [None] * len(row["docids"])
        return cls(
            Query(str(row["qid"]), str(row["query"])),
            [
                Candidate(str(d), float(s), None if t is None else str(t))
                for d, s, t in zip(row["docids"], row["scores"], texts, strict=True)
            ],
        )


class Qrels(dict[str, dict[str, int]]):
    """Relevance judgements: ``qrels[qid][docid] = grade`` (0 = judged non-relevant)."""

    def relevant(self, qid: str, min_grade: int = 1) -> set[str]:
        return {d for d, g in self.get(qid, {}).items() if g >= min_grade}

    def num_judgements(self) -> int:
        return sum(len(v) for v in self.values())

    def restricted_to(self, qids: Iterable[str]) -> Qrels:
        keep = set(qids)
        return Qrels({q: dict(v) for q, v in self.items() if q in keep})


class Run(dict[str, dict[str, float]]):
    """A ranking: ``run[qid][docid] = score`` (higher is better), as ir-measures reads it.

    Two orders, for two purposes:

    - :meth:`ranked` is the run's own order, the one candidate lists (and listwise windows) follow:
      score descending, equal scores in the order the documents were inserted. A run read by
      :func:`~rankdistill.data.trec.read_trec_run` inserts each query's documents by the file's
      rank column, so tied scores keep the first stage's ranks (as rank_llm sends them).
    - :meth:`trec_eval_ranked` is trec_eval's order (score descending, ties by docid descending),
      the one every evaluation uses, whatever the file's ranks say.
    """

    def ranked(self, qid: str) -> list[tuple[str, float]]:
        """Documents of ``qid`` best first; equal scores keep insertion order (a file's ranks)."""
        return sorted(self.get(qid, {}).items(), key=lambda kv: kv[1], reverse=True)  # stable

    def trec_eval_ranked(self, qid: str) -> list[tuple[str, float]]:
        """Documents of ``qid`` in trec_eval's order: score descending, ties by docid descending."""
        return sorted(self.get(qid, {}).items(), key=lambda kv: (kv[1], kv[0]), reverse=True)

    def top(self, k: int) -> Run:
        return Run({q: dict(self.ranked(q)[:k]) for q in self})

    def iter_ranked(self) -> Iterator[tuple[str, list[tuple[str, float]]]]:
        for qid in self:
            yield qid, self.ranked(qid)

    @classmethod
    def from_candidate_lists(cls, lists: Iterable[CandidateList], by_position: bool = True) -> Run:
        """A run from ranked lists; ``by_position`` scores by rank (k, k-1, ..., 1) so the list
        order, not the first-stage score, decides the ranking (what a reranker's output means)."""
        run = cls()
        for cl in lists:
            n = len(cl.candidates)
            run[cl.qid] = {
                c.docid: float(n - i) if by_position else float(c.score) for i, c in enumerate(cl.candidates)
            }
        return run
