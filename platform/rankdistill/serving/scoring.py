"""Serving-side scoring of any :class:`~rankdistill.models.Reranker`: tokenise once, batch across
requests by a token budget, score long documents by overlapping chunks, run in the fast precision.

Two steps, so a server can tokenise off the scoring thread::

    scorer = Scorer(load_reranker(path), ScoringConfig(token_budget=8192))
    prepared = scorer.prepare(query, documents)          # tokeniser only (any thread)
    results = scorer.score_prepared([prepared, ...])     # one call per server batch

- **Pointwise** models (mono, CELI): the (query, passage) rows of *all* requests in the batch are
  flattened, sorted by length and cut into sub-batches of at most ``token_budget`` padded token
  slots (:func:`~rankdistill.serving.batching.plan_sub_batches`), so padding is barely computed.
  Each row holds exactly the ids :meth:`Reranker.score` would build, so the scores equal
  ``model.score(query, documents)`` up to float rounding (same precision).
- **Listwise** models (Set-Encoder, ListConRanker) score each request's list on its own through
  the model's ``score`` path (their scores depend on the whole list).
- **Pairwise** models (duo) cost ``k(k-1)`` pair forwards for k passages: :meth:`Scorer.prepare`
  lists the ordered pairs and each pair's tokens (``Prepared.pairs`` / ``pair_lengths``, ``cost``),
  so a server can cap them, cut them into token-budget slices
  (:func:`~rankdistill.serving.slicing.split_pairs`), score each slice with
  :meth:`Scorer.score_pairs` and aggregate at the end (:meth:`Scorer.aggregate_pairs`); the result
  equals the model's own ``score`` up to float rounding.
- **Long documents**: a document longer than the model's ``passage_length`` (or the request's
  ``max_tokens_per_doc``) is truncated and reported so; with chunking on it is split into
  overlapping windows of that many tokens (``chunk_overlap`` shared) and scored as the maximum over
  its windows (MaxP, Dai & Callan 2019), reporting the number of windows.
- **Placement**: ``device="auto"`` puts the model on the replica's GPU when one is visible (a
  Serve replica with ``num_gpus: 1`` sees exactly its own as ``cuda:0``), else on the CPU
  (:func:`placement`).
- **Precision**: ``precision`` is :mod:`rankdistill.precision`'s, the one rule training,
  labelling and encoding use: ``auto`` runs bf16 where the replica's device has a bf16 unit (a
  GPU from Ampere on, not an emulating T4; an x86 CPU with AVX512-BF16 or AMX) and fp32 elsewhere.
  Weights stay fp32 and forward passes run under ``torch.autocast``, exactly as
  :meth:`Reranker.use_precision` scores offline, so served scores equal ``model.score`` under the
  same precision. Attention is PyTorch SDPA (the backbones' default ``attn_implementation``).

Scores are the models' raw outputs (a logit for mono/CELI/Set-Encoder/ListConRanker; the duo
model's aggregated pair probabilities). :func:`relevance` maps a logit to ``sigmoid`` in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rankdistill.errors import ConfigError
from rankdistill.models.base import Reranker
from rankdistill.serving.batching import SubBatch, padding_fraction, plan_sub_batches

#: the compute dtype of each resolved precision (what ``/info`` and ``/v1/models`` report)
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ScoringConfig:
    """Options of :class:`Scorer`.

    Args:
        token_budget: padded token slots (rows x width) per forward pass of a pointwise model.
        max_rows: optional cap on rows per forward pass.
        max_padding: max share of padding token slots per forward pass (pointwise models).
        device: ``auto`` (the GPU when one is visible, else the CPU), ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 where the device has a bf16 unit, else fp32), ``fp32``,
            ``bf16`` or ``fp16``: :mod:`rankdistill.precision`, autocast over fp32 weights.
        chunking: default for splitting long documents into overlapping windows (requests may override).
        chunk_overlap: tokens shared by neighbouring windows.
        max_chunks: most windows per document (the rest of a very long document is dropped and
            the document reported truncated).
    """

    token_budget: int = 8192
    max_rows: int | None = 256
    max_padding: float = 0.02
    precision: str = "auto"
    device: str = "auto"
    chunking: bool = False
    chunk_overlap: int = 32
    max_chunks: int = 16

    def __post_init__(self) -> None:
        if self.token_budget < 1:
            raise ConfigError(f"must be >= 1, got {self.token_budget}", key="scoring.token_budget")
        from rankdistill.precision import check_precision

        check_precision(self.precision, "scoring.precision")
        if self.device not in DEVICES:
            raise ConfigError(f"must be {', '.join(DEVICES)}, got {self.device!r}", key="scoring.device")
        if not 0.0 <= self.max_padding <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.max_padding}", key="scoring.max_padding")
        if self.chunk_overlap < 0:
            raise ConfigError(f"must be >= 0, got {self.chunk_overlap}", key="scoring.chunk_overlap")
        if self.max_chunks < 1:
            raise ConfigError(f"must be >= 1, got {self.max_chunks}", key="scoring.max_chunks")


def placement(device: str = "auto", precision: str = "auto") -> tuple[torch.device, str]:
    """Where and in which precision a serving replica scores: ``auto`` is the visible GPU (else the
    CPU), and on it bf16 where it has a bf16 unit (:func:`rankdistill.precision.has_bf16_unit`).
    ``cuda`` without a GPU is an error (the replica's ``num_gpus`` and the node disagree), not a
    silent fall back to the CPU."""
    from rankdistill.precision import check_precision, has_bf16_unit, resolve_precision

    check_precision(precision, "scoring.precision")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; one of {', '.join(DEVICES)}", key="scoring.device")
    gpu = torch.cuda.is_available()
    if device == "cuda" and not gpu:
        raise ConfigError("device 'cuda' but this replica sees no GPU (give the Reranker deployment "
                          "ray_actor_options: {num_gpus: 1} on a GPU node, or use device: auto)", key="scoring.device")
    where = torch.device("cuda" if device == "cuda" or (device == "auto" and gpu) else "cpu")
    return where, resolve_precision(precision, has_bf16_unit(where.type))


def relevance_scores(scores: Sequence[float], kind: str = "logit") -> list[float]:
    """Scores of one list mapped to [0, 1]: ``sigmoid`` of a logit; the duo model's pair
    aggregates divided by their range over k passages (``sum``/``binary``: k-1, ``sym_sum``:
    2(k-1), ``min``/``max``: already probabilities)."""
    k = len(scores)
    if kind == "logit":
        return [relevance(s) for s in scores]
    scale = {"pair_sum": k - 1, "pair_binary": k - 1, "pair_sym_sum": 2 * (k - 1)}.get(kind, 1)
    return [float(s) / max(1, scale) for s in scores]


def relevance(score: float) -> float:
    """``sigmoid(score)`` in [0, 1] (numerically safe)."""
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    z = math.exp(score)
    return z / (1.0 + z)


@dataclass
class DocumentScore:
    """Result for one input document.

    Attributes:
        score: the model's raw score (max over chunks when chunked).
        tokens: the document's tokens before any truncation (no special tokens).
        truncated: True when tokens were not scored (cut to the length limit, or beyond ``max_chunks``).
        chunks: windows scored (1 without chunking).
    """

    score: float
    tokens: int
    truncated: bool
    chunks: int


@dataclass
class Prepared:
    """One tokenised request. ``pieces`` are the texts actually scored (chunks flattened), ``owner``
    maps each piece to its document; pointwise models also carry ``rows`` (per piece, per
    tokenizer key, a 1-D tensor cut to the row's length) and ``lengths`` (tokens per row)."""

    query: str
    pieces: list[str]
    owner: list[int]
    doc_tokens: list[int]
    truncated: list[bool]
    chunks: list[int]
    rows: list[dict[str, Tensor]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    #: pairwise models: the ordered piece pairs (a, b) to score, and each pair's tokens
    pairs: list[tuple[int, int]] = field(default_factory=list)
    pair_lengths: list[int] = field(default_factory=list)

    @property
    def num_documents(self) -> int:
        return len(self.doc_tokens)

    @property
    def num_tokens(self) -> int:
        """Tokens this request costs to score (its rows' lengths; an estimate for listwise models)."""
        return sum(self.lengths) if self.lengths else sum(min(t, 512) for t in self.doc_tokens) + len(self.pieces)

    @property
    def cost(self) -> int:
        """Tokens computed to score it: the pairs' tokens for a pairwise model (quadratic in the
        passages), else :attr:`num_tokens`."""
        return sum(self.pair_lengths) if self.pairs else self.num_tokens


@dataclass
class BatchStats:
    """What the last :meth:`Scorer.score_prepared` call computed."""

    requests: int = 0
    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    forward_passes: int = 0

    @property
    def padding(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1.0 - self.tokens / self.padded_tokens


class Scorer:
    """Serve-time scoring for one loaded reranker (see the module docstring)."""

    def __init__(self, model: Reranker, config: ScoringConfig | None = None):
        self.config = config or ScoringConfig()
        self.device, wanted = placement(self.config.device, self.config.precision)
        self.model = model.to(device=self.device).eval()
        #: the resolved precision the forward passes run in (a model saved in bf16 runs in bf16)
        self.precision = self.model.use_precision(wanted)
        self.dtype = COMPUTE_DTYPES[self.precision]
        self.tokenizer = model._require_tokenizer()
        # pointwise = a model whose forward scores each (query, passage) row on its own
        self.pointwise = not model.listwise and model.registry_name in ("mono", "celi")
        #: pairwise = a model that scores ordered passage pairs (duo): k(k-1) forwards for k passages
        self.pairwise = model.registry_name == "duo"
        self.passage_length = int(model.config.passage_length)
        #: what ``DocumentScore.score`` is: ``logit``, or ``pair_<aggregation>`` for the duo model
        self.score_kind = f"pair_{model.config.aggregation}" if model.registry_name == "duo" else "logit"
        self.last_stats = BatchStats()

    # ---- tokenising (no model weights touched) -------------------------------------------------

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        chunking: bool | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> Prepared:
        """Tokenise one request: decide truncation / chunks per document and build its rows."""
        chunking = self.config.chunking if chunking is None else chunking
        limit = self.passage_length if not max_tokens_per_doc else min(self.passage_length, int(max_tokens_per_doc))
        encodings = self.tokenizer._backend.encode_batch(list(documents), add_special_tokens=False)
        pieces: list[str] = []
        owner: list[int] = []
        doc_tokens, truncated, chunks, piece_tokens = [], [], [], []
        for d, (text, enc) in enumerate(zip(documents, encodings)):
            n = len(enc.ids)
            offsets = enc.offsets
            doc_tokens.append(n)
            if n <= limit:
                spans = [text]
                cut = False
                piece_tokens.append(n)
            elif chunking:
                stride = max(1, limit - self.config.chunk_overlap)
                starts = [0]  # windows [s, s + limit) until one reaches the end
                while starts[-1] + limit < n:
                    starts.append(starts[-1] + stride)
                cut = len(starts) > self.config.max_chunks
                starts = starts[: self.config.max_chunks]
                spans = [text[offsets[s][0] : offsets[min(s + limit, n) - 1][1]] for s in starts]
                piece_tokens.extend(min(s + limit, n) - s for s in starts)
            else:
                # the model's tokenizer cuts at passage_length itself; a smaller per-request limit
                # cuts the text at that token's end so the same tokens are scored
                spans = [text if limit == self.passage_length else text[: offsets[limit - 1][1]]]
                cut = True
                piece_tokens.append(limit)
            truncated.append(cut)
            chunks.append(len(spans))
            pieces.extend(spans)
            owner.extend([d] * len(spans))
        prepared = Prepared(query, pieces, owner, doc_tokens, truncated, chunks)
        if self.pointwise and pieces:
            batch = self.tokenizer([query], [pieces])
            lengths = batch["attention_mask"][0].sum(-1).tolist()
            keys = [k for k, v in batch.items() if v.dim() == 3]
            prepared.lengths = [int(x) for x in lengths]
            prepared.rows = [{k: batch[k][0, j, : prepared.lengths[j]] for k in keys} for j in range(len(pieces))]
        if self.pairwise and len(pieces) > 1:
            # [CLS] query [SEP] a [SEP] b [SEP]: the tokens of one pair forward
            query_tokens = min(len(self.tokenizer._backend.encode(query, add_special_tokens=False).ids),
                               int(self.model.config.query_length))
            prepared.pairs = [(a, b) for a in range(len(pieces)) for b in range(len(pieces)) if a != b]
            prepared.pair_lengths = [query_tokens + piece_tokens[a] + piece_tokens[b] + 3 for a, b in prepared.pairs]
        return prepared

    # ---- pairwise models ----------------------------------------------------------------------

    def score_pairs(self, items: Sequence[Prepared]) -> list[list[float]]:
        """``P(a beats b)`` for each pair of each item (a slice of a pairwise request); one server batch."""
        stats = BatchStats(requests=len(items))
        out = []
        for item in items:
            pairs = [(item.pieces[a], item.pieces[b]) for a, b in item.pairs]
            out.append(self.model.pair_probabilities(item.query, pairs, self.model.default_batch_size)
                       if pairs else [])
            stats.rows += len(pairs)
            stats.tokens += item.cost
            stats.padded_tokens += item.cost
            stats.forward_passes += math.ceil(len(pairs) / self.model.default_batch_size)
        self.last_stats = stats
        return out

    def aggregate_pairs(self, prepared: Prepared, probabilities: Sequence[float]) -> list[DocumentScore]:
        """Per-document scores of a pairwise request from its pairs' probabilities (in
        ``prepared.pairs`` order): the model's aggregation over the pieces, then the max over a
        document's windows."""
        from rankdistill.models.duo import aggregate_pairs

        k = len(prepared.pieces)
        prob = torch.zeros(k, k)
        for (a, b), p in zip(prepared.pairs, probabilities, strict=True):
            prob[a, b] = p
        return self._per_document(prepared, aggregate_pairs(prob, self.model.config.aggregation).tolist())

    # ---- scoring ------------------------------------------------------------------------------

    def score_prepared(self, items: Sequence[Prepared]) -> list[list[DocumentScore]]:
        """Scores of every document of every request (input order), one server batch."""
        if self.pairwise:
            probabilities = self.score_pairs(items)
            return [self.aggregate_pairs(item, p) for item, p in zip(items, probabilities)]
        stats = BatchStats(requests=len(items))
        piece_scores: list[list[float]] = [[] for _ in items]
        with self.model.inference():
            if self.pointwise:
                piece_scores = self._score_pointwise(items, stats)
            else:
                for i, item in enumerate(items):
                    if item.pieces:
                        piece_scores[i] = self.model._score(
                            self.tokenizer, item.query, item.pieces, self.model.default_batch_size
                        )
                    stats.rows += len(item.pieces)
                    stats.tokens += item.num_tokens
                    stats.padded_tokens += item.num_tokens
                    stats.forward_passes += 1
        self.last_stats = stats
        return [self._per_document(item, scores) for item, scores in zip(items, piece_scores)]

    @staticmethod
    def _per_document(item: Prepared, scores: Sequence[float]) -> list[DocumentScore]:
        """Piece scores -> one score per document (the max over its windows)."""
        best = [-math.inf] * item.num_documents
        for piece, s in zip(item.owner, scores):
            best[piece] = max(best[piece], float(s))
        return [DocumentScore(best[d], item.doc_tokens[d], item.truncated[d], item.chunks[d])
                for d in range(item.num_documents)]

    def score(self, query: str, documents: Sequence[str], **options) -> list[DocumentScore]:
        """``prepare`` + ``score_prepared`` for one request."""
        return self.score_prepared([self.prepare(query, documents, **options)])[0]

    def _score_pointwise(self, items: Sequence[Prepared], stats: BatchStats) -> list[list[float]]:
        rows = [(i, j) for i, item in enumerate(items) for j in range(len(item.rows))]
        lengths = [items[i].lengths[j] for i, j in rows]
        plan = plan_sub_batches(lengths, self.config.token_budget, self.config.max_rows, self.config.max_padding)
        flat = torch.empty(len(rows))
        for sub in plan:
            flat[list(sub.rows)] = self._forward_rows([items[rows[r][0]].rows[rows[r][1]] for r in sub.rows], sub)
        stats.rows += len(rows)
        stats.tokens += sum(lengths)
        stats.padded_tokens += sum(b.padded_tokens for b in plan)
        stats.forward_passes += len(plan)
        out: list[list[float]] = [[] for _ in items]
        for r, (i, _) in enumerate(rows):
            out[i].append(float(flat[r]))
        return out

    def _forward_rows(self, rows: list[dict[str, Tensor]], sub: SubBatch) -> Tensor:
        """One forward pass over ``rows`` padded to ``sub.width``: scores ``float [n]``."""
        n = len(rows)
        batch: dict[str, Tensor] = {}
        for key in rows[0]:
            pad = self.tokenizer.pad_token_id if key == "input_ids" else 0
            dtype = rows[0][key].dtype
            value = torch.full((n, sub.width), pad, dtype=dtype)
            for r, row in enumerate(rows):
                value[r, : row[key].shape[0]] = row[key]
            batch[key] = value.unsqueeze(0)
        batch["passage_mask"] = torch.ones(1, n, dtype=torch.bool)
        return self.model(**self.model._batch_to_device(batch)).scores[0].float().cpu()


__all__ = [
    "BatchStats",
    "DocumentScore",
    "Prepared",
    "Scorer",
    "ScoringConfig",
    "padding_fraction",
    "placement",
    "relevance",
    "relevance_scores",
]
