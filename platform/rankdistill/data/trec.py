"""TREC run files (``qid Q0 docid rank score tag``) and TREC qrels (``qid 0 docid grade``)."""

from __future__ import annotations

import math
from pathlib import Path

from rankdistill.data.records import Qrels, Run
from rankdistill.data.textio import iter_lines, open_text
from rankdistill.errors import DataFormatError


def read_trec_run(path: str | Path) -> Run:
    """Read a 6-column TREC run. Anything else (e.g. a 3-column MS MARCO run) is an error.

    Each query's documents are inserted in the order of the file's rank column (equal ranks in
    file order), so :meth:`Run.ranked` breaks tied scores by the first stage's ranks; evaluation
    still applies trec_eval's rules (:meth:`Run.trec_eval_ranked`).
    """
    rows: dict[str, list[tuple[int, int, str, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for line, text in iter_lines(path):
        parts = text.split()
        if len(parts) != 6:
            raise DataFormatError(
                f"unknown run format: expected 6 whitespace-separated columns "
                f"'qid Q0 docid rank score tag', got {len(parts)}",
                path,
                line,
            )
        qid, _, docid, rank, score, _tag = parts
        try:
            position = int(rank)
            value = float(score)
        except ValueError:
            raise DataFormatError(f"rank '{rank}' / score '{score}' is not a number", path, line) from None
        check_finite_score(value, path, line)
        if (qid, docid) in seen:
            raise DataFormatError(f"document '{docid}' appears twice for query '{qid}'", path, line)
        seen.add((qid, docid))
        rows.setdefault(qid, []).append((position, line, docid, value))
    return Run({qid: {docid: value for _, _, docid, value in sorted(docs)} for qid, docs in rows.items()})


def check_finite_score(score: float, path: str | Path, line: int) -> None:
    """A NaN or infinite score has no rank (ir-measures sorts NaN arbitrarily, silently zeroing a
    relevant document's gain): an error naming the line."""
    if not math.isfinite(score):
        raise DataFormatError(f"score {score} is not a finite number", path, line)


def write_trec_run(run: Run, path: str | Path, tag: str = "rankdistill") -> None:
    """Write a run with ranks 1..n per query in :meth:`Run.ranked` order (best first; equal scores
    in the run's own order, so a run read from a file keeps its ranks)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open_text(path, "w") as f:
        for qid, ranked in run.iter_ranked():
            for rank, (docid, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.9g} {tag}\n")


def read_trec_qrels(path: str | Path) -> Qrels:
    """Read 4-column TREC qrels (``qid iteration docid grade``)."""
    from rankdistill.data.beir import add_judgement

    qrels = Qrels()
    for line, text in iter_lines(path):
        parts = text.split()
        if len(parts) != 4:
            raise DataFormatError(f"expected 4 columns 'qid 0 docid grade', got {len(parts)}", path, line)
        qid, _, docid, grade = parts
        add_judgement(qrels, qid, docid, grade, path, line)
    return qrels


def write_trec_qrels(qrels: Qrels, path: str | Path) -> None:
    with open_text(path, "w") as f:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                f.write(f"{qid} 0 {docid} {grade}\n")


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels in either BEIR TSV (3 columns, header optional) or TREC (4 columns) form."""
    from rankdistill.data.beir import read_qrels_tsv

    for _, text in iter_lines(path):
        columns = len(text.split("\t")) if "\t" in text else len(text.split())
        return read_qrels_tsv(path) if columns == 3 else read_trec_qrels(path)
    return Qrels()
