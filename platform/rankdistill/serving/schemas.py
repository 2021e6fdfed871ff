"""Request and response shapes of the rerank APIs people already call, and their checks.

=================  ==================================================================================
``POST /v1/rerank`` Cohere v1 / Jina: ``query``, ``documents`` (strings or ``{"text": ...}``), ``top_n``,
                   ``return_documents``, ``max_chunks_per_doc``; ``{id, results: [{index,
                   relevance_score, document?}], meta}`` sorted by score.
``POST /v2/rerank`` Cohere v2: ``model``, ``query``, string ``documents``, ``top_n``,
                   ``max_tokens_per_doc``; ``{id, results: [{index, relevance_score}], meta}``.
``POST /rerank``    text-embeddings-inference: ``query``, ``texts``, ``raw_scores``, ``return_text``,
                   ``truncate``; a bare array ``[{index, score, text?}]`` sorted by score.
``POST /search``    rankdistill: ``query``, ``k`` (first stage), ``top_n``, ``return_documents``.
=================  ==================================================================================

Every result also carries ``tokens`` (document tokens before truncation), ``truncated`` and
``chunks`` (windows scored). ``relevance_score`` is ``sigmoid(logit)`` in [0, 1]; TEI's ``score`` is
the sigmoid too unless ``raw_scores`` asks for the logit. Extension fields accepted by every rerank
shape: ``model`` (multiplexed model name) and ``chunking`` (split long documents).

Problems raise :class:`RequestError` with an HTTP status (400/401/404/413/422/429) and a message
naming the field; pydantic checks types and required fields (422).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from rankdistill.errors import RankdistillError


class RequestError(RankdistillError, ValueError):
    """A bad HTTP request: ``status`` is the HTTP status, the message names the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status = int(status)
        self.message = message
        self.headers = headers or {}
        super().__init__(f"{status}: {message}")

    def __reduce__(self):  # crosses Ray process boundaries intact
        return (RequestError, (self.status, self.message, self.headers))


@dataclass
class ServeLimits:
    """Per-request limits (413 when exceeded).

    Args:
        max_documents: documents per request.
        max_document_chars: characters per document.
        max_query_chars: characters of the query.
        max_body_bytes: HTTP body size.
        max_search_k: most first-stage candidates ``/search`` may ask for.
    """

    max_documents: int = 1000
    max_document_chars: int = 50_000
    max_query_chars: int = 4_000
    max_body_bytes: int = 4_000_000
    max_search_k: int = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(None, description="model name (multiplexing); default model when absent")
    query: StrictStr = Field(..., description="the search query")
    chunking: StrictBool | None = Field(None, description="split long documents into overlapping windows (max)")


class TextDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: StrictStr


class RerankV1Request(_Request):
    """Cohere v1 / Jina rerank."""

    documents: list[StrictStr | TextDocument]
    top_n: StrictInt | None = None
    return_documents: StrictBool = True
    max_chunks_per_doc: StrictInt | None = Field(None, description="Cohere v1: > 1 turns chunking on")


class RerankV2Request(_Request):
    """Cohere v2 rerank."""

    documents: list[StrictStr]
    top_n: StrictInt | None = None
    max_tokens_per_doc: StrictInt | None = None


class TEIRerankRequest(_Request):
    """text-embeddings-inference ``/rerank``."""

    texts: list[StrictStr]
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool = False


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


def check_query(query: str, limits: ServeLimits) -> str:
    if not query.strip():
        raise RequestError(422, "query: must be a non-empty string")
    if len(query) > limits.max_query_chars:
        raise RequestError(413, f"query: {len(query)} characters, more than the limit of {limits.max_query_chars}")
    return query


def check_documents(field: str, documents: list[str], limits: ServeLimits) -> list[str]:
    if not documents:
        raise RequestError(422, f"{field}: must hold at least one document")
    if len(documents) > limits.max_documents:
        raise RequestError(413, f"{field}: {len(documents)} documents, more than the limit of {limits.max_documents}")
    for i, text in enumerate(documents):
        if not text.strip():
            raise RequestError(422, f"{field}[{i}]: empty document")
        if len(text) > limits.max_document_chars:
            raise RequestError(
                413, f"{field}[{i}]: {len(text)} characters, more than the limit of {limits.max_document_chars}"
            )
    return documents


def check_top_n(top_n: int | None, limits: ServeLimits) -> int | None:
    """``top_n`` must be >= 1 and <= ``max_documents``; above the number of documents it returns all."""
    if top_n is not None and not 1 <= top_n <= limits.max_documents:
        raise RequestError(422, f"top_n: must be between 1 and {limits.max_documents}, got {top_n}")
    return top_n


def job_from_v1(req: RerankV1Request, limits: ServeLimits) -> RerankJob:
    docs = [d if isinstance(d, str) else d.text for d in req.documents]
    chunking = req.chunking
    if req.max_chunks_per_doc is not None:
        if req.max_chunks_per_doc < 1:
            raise RequestError(422, f"max_chunks_per_doc: must be >= 1, got {req.max_chunks_per_doc}")
        chunking = req.max_chunks_per_doc > 1 if chunking is None else chunking
    return RerankJob(
        check_query(req.query, limits), check_documents("documents", docs, limits), req.model,
        check_top_n(req.top_n, limits), chunking,
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
        None, req.chunking, reject_truncation=not req.truncate and not req.chunking,
    )


def order(scores: list[float], top_n: int | None) -> list[int]:
    """Indices by descending score (ties: input order), cut to ``top_n``."""
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return ranked if top_n is None else ranked[:top_n]
