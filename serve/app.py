"""Ray Serve app: trained rerankers (and BM25 → rerank) behind the rerank APIs people already call.

Three deployments composed through DeploymentHandles::

    HTTP ─▶ Gateway (FastAPI: /v1/rerank, /v2/rerank, /rerank, /search, /healthz, /v1/models, auth, limits)
              │  .options(multiplexed_model_id=model)
              ├──────────▶ Reranker (multiplexed models, @serve.batch by token budget, Scorer)
              └──────────▶ Retriever (BM25 now; any rankdistill.serving.retrieval.Retriever)

Start it with ``serve run serve/config.yaml`` (see serve/README.md) or ``serve.run(build_app(args))``.
Scoring, batching plans, request schemas and model loading live in the library
(``rankdistill.serving``, ``rankdistill.tracking.models``); this file only wires them to Serve.
"""


import asyncio
import hashlib
import hmac
import importlib
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from rankdistill.serving.config import ServeAppConfig
from rankdistill.serving.schemas import (
    RequestError,
    RerankJob,
    RerankV1Request,
    RerankV2Request,
    SearchRequest,
    TEIRerankRequest,
    check_query,
    check_top_n,
    job_from_tei,
    job_from_v1,
    job_from_v2,
    order,
)
from rankdistill.serving.scoring import DocumentScore, Prepared, Scorer, relevance_scores
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

#: paths answered without a token (liveness probes and the API description)
PUBLIC_PATHS = ("/healthz", "/docs", "/openapi.json", "/redoc")
LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


# --------------------------------------------------------------------------------------------
# Reranker deployment
# --------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One request waiting in the batch queue."""

    model_id: str
    scorer: Scorer
    prepared: Prepared
    cost: int  # tokens, capped at the budget so a single large request still forms a batch


def _batch_cost(items: list[_Item]) -> int:
    return sum(item.cost for item in items)


@serve.deployment(max_ongoing_requests=64, max_queued_requests=256)
class Reranker:
    """Scores (query, documents) for one of the configured models, chosen by multiplexed model id."""

    def __init__(self, config: dict[str, Any]):
        from ray.serve.metrics import Counter, Histogram

        self.config = ServeAppConfig.from_dict(config)
        self._unbatched_lock = asyncio.Lock()
        self._score_batch.set_max_batch_size(self.config.scoring.token_budget)
        self._score_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.m_batch_requests = Histogram(
            "rankdistill_batch_requests", "requests per scored batch",
            boundaries=[1, 2, 4, 8, 16, 32, 64], tag_keys=("model",),
        )
        self.m_batch_rows = Histogram(
            "rankdistill_batch_passages", "passages (incl. chunks) per scored batch",
            boundaries=[1, 10, 50, 100, 500, 1000, 5000], tag_keys=("model",),
        )
        self.m_tokens = Counter("rankdistill_tokens", "non-padding tokens scored", tag_keys=("model",))
        self.m_padded = Counter("rankdistill_padded_tokens", "token slots computed incl. padding", tag_keys=("model",))

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_scorer(self, model_id: str) -> Scorer:
        from rankdistill.tracking.models import load_reranker_from

        source = self.config.models[model_id]
        model = await asyncio.to_thread(load_reranker_from, source, self.config.tracking_uri)
        return Scorer(model, self.config.scoring)

    async def describe(self, model_id: str) -> dict[str, Any]:
        scorer = await self.get_scorer(model_id)
        return {"architecture": scorer.model.registry_name, "dtype": str(scorer.dtype).replace("torch.", ""),
                "passage_length": scorer.passage_length, "score": scorer.score_kind}

    async def rerank(self, job: RerankJob) -> tuple[list[DocumentScore], str]:
        """Scores per document (input order) and the score kind (``logit`` or ``pair_sum``)."""
        model_id = serve.get_multiplexed_model_id() or self.config.default_model
        if model_id not in self.config.models:
            raise RequestError(404, f"model: unknown model '{model_id}'; available: {sorted(self.config.models)}")
        scorer = await self.get_scorer(model_id)
        # tokenising runs on a worker thread, off the event loop and the scoring thread
        prepared = await asyncio.to_thread(
            scorer.prepare, job.query, job.documents, job.chunking, job.max_tokens_per_doc
        )
        if job.reject_truncation:
            long_docs = [i for i, cut in enumerate(prepared.truncated) if cut]
            if long_docs:
                raise RequestError(
                    413,
                    f"texts{long_docs[:10]}: longer than the model's {scorer.passage_length} passage tokens; "
                    "send truncate=true (or chunking=true)",
                )
        if not self.config.batching:
            async with self._unbatched_lock:
                results = await asyncio.to_thread(self._score_group, model_id, scorer, [prepared])
            return results[0], scorer.score_kind
        cost = min(prepared.num_tokens, self.config.scoring.token_budget)
        result = await self._score_batch(_Item(model_id, scorer, prepared, max(cost, 1)))
        if isinstance(result, Exception):  # this model's group failed in the batch (see _score_batch)
            raise result
        return result, scorer.score_kind

    @serve.batch(max_batch_size=8192, batch_wait_timeout_s=0.005, batch_size_fn=_batch_cost)
    async def _score_batch(self, items: list[_Item]) -> list[list[DocumentScore]]:
        """One server batch (token budget via ``batch_size_fn``): each model's requests scored together."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[item.model_id].append(i)
        out: list[Any] = [None] * len(items)
        for model_id, idx in groups.items():
            scorer = items[idx[0]].scorer
            try:
                results = await asyncio.to_thread(self._score_group, model_id, scorer, [items[i].prepared for i in idx])
            except Exception as exc:  # noqa: BLE001 - one model failing must not fail the others
                results = [exc] * len(idx)
            for i, r in zip(idx, results):
                out[i] = r
        return out

    def _score_group(self, model_id: str, scorer: Scorer, prepared: list[Prepared]) -> list[list[DocumentScore]]:
        results = scorer.score_prepared(prepared)
        stats = scorer.last_stats
        tags = {"model": model_id}
        self.m_batch_requests.observe(stats.requests, tags=tags)
        self.m_batch_rows.observe(stats.rows, tags=tags)
        self.m_tokens.inc(stats.tokens, tags=tags)
        self.m_padded.inc(stats.padded_tokens, tags=tags)
        return results

    def pid(self) -> int:
        return os.getpid()


# --------------------------------------------------------------------------------------------
# Retriever deployment
# --------------------------------------------------------------------------------------------


@serve.deployment(max_ongoing_requests=32)
class Retriever:
    """First stage of ``/search`` (see :mod:`rankdistill.serving.retrieval`)."""

    def __init__(self, config: dict[str, Any]):
        from rankdistill.serving.retrieval import build_retriever

        self.retriever = build_retriever(config)

    def search(self, query: str, k: int) -> list[tuple[str, float, str]]:
        return [(h.docid, h.score, self.retriever.text(h.docid)) for h in self.retriever.search(query, k)]


# --------------------------------------------------------------------------------------------
# HTTP gateway
# --------------------------------------------------------------------------------------------

api = FastAPI(
    title="rankdistill rerank",
    description="Trained rankdistill rerankers behind the Cohere v1/v2, Jina and text-embeddings-inference "
    "rerank APIs, plus BM25 → rerank search.",
    version="0.1.0",
)
_GATEWAY: dict[str, Any] = {}  # the one Gateway of this replica process (middleware reads its limits/token)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    gateway = _GATEWAY.get("self")
    if gateway is not None:
        gateway.count_error(request, exc.status)
    return _error(exc.status, exc.message, exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    malformed = any(e.get("type") in ("json_invalid", "json_type") for e in errors)
    parts = []
    for e in errors[:10]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    status = 400 if malformed else 422
    gateway = _GATEWAY.get("self")
    if gateway is not None:
        gateway.count_error(request, status)
    return _error(status, ("malformed JSON body; " if malformed else "") + "; ".join(parts))


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    gateway = _GATEWAY.get("self")
    if gateway is not None:
        gateway.count_error(request, 500)
    return _error(500, f"internal error: {type(exc).__name__}: {str(exc)[:500]}")


@api.middleware("http")
async def _auth_and_size(request: Request, call_next):
    gateway = _GATEWAY.get("self")
    if gateway is not None and request.url.path not in PUBLIC_PATHS:
        if not gateway.authorized(request.headers.get("authorization")):
            gateway.count_error(request, 401)
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                          {"WWW-Authenticate": "Bearer"})
        limit = gateway.config.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            gateway.count_error(request, 413)
            return _error(413, f"request body of {length} bytes is larger than the limit of {limit}")
        if length is None and request.method == "POST":
            body = await request.body()
            if len(body) > limit:
                gateway.count_error(request, 413)
                return _error(413, f"request body of {len(body)} bytes is larger than the limit of {limit}")
    return await call_next(request)


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Gateway:
    """HTTP ingress: validates, authenticates, routes to the Reranker (per model) and the Retriever."""

    def __init__(self, reranker: DeploymentHandle, retriever: DeploymentHandle | None, config: dict[str, Any],
                 token_sha256: str | None = None):
        from ray.serve.metrics import Counter, Histogram

        self.config = ServeAppConfig.from_dict(config)
        self.reranker = reranker
        self.retriever = retriever
        token = os.environ.get(self.config.auth_token_env)
        self.token_sha256 = token_sha256 or (hashlib.sha256(token.encode()).hexdigest() if token else None)
        self.m_latency = Histogram("rankdistill_request_latency_ms", "request latency per model and API",
                                   boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("model", "api"))
        self.m_errors = Counter("rankdistill_request_errors", "requests answered with an error status",
                                tag_keys=("api", "status"))
        # Serve pickles this class by value (its globals are a copy); the middleware and the error
        # handlers live in the imported module, so register there
        importlib.import_module(__name__)._GATEWAY["self"] = self

    def authorized(self, header: str | None) -> bool:
        if self.token_sha256 is None:
            return True
        if not header or not header.lower().startswith("bearer "):
            return False
        given = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        return hmac.compare_digest(given, self.token_sha256)

    def count_error(self, request: Request, status: int) -> None:
        self.m_errors.inc(tags={"api": request.url.path, "status": str(status)})

    async def _scores(self, job: RerankJob, api_name: str) -> tuple[list[DocumentScore], str, str]:
        model = job.model or self.config.default_model
        if model not in self.config.models:
            raise RequestError(404, f"model: unknown model '{model}'; available: {sorted(self.config.models)}")
        start = time.perf_counter()
        try:
            scores, kind = await self.reranker.options(multiplexed_model_id=model).rerank.remote(job)
        except BackPressureError as exc:
            raise RequestError(429, "the reranker's queue is full; retry later", {"Retry-After": "1"}) from exc
        except RequestError:
            raise
        except (RayActorError, ActorUnavailableError) as exc:  # a replica died or restarts mid-request
            raise RequestError(503, f"the reranker replica failed during the request ({type(exc).__name__}); "
                                    "retry", {"Retry-After": "1"}) from exc
        self.m_latency.observe((time.perf_counter() - start) * 1000, tags={"model": model, "api": api_name})
        return scores, kind, model

    @staticmethod
    def _relevance(scores: list[DocumentScore], kind: str) -> list[float]:
        return relevance_scores([s.score for s in scores], kind)

    @staticmethod
    def _doc_info(s: DocumentScore) -> dict[str, Any]:
        return {"tokens": s.tokens, "truncated": s.truncated, "chunks": s.chunks}

    @api.post("/v1/rerank", summary="Cohere v1 / Jina rerank")
    async def rerank_v1(self, body: RerankV1Request) -> dict[str, Any]:
        job = job_from_v1(body, self.config.limits)
        scores, kind, model = await self._scores(job, "/v1/rerank")
        rel = self._relevance(scores, kind)
        results = []
        for i in order(rel, job.top_n):
            row = {"index": i, "relevance_score": rel[i], **self._doc_info(scores[i])}
            if body.return_documents:
                row["document"] = {"text": job.documents[i]}
            results.append(row)
        return {"id": str(uuid.uuid4()), "model": model, "results": results,
                "meta": {"api_version": {"version": "1"}, "score": f"sigmoid({kind})"}}

    @api.post("/v2/rerank", summary="Cohere v2 rerank")
    async def rerank_v2(self, body: RerankV2Request) -> dict[str, Any]:
        job = job_from_v2(body, self.config.limits)
        scores, kind, model = await self._scores(job, "/v2/rerank")
        rel = self._relevance(scores, kind)
        results = [{"index": i, "relevance_score": rel[i], **self._doc_info(scores[i])} for i in order(rel, job.top_n)]
        return {"id": str(uuid.uuid4()), "results": results,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}, "model": model}}

    @api.post("/rerank", summary="text-embeddings-inference rerank")
    async def rerank_tei(self, body: TEIRerankRequest) -> list[dict[str, Any]]:
        job = job_from_tei(body, self.config.limits)
        scores, kind, _ = await self._scores(job, "/rerank")
        values = [s.score for s in scores] if body.raw_scores else self._relevance(scores, kind)
        out = []
        for i in order(values, None):
            row = {"index": i, "score": values[i], **self._doc_info(scores[i])}
            if body.return_text:
                row["text"] = job.documents[i]
            out.append(row)
        return out

    @api.post("/search", summary="retrieve (first stage) then rerank")
    async def search(self, body: SearchRequest) -> dict[str, Any]:
        if self.retriever is None:
            raise RequestError(404, "no retriever is configured on this endpoint (args.retriever)")
        query = check_query(body.query, self.config.limits)
        if not 1 <= body.k <= self.config.limits.max_search_k:
            raise RequestError(422, f"k: must be between 1 and {self.config.limits.max_search_k}, got {body.k}")
        top_n = check_top_n(body.top_n, self.config.limits)
        hits = await self.retriever.search.remote(query, body.k)
        if not hits:
            return {"id": str(uuid.uuid4()), "results": [], "meta": {"retrieved": 0}}
        job = RerankJob(query, [text for _, _, text in hits], body.model, top_n, body.chunking)
        scores, kind, model = await self._scores(job, "/search")
        rel = self._relevance(scores, kind)
        results = []
        for i in order(rel, top_n):
            docid, first_stage, text = hits[i]
            row = {"id": docid, "rank": len(results) + 1, "retrieval_score": first_stage,
                   "relevance_score": rel[i], "score": scores[i].score, **self._doc_info(scores[i])}
            if body.return_documents:
                row["text"] = text
            results.append(row)
        return {"id": str(uuid.uuid4()), "model": model, "results": results, "meta": {"retrieved": len(hits)}}

    @api.get("/healthz", summary="liveness")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "models": sorted(self.config.models), "retriever": self.retriever is not None}

    @api.get("/v1/models", summary="served models")
    async def models(self) -> dict[str, Any]:
        data = []
        for name in self.config.models:
            info = await self.reranker.options(multiplexed_model_id=name).describe.remote(name)
            kind = info["score"]
            data.append({
                "id": name, "object": "model", "default": name == self.config.default_model, **info,
                "relevance_score": "sigmoid of the logit" if kind == "logit" else "pair aggregate scaled to [0, 1]",
                "raw_score": kind,
            })
        return {"object": "list", "data": data}


# --------------------------------------------------------------------------------------------
# application builder (serve run serve/config.yaml, or serve.run(build_app(args)))
# --------------------------------------------------------------------------------------------


def build_app(args: dict[str, Any]):
    """The Serve application for ``args`` (:class:`ServeAppConfig` fields)."""
    config = ServeAppConfig.from_dict(args)
    plain = config.to_dict()
    token = os.environ.get(config.auth_token_env)
    token_sha256 = hashlib.sha256(token.encode()).hexdigest() if token else None
    reranker_options = dict(config.reranker_options)
    if config.batching:
        # Serve batches at most max_ongoing_requests concurrent requests per replica
        reranker_options.setdefault("max_ongoing_requests", 64)
    reranker = Reranker.options(**reranker_options).bind(plain)
    retriever = Retriever.options(**config.retriever_options).bind(config.retriever) if config.retriever else None
    return Gateway.options(**config.gateway_options).bind(reranker, retriever, plain, token_sha256)
