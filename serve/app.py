"""Ray Serve app: trained rerankers (and a first stage → rerank) behind the rerank APIs people already call.

Three deployments composed through DeploymentHandles::

    HTTP ─▶ Gateway (FastAPI: /v1/rerank, /v2/rerank, /rerank, /search, /healthz, /readyz, /livez,
              │       /health, /info, /v1/models; auth, body limits, errors)
              │  .options(multiplexed_model_id=model)
              ├──────────▶ RerankerDeployment (multiplexed models, @serve.batch by token budget, Scorer)
              └──────────▶ RetrieverDeployment (BM25 or a dense student; rankdistill.serving.retrieval)

Start it with ``serve run serve/config.yaml`` (see serve/README.md) or ``serve.run(build_app(args))``.
Scoring, slicing, request and response schemas and model loading live in the library
(``rankdistill.serving``, ``rankdistill.tracking.models``); this file only wires them to Serve.
"""


import asyncio
import importlib
import logging
import math
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from rankdistill.serving.config import ServeAppConfig, token_sha256
from rankdistill.serving.schemas import (
    RequestError,
    RerankJob,
    RerankV1Request,
    RerankV2Request,
    Scored,
    SearchRequest,
    TEIRerankRequest,
    check_query,
    check_text,
    check_top_n,
    cohere_response,
    describe_score,
    error_body,
    job_from_tei,
    job_from_v1,
    job_from_v2,
    search_response,
    tei_response,
)
from rankdistill.serving.scoring import DocumentScore, Prepared, Scorer
from rankdistill.serving.slicing import keep_last_tokens, split_pairs, split_prepared
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ray.serve")

#: paths answered without a token (probes and the API description)
PUBLIC_PATHS = ("/healthz", "/readyz", "/livez", "/health", "/docs", "/openapi.json", "/redoc")
LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
#: the replica's OpenMP settings: a passive wait policy, so idle torch threads sleep instead of
#: spinning on cores other processes want (spinning made a 21 ms forward pass take 150-270 ms)
REPLICA_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
READY_QUERY, READY_PASSAGE = "readiness check", "a passage scored to check that the default model answers"
#: a lazy model that failed to load is tried again after this long (503 with its reason meanwhile)
LOAD_RETRY_S = 30.0


# --------------------------------------------------------------------------------------------
# Reranker deployment
# --------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One slice of a request waiting in the batch queue."""

    model_id: str
    scorer: Scorer
    prepared: Prepared
    cost: int  # tokens (a pairwise slice: its pairs' tokens), capped at the budget so a large slice still forms a batch


def _batch_cost(items: list[_Item]) -> int:
    return sum(item.cost for item in items)


@serve.deployment(max_ongoing_requests=64, max_queued_requests=256, health_check_period_s=2)
class RerankerDeployment:
    """Scores (query, documents) for one of the configured models, chosen by multiplexed model id.
    Every model but those marked ``lazy`` is loaded when the replica starts, so a replica that is up
    can answer for each of them (one that cannot load fails the deployment, naming the model); a
    lazy model that fails to load answers 503 with its reason."""

    def __init__(self, config: dict[str, Any]):
        import torch
        from ray.serve.metrics import Counter, Histogram

        self.config = ServeAppConfig.from_dict(config)
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        self._unbatched_lock = asyncio.Lock()
        self._score_batch.set_max_batch_size(self.config.scoring.token_budget)
        self._score_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.m_batch_requests = Histogram(
            "rankdistill_batch_requests", "request slices per scored batch",
            boundaries=[1, 2, 4, 8, 16, 32, 64], tag_keys=("model",),
        )
        self.m_batch_rows = Histogram(
            "rankdistill_batch_passages", "passages (incl. chunks) per scored batch",
            boundaries=[1, 10, 50, 100, 500, 1000, 5000], tag_keys=("model",),
        )
        self.m_tokens = Counter("rankdistill_tokens", "non-padding tokens scored", tag_keys=("model",))
        self.m_padded = Counter("rankdistill_padded_tokens", "token slots computed incl. padding", tag_keys=("model",))
        #: slices scored and requests in progress (tests and operators read them through progress())
        self.slices_scored = 0
        self.active_requests = 0
        self._failed: dict[str, tuple[float, str]] = {}  # lazy model -> (when, why it failed to load)
        # eager: every non-lazy model is in memory before the replica takes requests; one that
        # cannot load fails the replica (and so the deployment), naming the model and its source
        self._preloaded = {name: self._load(name) for name in self.config.models
                           if name not in self.config.lazy_models}

    def _load(self, model_id: str) -> Scorer:
        from rankdistill.errors import ConfigError
        from rankdistill.tracking.models import load_reranker_from

        source = self.config.models[model_id]
        try:
            if os.path.isdir(source):  # a folder: say what is missing before the loader trips on it
                from rankdistill.models.registry import check_model_folder

                check_model_folder(source, f"models.{model_id}")
            return Scorer(load_reranker_from(source, self.config.tracking_uri), self.config.scoring)
        except Exception as exc:
            raise ConfigError(f"model '{model_id}' could not be loaded from '{source}': {type(exc).__name__}: {exc}",
                              key=f"models.{model_id}") from exc

    async def _scorer(self, model_id: str) -> Scorer:
        """The model's scorer; a model that fails to load is a 503 naming it and why."""
        failed = self._failed.get(model_id)
        if failed is not None and time.monotonic() - failed[0] < LOAD_RETRY_S:
            raise self._unavailable(model_id, failed[1])
        try:
            scorer = await self.get_scorer(model_id)
        except Exception as exc:  # noqa: BLE001 - any load failure makes this model unavailable
            cause = exc.__cause__ or exc
            reason = f"{type(cause).__name__}: {cause}".replace(self.config.models[model_id], f"<models.{model_id}>")
            logger.warning("model %s is unavailable: %s", model_id, reason)
            self._failed[model_id] = (time.monotonic(), reason)
            raise self._unavailable(model_id, reason) from None
        self._failed.pop(model_id, None)
        return scorer

    @staticmethod
    def _unavailable(model_id: str, reason: str) -> RequestError:
        return RequestError(503, f"model '{model_id}' is unavailable: it failed to load ({reason[:500]})",
                            {"Retry-After": str(int(LOAD_RETRY_S))})

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_scorer(self, model_id: str) -> Scorer:
        if model_id in self._preloaded:
            return self._preloaded[model_id]
        return await asyncio.to_thread(self._load, model_id)

    def check_health(self) -> None:
        """Serve's periodic replica health check."""
        if self.config.default_model not in self._preloaded:
            raise RuntimeError("the default model is not loaded")

    async def describe(self, model_id: str) -> dict[str, Any]:
        import torch

        try:
            scorer = await self._scorer(model_id)
        except RequestError as exc:
            return {"status": "unavailable", "reason": exc.message}
        return {"status": "ready", "architecture": scorer.model.registry_name, "dtype": str(scorer.dtype).replace("torch.", ""),
                "passage_length": scorer.passage_length, "score": describe_score(scorer.score_kind),
                "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

    async def rerank(self, job: RerankJob) -> Scored:
        """Scores per document (input order), the score kind and the model that scored them."""
        self.active_requests += 1
        try:
            return await self._rerank(job)
        finally:
            self.active_requests -= 1

    async def _rerank(self, job: RerankJob) -> Scored:
        limits = self.config.limits
        deadline = time.monotonic() + limits.request_timeout_s
        model_id = self.config.resolve_model(serve.get_multiplexed_model_id() or job.model)
        scorer = await self._scorer(model_id)
        if scorer.pairwise and len(job.documents) > 1:  # refused before tokenising, chunks aside
            self._check_pairs(model_id, job.field, len(job.documents), len(job.documents))
        documents, counts = job.documents, None
        if job.truncate_left:
            limit = scorer.passage_length if not job.max_tokens_per_doc else min(scorer.passage_length,
                                                                                 job.max_tokens_per_doc)
            documents, counts = await asyncio.to_thread(keep_last_tokens, scorer.tokenizer, documents, limit)
        # tokenising runs on a worker thread, off the event loop and the scoring thread
        prepared = await asyncio.to_thread(scorer.prepare, job.query, documents, job.chunking, job.max_tokens_per_doc)
        if counts is not None:  # report the documents as sent: their full length, and cut
            prepared.truncated = [cut or n > t for cut, n, t in zip(prepared.truncated, counts, prepared.doc_tokens)]
            prepared.doc_tokens = counts
        empty = [i for i, n in enumerate(prepared.doc_tokens) if n == 0]
        if empty:
            raise RequestError(422, f"{job.field}{empty[:10]}: empty document after the model's tokenizer "
                                    "normalises it (no tokens left)")
        if job.reject_truncation:
            long_docs = [i for i, cut in enumerate(prepared.truncated) if cut]
            if long_docs:
                raise RequestError(
                    413,
                    f"{job.field}{long_docs[:10]}: longer than the model's {scorer.passage_length} passage tokens; "
                    "send truncate=true (or chunking=true)",
                )
        cap = limits.max_request_tokens
        if prepared.num_tokens > cap:
            raise RequestError(413, f"request: {prepared.num_tokens} tokens to score (query + documents after "
                                    f"truncation or chunking), more than the limit of {cap} tokens "
                                    f"(limits.max_request_tokens); {job.too_large_hint}")
        budget = self.config.scoring.token_budget
        # one slice in the queue at a time: requests arriving meanwhile join the next batch; a
        # cancelled request (client gone) or one past its deadline queues no further slice
        if scorer.pairwise:
            self._check_pairs(model_id, job.field, len(prepared.pieces), prepared.num_documents)
            probabilities: list[float] = []
            parts = split_pairs(prepared, budget)
            for i, part in enumerate(parts):
                self._check_deadline(deadline, i, len(parts))
                probabilities.extend(await self._score_slice(model_id, scorer, part))
            return Scored(scorer.aggregate_pairs(prepared, probabilities), scorer.score_kind, model_id)
        scores: list[DocumentScore] = []
        parts = split_prepared(prepared, budget)
        for i, part in enumerate(parts):
            self._check_deadline(deadline, i, len(parts))
            scores.extend(await self._score_slice(model_id, scorer, part))
        return Scored(scores, scorer.score_kind, model_id)

    def _check_pairs(self, model_id: str, name: str, pieces: int, documents: int) -> None:
        """A pairwise model scores every ordered pair of passages: refuse fewer than 2 (no pair
        to compare) and more than ``limits.max_pairs`` pairs."""
        cap = self.config.limits.max_pairs
        if pieces < 2:
            raise RequestError(422, f"{name}: the pairwise model '{model_id}' scores documents against each other; "
                                    "send at least 2 documents")
        pairs = pieces * (pieces - 1)
        if pairs > cap:
            windows = f" ({pieces} passages after chunking)" if pieces != documents else ""
            raise RequestError(413, f"{name}: {documents} documents{windows} make {pairs} passage pairs for the "
                                    f"pairwise model '{model_id}', more than the limit of {cap} pairs "
                                    f"(limits.max_pairs, about {int((1 + math.sqrt(1 + 4 * cap)) / 2)} documents); "
                                    "send fewer documents or use a pointwise model")

    def _check_deadline(self, deadline: float, done: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise RequestError(504, f"request: not scored within {self.config.limits.request_timeout_s:g} s "
                                    f"(limits.request_timeout_s); stopped after {done} of {total} slices")

    def progress(self) -> dict[str, int]:
        """Slices scored since start and requests in progress (to see that dropped work stops)."""
        return {"slices_scored": self.slices_scored, "active_requests": self.active_requests}

    async def ready(self) -> Scored:
        """Score two passages on the default model (readiness; two, so a pairwise model has a pair)."""
        return await self.rerank(RerankJob(READY_QUERY, [READY_PASSAGE, READY_QUERY], self.config.default_model))

    async def _score_slice(self, model_id: str, scorer: Scorer, prepared: Prepared) -> list[Any]:
        if not self.config.batching:
            async with self._unbatched_lock:
                result = (await asyncio.to_thread(self._score_group, model_id, scorer, [prepared]))[0]
        else:
            cost = min(prepared.cost, self.config.scoring.token_budget)
            result = await self._score_batch(_Item(model_id, scorer, prepared, max(cost, 1)))
        self.slices_scored += 1
        if isinstance(result, Exception):  # this model's group failed in the batch (see _score_batch)
            raise result
        return result

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

    def _score_group(self, model_id: str, scorer: Scorer, prepared: list[Prepared]) -> list[list[Any]]:
        """Document scores of each item, or for a pairwise model each pair slice's probabilities."""
        results = scorer.score_pairs(prepared) if scorer.pairwise else scorer.score_prepared(prepared)
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
class RetrieverDeployment:
    """First stage of ``/search`` (see :mod:`rankdistill.serving.retrieval`)."""

    def __init__(self, config: dict[str, Any]):
        from rankdistill.serving.retrieval import build_retriever

        self.retriever = build_retriever(config)

    def search(self, query: str, k: int) -> list[tuple[str, float, str]]:
        return [(h.docid, h.score, self.retriever.text(h.docid)) for h in self.retriever.search(query, k)]


# --------------------------------------------------------------------------------------------
# HTTP gateway
# --------------------------------------------------------------------------------------------


def _replicas_up(handle: DeploymentHandle) -> int | None:
    """Replicas the handle's router can send requests to, or None when unknown (read from Serve's
    router, best effort: Serve has no public API for it)."""
    try:
        return len(handle._router._asyncio_router._active_request_router.curr_replicas)
    except Exception:  # noqa: BLE001 - internals moved: behave as before (wait up to queue_timeout_s)
        return None


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: renders any Python string, a lone surrogate in an echoed field
    name included, instead of failing to encode it."""

    def render(self, content: Any) -> bytes:
        import json

        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


api = FastAPI(
    title="rankdistill rerank",
    description="Trained rankdistill rerankers behind the Cohere v1/v2, Jina and text-embeddings-inference "
    "rerank APIs, plus first stage (BM25 or a dense student) → rerank search.",
    version="0.2.0",
    default_response_class=SafeJSONResponse,
)
_GATEWAY: dict[str, Any] = {}  # the one Gateway of this replica process (middleware reads its limits/token)
ROUTE_KEY = "rankdistill.route"
#: the app's routes (metric labels); anything else is "unknown"
#: the routes whose POST body is JSON (any other Content-Type: 415)
JSON_ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank", "/search")
ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank", "/search", "/healthz", "/readyz", "/health", "/livez", "/info",
          "/v1/models", "/docs", "/openapi.json", "/redoc")


def _error(status: int, message: str, headers: dict[str, str] | None = None,
           error_type: str | None = None) -> SafeJSONResponse:
    return SafeJSONResponse(error_body(status, message, error_type), status_code=status, headers=headers)


def route_template(scope: dict[str, Any]) -> str:
    """The route a request matched (``/v1/rerank``), or ``unknown``: a bounded metric label. Every
    route of this app is a fixed path, so the template is the path when it is one of them."""
    if ROUTE_KEY not in scope:
        path = scope.get("path", "")
        known = {getattr(r, "path", None) for r in api.router.routes} | set(ROUTES)
        scope[ROUTE_KEY] = path if path in known else "unknown"
    return scope[ROUTE_KEY]


def _count(request_or_scope: Any, status: int) -> None:
    gateway = _GATEWAY.get("self")
    if gateway is not None:
        scope = request_or_scope.scope if isinstance(request_or_scope, Request) else request_or_scope
        gateway.count_error(route_template(scope), status)


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    _count(request, exc.status)
    return _error(exc.status, exc.message, exc.headers, exc.error_type)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    malformed = any(e.get("type") in ("json_invalid", "json_type") for e in errors)
    parts = []
    for e in errors[:10]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        msg = "unknown field, not part of this API" if e.get("type") == "extra_forbidden" else e.get("msg")
        parts.append(f"{loc}: {msg}")
    status = 400 if malformed else 422
    _count(request, status)
    return _error(status, ("malformed JSON body; " if malformed else "") + "; ".join(parts))


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    _count(request, exc.status_code)
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return _error(exc.status_code, message, dict(exc.headers or {}))


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # the details (traceback, actor ids, paths) go to the server log only, never to the client
    reference = uuid.uuid4().hex[:12]
    logger.exception("internal error %s on %s %s", reference, request.method, request.url.path, exc_info=exc)
    _count(request, 500)
    return _error(500, f"internal error (reference {reference}); the server log has the details")


class EdgeMiddleware:
    """Authentication, then the request body read under limits: streamed and counted (413 as soon
    as it passes ``max_body_bytes``, chunked or not), each piece awaited at most
    ``body_read_timeout_s`` (408), so slow or huge bodies cannot hold the gateway."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gateway = _GATEWAY.get("self")
        if scope["type"] != "http" or gateway is None:
            await self.app(scope, receive, send)
            return
        route_template(scope)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}

        async def reply(status: int, message: str, extra: dict[str, str] | None = None) -> None:
            _count(scope, status)
            await _error(status, message, extra)(scope, receive, send)

        if scope["path"] not in PUBLIC_PATHS:
            auth = headers.get(b"authorization")
            if not gateway.authorized(auth.decode("latin-1") if auth is not None else None):
                await reply(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                            {"WWW-Authenticate": "Bearer"})
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (scope["method"] == "POST" and scope["path"] in JSON_ROUTES and content_type != b"application/json"
                and not content_type.endswith(b"+json")):
            shown = content_type.decode("latin-1")[:100] or "none"
            await reply(415, f"Content-Type: {shown}; send the body as JSON with Content-Type: application/json")
            return
        limits = gateway.config.limits
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await reply(400, "Content-Length: not a number")
                return
            if int(length) > limits.max_body_bytes:
                await reply(413, f"request body of {int(length)} bytes is larger than the limit of "
                                 f"{limits.max_body_bytes} (limits.max_body_bytes)")
                return
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), limits.body_read_timeout_s)
            except TimeoutError:
                await reply(408, f"request body: nothing received for {limits.body_read_timeout_s} s "
                                 "(limits.body_read_timeout_s)")
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limits.max_body_bytes:
                await reply(413, f"request body: more than the limit of {limits.max_body_bytes} bytes "
                                 "(limits.max_body_bytes), stopped reading")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> dict[str, Any]:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


api.add_middleware(EdgeMiddleware)


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Gateway:
    """HTTP ingress: authenticates, validates, routes to the RerankerDeployment (per model) and the
    RetrieverDeployment, and shapes the responses (:mod:`rankdistill.serving.schemas`)."""

    def __init__(self, reranker: DeploymentHandle, retriever: DeploymentHandle | None, config: dict[str, Any],
                 token_hash: str | None = None):
        from ray.serve.metrics import Counter, Histogram

        self.config = ServeAppConfig.from_dict(config)
        self.reranker = reranker
        self.retriever = retriever
        self.token_sha256 = token_hash or token_sha256(os.environ.get(self.config.auth_token_env))
        #: set when a reranker replica is seen dead; queued requests then wait at most
        #: ``limits.unavailable_timeout_s`` for one (503 + Retry-After); cleared by a success
        self.reranker_down = False
        #: the last readiness result (monotonic time, body or None) and the check in flight
        self._ready_cache: tuple[float, dict[str, Any] | None] | None = None
        self._ready_task: asyncio.Future | None = None
        self.m_latency = Histogram("rankdistill_request_latency_ms", "request latency per model and API",
                                   boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("model", "api"))
        self.m_errors = Counter("rankdistill_request_errors", "requests answered with an error status, by route "
                                "template (unknown paths: api=unknown)", tag_keys=("api", "status"))
        # Serve pickles this class by value (its globals are a copy); the middleware and the error
        # handlers live in the imported module, so register there
        importlib.import_module(__name__)._GATEWAY["self"] = self

    def authorized(self, header: str | None) -> bool:
        import hmac

        if self.token_sha256 is None:
            return True
        if not header or not header.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(token_sha256(header[7:].strip()) or "", self.token_sha256)

    def count_error(self, route: str, status: int) -> None:
        self.m_errors.inc(tags={"api": route, "status": str(status)})

    def pid(self) -> int:
        return os.getpid()

    async def _call_reranker(self, model: str, method: str, *args: Any) -> Any:
        limits = self.config.limits
        response = getattr(self.reranker.options(multiplexed_model_id=model), method).remote(*args)
        retry = {"Retry-After": str(max(1, math.ceil(limits.unavailable_timeout_s)))}
        try:
            # wait for a replica to take the request: at most queue_timeout_s, and only
            # unavailable_timeout_s while no replica is up (a crash: fail fast, do not hang)
            assigned = asyncio.ensure_future(response._fetch_future_result_async())
            waited = 0.0
            while True:
                step = min(limits.unavailable_timeout_s, limits.queue_timeout_s - waited)
                done, _ = await asyncio.wait({assigned}, timeout=max(step, 0.0))
                if done:
                    break
                waited += step
                up = _replicas_up(self.reranker)
                self.reranker_down = self.reranker_down or up == 0
                if self.reranker_down or waited >= limits.queue_timeout_s:
                    assigned.cancel()
                    response.cancel()
                    why = "none is up" if self.reranker_down else "all are busy"
                    raise RequestError(503, f"no reranker replica took the request within {waited:g} s ({why}); "
                                            "retry", retry)
            assigned.result()
            result = await response
        except BackPressureError as exc:
            raise RequestError(429, "the reranker's queue is full; retry later", {"Retry-After": "1"}) from exc
        except RequestError:
            raise
        except (RayActorError, ActorUnavailableError) as exc:  # a replica died or restarts
            self.reranker_down = True
            raise RequestError(503, f"the reranker replica failed during the request ({type(exc).__name__}); "
                                    "retry", retry) from None
        self.reranker_down = False
        if self._ready_cache is not None and self._ready_cache[1] is None:
            self._ready_cache = None  # a replica answered: do not keep reporting the last failed check
        return result

    async def _scores(self, job: RerankJob, api_name: str) -> Scored:
        if job.model is not None:
            check_text("model", job.model)
        model = self.config.resolve_model(job.model)
        start = time.perf_counter()
        scored = await self._call_reranker(model, "rerank", job)
        self.m_latency.observe((time.perf_counter() - start) * 1000, tags={"model": model, "api": api_name})
        return scored

    @api.post("/v1/rerank", summary="Cohere v1 / Jina rerank")
    async def rerank_v1(self, body: RerankV1Request) -> dict[str, Any]:
        job = job_from_v1(body, self.config.limits)
        return cohere_response("1", job, await self._scores(job, "/v1/rerank"), bool(body.return_documents))

    @api.post("/v2/rerank", summary="Cohere v2 rerank")
    async def rerank_v2(self, body: RerankV2Request) -> dict[str, Any]:
        job = job_from_v2(body, self.config.limits)
        return cohere_response("2", job, await self._scores(job, "/v2/rerank"), bool(body.return_documents))

    @api.post("/rerank", summary="text-embeddings-inference rerank")
    async def rerank_tei(self, body: TEIRerankRequest) -> list[dict[str, Any]]:
        job = job_from_tei(body, self.config.limits)
        return tei_response(job, await self._scores(job, "/rerank"), bool(body.raw_scores), bool(body.return_text))

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
            return search_response([], None, top_n, body.return_documents)
        job = RerankJob(query, [text for _, _, text in hits], body.model, top_n, body.chunking, field="k",
                        too_large_hint=f"lower k (k={body.k} retrieved {len(hits)} documents to rerank)")
        return search_response(hits, await self._scores(job, "/search"), top_n, body.return_documents)

    async def _ready(self) -> dict[str, Any] | None:
        """The readiness result: the last one when younger than ``ready_cache_s``, else one check
        (scoring on the default model) shared by every probe that arrives meanwhile; None: not ready."""
        cached = self._ready_cache
        if cached is not None and time.monotonic() - cached[0] < self.config.ready_cache_s:
            return cached[1]
        if self._ready_task is None or self._ready_task.done():
            self._ready_task = asyncio.ensure_future(self._check_ready())
        result = await asyncio.shield(self._ready_task)
        self._ready_cache = (time.monotonic(), result)
        return result

    async def _check_ready(self) -> dict[str, Any] | None:
        """Score on the default model; None when that fails."""
        try:
            scored = await self._call_reranker(str(self.config.default_model), "ready")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            logger.warning("readiness check failed: %s", type(exc).__name__)
            return None
        return {"status": "ok", "default_model": scored.model, "models": sorted(self.config.models),
                "retriever": self.retriever is not None}

    @api.api_route("/healthz", methods=["GET", "HEAD"], summary="readiness: the default model scores (at most once per ready_cache_s)")
    async def healthz(self) -> Any:
        ready = await self._ready()
        if ready is None:
            return _error(503, "the default model could not score a passage (no reranker replica up, or it "
                               "fails); see the server log", {"Retry-After": "1"})
        return ready

    @api.api_route("/readyz", methods=["GET", "HEAD"], summary="readiness (same as /healthz)")
    async def readyz(self) -> Any:
        return await self.healthz()

    @api.api_route("/health", methods=["GET", "HEAD"], summary="TEI health: 200 when the default model scores, else 503")
    async def health(self) -> Any:
        return await self.healthz()

    @api.api_route("/livez", methods=["GET", "HEAD"], summary="liveness of the gateway only (scores nothing)")
    async def livez(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/info", summary="TEI info: the default model and the limits")
    async def info(self) -> dict[str, Any]:
        default = str(self.config.default_model)
        described = await self._call_reranker(default, "describe", default)
        limits = self.config.limits
        return {"model_id": default, "model_sha": None, "model_dtype": described["dtype"],
                "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
                "max_concurrent_requests": 256, "max_input_length": described["passage_length"],
                "max_batch_tokens": self.config.scoring.token_budget, "max_client_batch_size": limits.max_documents,
                "max_request_tokens": limits.max_request_tokens, "version": api.version,
                "models": sorted(self.config.models), "aliases": self.config.model_aliases,
                "replica": {"torch_threads": described["torch_threads"],
                            "omp_wait_policy": described["omp_wait_policy"]}}

    @api.get("/v1/models", summary="served models, each with its own status (ready | unavailable)")
    async def models(self) -> dict[str, Any]:
        data = []
        for name in self.config.models:
            try:
                info = await self._call_reranker(name, "describe", name)
            except RequestError as exc:  # no replica took it, or it failed: this model's status only
                info = {"status": "unavailable", "reason": exc.message}
            except Exception as exc:  # noqa: BLE001 - one model's failure must not fail the listing
                logger.warning("describing model %s failed: %s", name, type(exc).__name__)
                info = {"status": "unavailable", "reason": f"describing it failed ({type(exc).__name__})"}
            data.append({"id": name, "object": "model", "default": name == self.config.default_model,
                         "lazy": name in self.config.lazy_models, **info})
        return {"object": "list", "data": data}


# --------------------------------------------------------------------------------------------
# application builder (serve run serve/config.yaml, or serve.run(build_app(args)))
# --------------------------------------------------------------------------------------------


def build_app(args: dict[str, Any]):
    """The Serve application for ``args`` (:class:`ServeAppConfig` fields). Local model folders are
    checked now and made absolute (a missing one fails here, naming it)."""
    config = ServeAppConfig.from_dict(args).check_model_sources()
    plain = config.to_dict()
    reranker_options = dict(config.reranker_options)
    if config.batching:
        # Serve batches at most max_ongoing_requests concurrent requests per replica
        reranker_options.setdefault("max_ongoing_requests", 64)
    actor = dict(reranker_options.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**REPLICA_ENV, **dict(runtime_env.get("env_vars") or {})}
    actor["runtime_env"] = runtime_env
    reranker_options["ray_actor_options"] = actor
    reranker = RerankerDeployment.options(**reranker_options).bind(plain)
    retriever = (RetrieverDeployment.options(**config.retriever_options).bind(config.retriever)
                 if config.retriever else None)
    token = token_sha256(os.environ.get(config.auth_token_env))
    return Gateway.options(**config.gateway_options).bind(reranker, retriever, plain, token)
