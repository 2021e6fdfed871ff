"""Request and response shapes of the rerank APIs people already call, their checks, and the one
description of what a score means.

=================  ==================================================================================
``POST /v1/rerank`` Cohere v1 / Jina: ``query``, ``documents`` (strings or objects), ``top_n``,
                   ``rank_fields``, ``return_documents`` (default false, ``null`` = false),
                   ``max_chunks_per_doc``; ``{id, results: [{index, relevance_score, document?}],
                   meta}`` sorted by score.
``POST /v2/rerank`` Cohere v2: ``model``, ``query``, string ``documents``, ``top_n``,
                   ``max_tokens_per_doc``, ``return_documents``; same response shape.
``POST /rerank``    text-embeddings-inference: ``query``, ``texts``, ``raw_scores``, ``return_text``,
                   ``truncate``, ``truncation_direction``; a bare array ``[{index, score, text?}]``.
``POST /search``    rankdistill: ``query``, ``k`` (first stage), ``top_n``, ``return_documents``.
=================  ==================================================================================

Cohere responses carry only Cohere's fields in ``results`` (``meta.billed_units.search_units``
counts one unit per 100 scored documents, a chunked document counting once per window, as Cohere
bills); this server's own details (served model, what the score is, tokens / truncation / windows
per document) go under ``meta.rankdistill``, an object Cohere clients keep as an extra field. TEI
results are exactly TEI's ``{index, score, text?}``. ``/search`` is this server's own API and
carries everything per result.

Extension fields accepted by every rerank shape: ``model`` (multiplexed model name) and
``chunking`` (split long documents). Any other field that an API does not define is refused (422,
naming it), as are texts that are not valid Unicode (a lone surrogate such as ``\\ud800``) or
that hold nothing but whitespace, control or format characters.

Problems raise :class:`RequestError` with an HTTP status and a message naming the field; the
HTTP body of every error is TEI's ``{"error": ..., "error_type": ...}``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from rankdistill.errors import RankdistillError
from rankdistill.serving.scoring import DocumentScore, relevance_scores

#: TEI's ``error_type`` per HTTP status (TEI: validation, tokenizer, backend, overloaded, unhealthy, empty)
ERROR_TYPES = {400: "validation", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               408: "timeout", 413: "validation", 415: "validation", 422: "validation", 429: "overloaded",
               500: "backend", 503: "unhealthy", 504: "timeout"}


class RequestError(RankdistillError, ValueError):
    """A bad HTTP request: ``status`` is the HTTP status, the message names the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 error_type: str | None = None):
        self.status = int(status)
        self.message = message
        self.headers = headers or {}
        self.error_type = error_type or ERROR_TYPES.get(self.status, "validation")
        super().__init__(f"{status}: {message}")

    def __reduce__(self):  # crosses Ray process boundaries intact
        return (RequestError, (self.status, self.message, self.headers, self.error_type))


def error_body(status: int, message: str, error_type: str | None = None) -> dict[str, str]:
    """TEI's error shape, for every error this server answers."""
    return {"error": message, "error_type": error_type or ERROR_TYPES.get(status, "validation")}


# ---- what a score means (the one place that says it) -------------------------------------------

#: raw score kind -> (what the raw score is, how ``relevance_score`` in [0, 1] is made from it)
SCORE_KINDS: dict[str, tuple[str, str]] = {
    "logit": ("the model's logit", "sigmoid(logit)"),
    "pair_sum": ("sum over the other k-1 passages of P(this passage beats that one)", "pair_sum / (k-1)"),
    "pair_binary": ("count of the other k-1 passages this one beats (P > 0.5)", "pair_binary / (k-1)"),
    "pair_sym_sum": ("sum over the other k-1 passages of P(i beats j) + (1 - P(j beats i))",
                     "pair_sym_sum / (2(k-1))"),
    "pair_min": ("minimum over the other passages of P(this passage beats that one)", "pair_min (a probability)"),
    "pair_max": ("maximum over the other passages of P(this passage beats that one)", "pair_max (a probability)"),
}


def describe_score(kind: str) -> dict[str, str]:
    """``{"raw_score": ..., "relevance_score": ...}`` for a score kind (see :data:`SCORE_KINDS`)."""
    raw, rel = SCORE_KINDS.get(kind, (kind, kind))
    return {"kind": kind, "raw_score": raw, "relevance_score": rel}


# ---- limits and requests -----------------------------------------------------------------------


@dataclass
class ServeLimits:
    """Per-request limits.

    Args:
        max_documents: documents per request (413).
        max_document_chars: characters per document (413).
        max_query_chars: characters of the query (413).
        max_body_bytes: HTTP body size, counted while the body streams in (413).
        max_search_k: most first-stage candidates ``/search`` may ask for (422).
        max_request_tokens: tokens one request may cost to score, after truncation / chunking
            (query + document rows; 413). Bounds how long one request can hold a replica.
        max_pairs: passage pairs one request may cost on a pairwise (duo) model, whose work is
            quadratic: ``k(k-1)`` ordered pairs of its k passages (chunks counted; 413).
        request_timeout_s: longest a replica scores one request; its remaining slices are dropped
            after it (504), as they are when the client disconnects.
        body_read_timeout_s: longest wait for the next piece of a request body (408).
        queue_timeout_s: longest wait for a reranker replica to take a request (503 + Retry-After).
        unavailable_timeout_s: the same wait while no reranker replica is known to be up (503 fast).
    """

    max_documents: int = 1000
    max_document_chars: int = 50_000
    max_query_chars: int = 4_000
    max_body_bytes: int = 4_000_000
    max_search_k: int = 1000
    max_request_tokens: int = 65_536
    max_pairs: int = 2_450
    request_timeout_s: float = 60.0
    body_read_timeout_s: float = 10.0
    queue_timeout_s: float = 60.0
    unavailable_timeout_s: float = 1.0


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = Field(None, description="model name (multiplexing); default model when absent")
    query: StrictStr = Field(..., description="the search query")
    chunking: StrictBool | None = Field(None, description="split long documents into overlapping windows (max)")


class RerankV1Request(_Request):
    """Cohere v1 / Jina rerank."""

    documents: list[StrictStr | dict[str, Any]]
    top_n: StrictInt | None = None
    rank_fields: list[StrictStr] | None = Field(None, description="object fields scored (default: text)")
    return_documents: StrictBool | None = Field(None, description="echo documents (default false, as Cohere)")
    max_chunks_per_doc: StrictInt | None = Field(None, description="Cohere v1: > 1 turns chunking on")


class RerankV2Request(_Request):
    """Cohere v2 rerank."""

    documents: list[StrictStr]
    top_n: StrictInt | None = None
    max_tokens_per_doc: StrictInt | None = None
    return_documents: StrictBool | None = None


class TEIRerankRequest(_Request):
    """text-embeddings-inference ``/rerank``."""

    texts: list[StrictStr]
    raw_scores: StrictBool | None = False
    return_text: StrictBool | None = False
    truncate: StrictBool | None = False
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"


class SearchRequest(_Request):
    """Retrieve with the first stage, then rerank."""

    k: StrictInt = Field(100, description="first-stage candidates")
    top_n: StrictInt | None = Field(10, description="results returned")
    return_documents: StrictBool = False


@dataclass
class RerankJob:
    """A validated request, whatever its API shape."""

    query: str
    documents: list[str]
    model: str | None = None
    top_n: int | None = None
    chunking: bool | None = None
    max_tokens_per_doc: int | None = None
    reject_truncation: bool = False  # TEI with truncate=false: a too-long document is a 413
    field: str = "documents"  # the request's name for the documents (messages name it)
    truncate_left: bool = False  # TEI truncation_direction=Left: keep a long document's end
    originals: list[Any] | None = None  # v1 documents as sent (objects keep every field)
    too_large_hint: str = "send fewer or shorter documents"  # what a 413 over max_request_tokens advises


# whitespace, control and format characters (zero-width spaces, BOM, bidi marks): not content
_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
                      r"\u200b-\u200f\u2028-\u202f\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]")


def check_text(name: str, text: str) -> str:
    """Refuse text that is not valid Unicode (a lone surrogate cannot be encoded as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(422, f"{name}: not valid Unicode text: a lone surrogate "
                                f"U+{ord(text[exc.start]):04X} at character {exc.start}") from None
    return text


def check_echoed(name: str, value: Any, depth: int = 0) -> None:
    """Every key and string value of an object the response echoes back (a v1 document object)
    must be valid Unicode: a lone surrogate in a field's name or value is a 422 naming it, not a
    500 (or an invalid JSON escape) when the response is written."""
    if depth > 32:
        raise RequestError(422, f"{name}: nested more than 32 levels deep")
    if isinstance(value, str):
        check_text(name, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            try:
                key.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RequestError(422, f"{name}: a field name is not valid Unicode text: a lone surrogate "
                                        f"U+{ord(key[exc.start]):04X} at character {exc.start}") from None
            check_echoed(f"{name}.{key}", item, depth + 1)
    elif isinstance(value, list):
        for j, item in enumerate(value):
            check_echoed(f"{name}[{j}]", item, depth + 1)


def check_query(query: str, limits: ServeLimits) -> str:
    check_text("query", query)
    if not _VISIBLE.search(query):
        raise RequestError(422, "query: must be a non-empty string (it holds only whitespace, control or format "
                                "characters)" if query else "query: must be a non-empty string")
    if len(query) > limits.max_query_chars:
        raise RequestError(413, f"query: {len(query)} characters, more than the limit of {limits.max_query_chars}")
    return query


def check_documents(name: str, documents: list[str], limits: ServeLimits) -> list[str]:
    if not documents:
        raise RequestError(422, f"{name}: must hold at least one document")
    if len(documents) > limits.max_documents:
        raise RequestError(413, f"{name}: {len(documents)} documents, more than the limit of {limits.max_documents}")
    for i, text in enumerate(documents):
        if len(text) > limits.max_document_chars:
            raise RequestError(
                413, f"{name}[{i}]: {len(text)} characters, more than the limit of {limits.max_document_chars}"
            )
        check_text(f"{name}[{i}]", text)
        if not _VISIBLE.search(text):
            raise RequestError(422, f"{name}[{i}]: empty document" + (
                " after normalisation: it holds only whitespace, control or format characters" if text else ""))
    return documents


def check_top_n(top_n: int | None, limits: ServeLimits) -> int | None:
    """``top_n`` must be >= 1 and <= ``max_documents``; above the number of documents it returns all."""
    if top_n is not None and not 1 <= top_n <= limits.max_documents:
        raise RequestError(422, f"top_n: must be between 1 and {limits.max_documents}, got {top_n}")
    return top_n


def _document_text(i: int, doc: str | dict[str, Any], rank_fields: list[str] | None) -> str:
    """The text scored for a v1 document: a string itself; an object's ``text``, or with
    ``rank_fields`` its fields as ``name: value`` lines (Cohere's rendering of objects)."""
    if isinstance(doc, str):
        return doc
    names = rank_fields or ["text"]
    lines = []
    for name in names:
        if name not in doc:
            raise RequestError(422, f"documents[{i}]: has no field '{name}'" + (
                " (rank_fields)" if rank_fields else "; send a 'text' field or name the fields with rank_fields"))
        value = doc[name]
        if not isinstance(value, str | int | float | bool):
            raise RequestError(422, f"documents[{i}].{name}: must be a string or a number to be ranked")
        lines.append(value if not rank_fields else f"{name}: {value}")
    return "\n".join(str(x) for x in lines)


def job_from_v1(req: RerankV1Request, limits: ServeLimits) -> RerankJob:
    if req.rank_fields is not None:
        if not req.rank_fields:
            raise RequestError(422, "rank_fields: must name at least one field")
        for i, name in enumerate(req.rank_fields):
            check_text(f"rank_fields[{i}]", name)
    for i, d in enumerate(req.documents):
        if isinstance(d, dict):
            check_echoed(f"documents[{i}]", d)
    docs = [_document_text(i, d, req.rank_fields) for i, d in enumerate(req.documents)]
    chunking = req.chunking
    if req.max_chunks_per_doc is not None:
        if req.max_chunks_per_doc < 1:
            raise RequestError(422, f"max_chunks_per_doc: must be >= 1, got {req.max_chunks_per_doc}")
        chunking = req.max_chunks_per_doc > 1 if chunking is None else chunking
    return RerankJob(
        check_query(req.query, limits), check_documents("documents", docs, limits), req.model,
        check_top_n(req.top_n, limits), chunking, originals=list(req.documents),
    )


def job_from_v2(req: RerankV2Request, limits: ServeLimits) -> RerankJob:
    if req.max_tokens_per_doc is not None and req.max_tokens_per_doc < 1:
        raise RequestError(422, f"max_tokens_per_doc: must be >= 1, got {req.max_tokens_per_doc}")
    return RerankJob(
        check_query(req.query, limits), check_documents("documents", list(req.documents), limits), req.model,
        check_top_n(req.top_n, limits), req.chunking, req.max_tokens_per_doc,
    )


def job_from_tei(req: TEIRerankRequest, limits: ServeLimits) -> RerankJob:
    return RerankJob(
        check_query(req.query, limits), check_documents("texts", list(req.texts), limits), req.model,
        None, req.chunking, reject_truncation=not req.truncate and not req.chunking, field="texts",
        truncate_left=req.truncation_direction.lower() == "left",
    )


def order(scores: list[float], top_n: int | None) -> list[int]:
    """Indices by descending score (ties: input order), cut to ``top_n``."""
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return ranked if top_n is None else ranked[:top_n]


# ---- responses ---------------------------------------------------------------------------------


@dataclass
class Scored:
    """What the reranker returns for one job: per document (input order), the score kind, the model."""

    scores: list[DocumentScore]
    kind: str
    model: str
    relevance: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.relevance:
            self.relevance = relevance_scores([s.score for s in self.scores], self.kind)


def search_units(scores: Sequence[DocumentScore]) -> int:
    """Cohere's billing: one search unit per 100 documents, a chunked document counting once per window."""
    return max(1, math.ceil(sum(s.chunks for s in scores) / 100))


def _details(s: DocumentScore) -> dict[str, Any]:
    return {"tokens": s.tokens, "truncated": s.truncated, "chunks": s.chunks}


def _cohere_meta(version: str, scored: Scored) -> dict[str, Any]:
    return {
        "api_version": {"version": version},
        "billed_units": {"search_units": search_units(scored.scores)},
        "rankdistill": {"model": scored.model, "score": describe_score(scored.kind),
                        "documents": [_details(s) for s in scored.scores]},
    }


def cohere_response(version: str, job: RerankJob, scored: Scored, return_documents: bool) -> dict[str, Any]:
    """Cohere v1 / v2 rerank response. Documents are echoed as sent (v1 objects keep every field;
    strings become ``{"text": ...}``)."""
    results = []
    for i in order(scored.relevance, job.top_n):
        row: dict[str, Any] = {"index": i, "relevance_score": scored.relevance[i]}
        if return_documents:
            original = job.originals[i] if job.originals else job.documents[i]
            row["document"] = original if isinstance(original, dict) else {"text": original}
        results.append(row)
    return {"id": str(uuid.uuid4()), "results": results, "meta": _cohere_meta(version, scored)}


def tei_response(job: RerankJob, scored: Scored, raw_scores: bool, return_text: bool) -> list[dict[str, Any]]:
    """TEI's ``[{index, score, text?}]`` by descending score; ``score`` is the relevance in [0, 1]
    unless ``raw_scores`` asks for the raw score."""
    values = [s.score for s in scored.scores] if raw_scores else scored.relevance
    out = []
    for i in order(values, None):
        row: dict[str, Any] = {"index": i, "score": values[i]}
        if return_text:
            row["text"] = job.documents[i]
        out.append(row)
    return out


def search_response(hits: Sequence[tuple[str, float, str]], scored: Scored | None, top_n: int | None,
                    return_documents: bool) -> dict[str, Any]:
    """``/search``: per result the id, both stages' scores and this server's details."""
    if scored is None:
        return {"id": str(uuid.uuid4()), "results": [], "meta": {"retrieved": 0}}
    results = []
    for i in order(scored.relevance, top_n):
        docid, first_stage, text = hits[i]
        row = {"id": docid, "rank": len(results) + 1, "retrieval_score": first_stage,
               "relevance_score": scored.relevance[i], "score": scored.scores[i].score, **_details(scored.scores[i])}
        if return_documents:
            row["text"] = text
        results.append(row)
    return {"id": str(uuid.uuid4()), "model": scored.model, "results": results,
            "meta": {"retrieved": len(hits), "score": describe_score(scored.kind)}}
