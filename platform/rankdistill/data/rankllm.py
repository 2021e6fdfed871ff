"""rank_llm's Request JSON: ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {...}}]}``.

A file holds either a JSON list of requests or one request per line (JSON lines).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rankdistill.data.records import Candidate, CandidateList, Query
from rankdistill.data.textio import iter_jsonl, open_text
from rankdistill.errors import DataFormatError

_TEXT_KEYS = ("contents", "text", "segment", "body", "passage")


def _doc_text(doc: dict[str, Any]) -> tuple[str, str]:
    title = doc.get("title") or ""
    for key in _TEXT_KEYS:
        if isinstance(doc.get(key), str):
            return doc[key], str(title)
    return "", str(title)


def request_from_dict(obj: Any, path: str | Path, line: int | None) -> CandidateList:
    if not isinstance(obj, dict):
        raise DataFormatError("a request must be a JSON object", path, line)
    query = obj.get("query")
    if not isinstance(query, dict) or "qid" not in query or "text" not in query:
        raise DataFormatError("field 'query' must be an object with 'qid' and 'text'", path, line)
    candidates = obj.get("candidates")
    if not isinstance(candidates, list):
        raise DataFormatError("missing field 'candidates' (a list)", path, line)
    out: list[Candidate] = []
    seen: set[str] = set()
    for i, cand in enumerate(candidates):
        if not isinstance(cand, dict) or "docid" not in cand:
            raise DataFormatError(f"candidates[{i}] has no 'docid'", path, line)
        docid = str(cand["docid"])
        if docid in seen:
            raise DataFormatError(f"duplicate document id '{docid}' in candidates[{i}]", path, line)
        seen.add(docid)
        try:
            score = float(cand.get("score", 0.0))
        except (TypeError, ValueError):
            raise DataFormatError(f"candidates[{i}].score is not a number", path, line) from None
        doc = cand.get("doc") or {}
        if not isinstance(doc, dict):
            raise DataFormatError(f"candidates[{i}].doc must be an object", path, line)
        text, title = _doc_text(doc)
        out.append(Candidate(docid, score, text, title))
    return CandidateList(Query(str(query["qid"]), str(query["text"])), out)


def request_to_dict(cl: CandidateList) -> dict[str, Any]:
    return {
        "query": {"text": cl.query.text, "qid": cl.query.qid},
        "candidates": [
            {"docid": c.docid, "score": c.score, "doc": {"title": c.title, "text": c.text or ""}}
            for c in cl.candidates
        ],
    }


def iter_requests(path: str | Path) -> Iterator[CandidateList]:
    """Stream requests from a JSON list file or a JSON-lines file."""
    with open_text(path) as f:
        head = f.read(1).lstrip() or f.read(64).lstrip()[:1]
    if head == "[":
        with open_text(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"bad JSON ({exc.msg})", path, exc.lineno) from exc
        for obj in data:
            yield request_from_dict(obj, path, None)
        return
    for line, obj in iter_jsonl(path):
        yield request_from_dict(obj, path, line)


def read_requests(path: str | Path) -> list[CandidateList]:
    return list(iter_requests(path))


def write_requests(lists: Iterable[CandidateList], path: str | Path) -> None:
    """Write JSON lines, one request per line."""
    with open_text(path, "w") as f:
        for cl in lists:
            f.write(json.dumps(request_to_dict(cl), ensure_ascii=False) + "\n")
