"""BEIR collections: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` (also ``.gz``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rankdistill.data.records import Document, Qrels, Query
from rankdistill.data.textio import iter_jsonl, iter_lines, open_text, require_field
from rankdistill.errors import DataFormatError


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataFormatError(f"no {stem} (or {stem}.gz) in this BEIR folder", folder)


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """Stream documents from a BEIR ``corpus.jsonl``; duplicate ids are an error."""
    seen: set[str] = set()
    for line, obj in iter_jsonl(path):
        docid = require_field(obj, "_id", path, line)
        if docid in seen:
            raise DataFormatError(f"duplicate document id '{docid}'", path, line)
        seen.add(docid)
        text = require_field(obj, "text", path, line)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise DataFormatError("field 'title' must be a string", path, line)
        yield Document(docid, text, title)


def read_corpus(path: str | Path) -> dict[str, Document]:
    return {d.docid: d for d in iter_corpus(path)}


def read_queries(path: str | Path) -> dict[str, Query]:
    """Read a BEIR ``queries.jsonl`` into ``{qid: Query}``; duplicate ids are an error."""
    queries: dict[str, Query] = {}
    for line, obj in iter_jsonl(path):
        qid = require_field(obj, "_id", path, line)
        if qid in queries:
            raise DataFormatError(f"duplicate query id '{qid}'", path, line)
        queries[qid] = Query(qid, require_field(obj, "text", path, line))
    return queries


def read_qrels_tsv(path: str | Path) -> Qrels:
    """Read BEIR qrels (``query-id corpus-id score`` TSV, optional header)."""
    qrels = Qrels()
    for line, text in iter_lines(path):
        parts = text.split("\t")
        if line == 1 and parts[:2] == ["query-id", "corpus-id"]:
            continue
        if len(parts) != 3:
            raise DataFormatError(f"expected 3 tab-separated fields, got {len(parts)}", path, line)
        add_judgement(qrels, *parts, path, line)
    return qrels


def add_judgement(qrels: Qrels, qid: str, docid: str, grade: str, path: str | Path, line: int) -> None:
    """Add one qrel line's judgement; a non-integer grade or a repeated pair is an error."""
    try:
        value = int(grade)
    except ValueError:
        raise DataFormatError(f"relevance grade '{grade}' is not an integer", path, line) from None
    per_query = qrels.setdefault(qid, {})
    if docid in per_query:
        raise DataFormatError(f"duplicate judgement for query '{qid}', document '{docid}'", path, line)
    per_query[docid] = value


@dataclass(frozen=True)
class BeirFolder:
    """A BEIR collection on disk; files are read lazily and on demand."""

    root: Path

    def __post_init__(self) -> None:
        if not Path(self.root).is_dir():
            raise DataFormatError("BEIR folder does not exist", self.root)
        object.__setattr__(self, "root", Path(self.root))

    @property
    def corpus_path(self) -> Path:
        return _find(self.root, "corpus.jsonl")

    @property
    def queries_path(self) -> Path:
        return _find(self.root, "queries.jsonl")

    def qrels_path(self, split: str) -> Path:
        return _find(self.root / "qrels", f"{split}.tsv")

    def iter_corpus(self) -> Iterator[Document]:
        return iter_corpus(self.corpus_path)

    def corpus(self) -> dict[str, Document]:
        return read_corpus(self.corpus_path)

    def queries(self, split: str | None = None) -> dict[str, Query]:
        """All queries, or only those judged in ``split``'s qrels."""
        queries = read_queries(self.queries_path)
        if split is None:
            return queries
        judged = self.qrels(split)
        return {q: queries[q] for q in queries if q in judged}

    def qrels(self, split: str, check_docs: bool = False) -> Qrels:
        """Qrels of a split; with ``check_docs`` every judged document must be in the corpus."""
        path = self.qrels_path(split)
        qrels = read_qrels_tsv(path)
        if check_docs:
            check_qrels_against_corpus(qrels, (d.docid for d in self.iter_corpus()), path)
        return qrels


def check_qrels_against_corpus(qrels: Qrels, docids: Iterable[str], path: str | Path) -> None:
    """Raise DataFormatError naming the first qrel (file and line) whose document is unknown."""
    known = set(docids)
    missing = {(q, d) for q, docs in qrels.items() for d in docs if d not in known}
    if not missing:
        return
    for line, text in iter_lines(path):
        parts = text.split("\t")
        if len(parts) == 3 and (parts[0], parts[1]) in missing:
            raise DataFormatError(
                f"qrel for query '{parts[0]}' points at document '{parts[1]}', which is not in the corpus "
                f"({len(missing)} such judgement(s) in all)",
                path,
                line,
            )
    raise DataFormatError(f"{len(missing)} judgement(s) point at documents not in the corpus", path)


def write_corpus(documents: Iterable[Document], path: str | Path) -> None:
    with open_text(path, "w") as f:
        for d in documents:
            f.write(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")


def write_queries(queries: Iterable[Query], path: str | Path) -> None:
    with open_text(path, "w") as f:
        for q in queries:
            f.write(json.dumps({"_id": q.qid, "text": q.text}, ensure_ascii=False) + "\n")


def write_qrels_tsv(qrels: Qrels, path: str | Path) -> None:
    with open_text(path, "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                f.write(f"{qid}\t{docid}\t{grade}\n")


@dataclass(frozen=True)
class SubsetFolder(BeirFolder):
    """A small, fixed slice of a BEIR collection, read in place (nothing is copied).

    Per split in ``queries_per_split`` the first N judged queries (in qrels file order) keep their
    judgements; the corpus is every document those judgements name plus the first
    ``extra_documents`` documents of the collection (unjudged distractors for first-stage
    retrieval). Queries are those of the kept judgements.
    """

    queries_per_split: tuple[tuple[str, int], ...] = (("train", 32), ("test", 16))
    extra_documents: int = 300

    def qrels(self, split: str, check_docs: bool = False) -> Qrels:
        limits = dict(self.queries_per_split)
        if split not in limits:
            raise DataFormatError(f"split '{split}' is not part of this subset (has: {', '.join(limits)})", self.root)
        full = super().qrels(split)
        kept = full.restricted_to(list(full)[: limits[split]])
        if check_docs:
            check_qrels_against_corpus(kept, (d.docid for d in self.iter_corpus()), self.qrels_path(split))
        return kept

    def iter_corpus(self) -> Iterator[Document]:
        judged = {d for split, _ in self.queries_per_split for docs in self.qrels(split).values() for d in docs}
        for index, doc in enumerate(super().iter_corpus()):
            if index < self.extra_documents or doc.docid in judged:
                yield doc

    def corpus(self) -> dict[str, Document]:
        return {doc.docid: doc for doc in self.iter_corpus()}

    def queries(self, split: str | None = None) -> dict[str, Query]:
        queries = read_queries(self.queries_path)
        splits = [split] if split is not None else [name for name, _ in self.queries_per_split]
        kept = {q for name in splits for q in self.qrels(name)}
        return {q: queries[q] for q in queries if q in kept}
