"""ListConRanker: contrastive listwise reranker (Liu et al.; ../shared/papers/listconranker.md §3).

1. An embedding model encodes the query and every passage *separately*: ``h_q``, ``h_i``
   (Eqs. 1-2; pooling of the final hidden states: ``pooling`` = "mean" or "cls").
2. A ListTransformer (``l`` post-LN Transformer-encoder layers, no positional embeddings) reads
   ``Z0 = [h_q + e_q, h_1 + e_p, ..., h_n + e_p]`` with learnable type embeddings ``e_q``/``e_p``
   (Eq. 3) and **ListAttention** (Eq. 7): the query attends only to itself, every passage attends
   to the query and all passages. So ``z_q`` never depends on the passages.
3. ``s_i = sigmoid(MLP_fused(MLP_ori(h_q, h_i), MLP_list(z_q, z_i)))`` (Eqs. 8-10). ``MLP_ori`` and
   ``MLP_list`` read the pair's features (``pair_features``): ``"concat"`` = ``[a; b]``, the paper's
   literal reading and default, or ``"interaction"`` = ``[a; b; a*b; |a-b|]`` (Reimers & Gurevych,
   2019), which lets one linear unit express a dot product.
4. Inference (§3.4, Algorithm 1): while more than ``stop_size`` (θ = 20) passages remain, score
   them, fix the bottom ``ceil(|P| * drop_rate)`` (β = 0.2) at the end of the ranking and drop
   them; then score the rest. The embeddings are computed once; only the ListTransformer reruns.
   :meth:`ListConRanker.score` returns ``round + s`` (``round`` = the number of rounds the passage
   survived), so sorting by it reproduces Algorithm 1's ranking.
5. Training: circle loss (``rankdistill.losses.CircleLoss``) on ``scores``; first stage with the
   embedding model frozen (``freeze_embedding_model()``), then everything.

The paper leaves the MLP shapes open; the defaults follow the authors' released model
(ByteDance/ListConRanker): ``MLP_ori``/``MLP_list`` are one ``Linear(pair features -> mlp_hidden_size)``
+ ReLU each, so ``s_i^origin``/``s_i^list`` are vectors, and ``MLP_fused`` is one
``Linear(2 * mlp_hidden_size -> 1)`` (``fusion_hidden_size`` adds a GELU hidden layer).

Training from scratch on a small budget: with ``pair_features="concat"`` the heads must learn a
similarity function from a concatenation. On NFCorpus (60 steps of 8 queries x 4 passages,
all-MiniLM-L6-v2, lr 1e-4, circle loss) the loss went from 5.90 (its value at uniform scores) to
5.88 with "concat" and to 5.44 with "interaction"; MiniLM's own cosine already ranks the positive
first in 63 % of those lists. The paper first trains the heads for 4 epochs at batch 1024 on eight
corpora.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import initialization as init

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import encoder_from_config, load_encoder
from rankdistill.models.base import Reranker, RerankerOutput
from rankdistill.models.config import RerankerConfig
from rankdistill.models.tokenizers import RerankerTokenizer, check_lists, pad_rows


class ListConRankerConfig(RerankerConfig):
    """Options of :class:`ListConRanker` (paper values in brackets).

    Args:
        pooling: "mean" or "cls" pooling of the embedding model; ``None`` = the backbone's
            sentence-transformers pooling config when built with ``from_backbone``, else "cls".
        list_layers: ListTransformer layers ``l`` [2].
        list_heads: attention heads (default: the embedding model's head count).
        list_ffn_size: feed-forward size (default: 4 x hidden).
        list_dropout: dropout in the ListTransformer.
        mlp_hidden_size: output size of MLP_ori / MLP_list (default: the hidden size, as released).
        pair_features: what MLP_ori / MLP_list read: "concat" ``[a; b]`` [paper] or "interaction"
            ``[a; b; a*b; |a-b|]``.
        fusion_hidden_size: None = MLP_fused is one linear layer (as released); an int adds a
            hidden layer of that size.
        iterative_inference: use Algorithm 1 in :meth:`ListConRanker.score` [yes].
        drop_rate: β, fraction of passages fixed and dropped per round [0.2].
        stop_size: θ, stop iterating when at most this many remain [20].
        freeze_embedding_model: keep the embedding model frozen (first training stage).
    """

    model_type = "rankdistill-listconranker"

    pooling: str | None = None
    list_layers: int = 2
    list_heads: int | None = None
    list_ffn_size: int | None = None
    list_dropout: float = 0.1
    mlp_hidden_size: int | None = None
    pair_features: str = "concat"
    fusion_hidden_size: int | None = None
    iterative_inference: bool = True
    drop_rate: float = 0.2
    stop_size: int = 20
    freeze_embedding_model: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.pooling not in (None, "mean", "cls"):
            raise ConfigError(f"must be 'mean' or 'cls', got {self.pooling!r}", key="pooling")
        if not 0.0 < float(self.drop_rate) < 1.0:
            raise ConfigError(f"β must be in (0, 1), got {self.drop_rate!r}", key="drop_rate")
        if self.pair_features not in PAIR_FEATURES:
            raise ConfigError(f"must be one of {list(PAIR_FEATURES)}, got {self.pair_features!r}", key="pair_features")
        for key in ("list_layers", "stop_size", "mlp_hidden_size", "fusion_hidden_size"):
            value = getattr(self, key)
            if key in ("mlp_hidden_size", "fusion_hidden_size") and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", key=key)


@dataclass
class ListConRankerOutput(RerankerOutput):
    """``scores = sigmoid(logits)`` ``[B, k]`` (-inf at padding); ``logits`` before the sigmoid
    (-inf at padding); ``query_features`` ``z_q [B, D]`` and ``passage_features`` ``z_i [B, k, D]``
    after the ListTransformer."""

    logits: Tensor | None = None
    query_features: Tensor | None = None
    passage_features: Tensor | None = None


def list_attention_mask(passage_mask: Tensor) -> Tensor:
    """ListAttention mask ``bool [B, 1, 1 + k, 1 + k]`` (True = may attend).

    Row 0 (the query) sees only column 0; rows 1..k (passages) see the query and every real
    passage. Padded passages' rows are filled like real ones (their outputs are ignored).
    """
    batch, k = passage_mask.shape
    keys = torch.cat([passage_mask.new_ones(batch, 1), passage_mask], dim=1)  # [B, 1 + k]
    mask = keys[:, None, :].expand(batch, 1 + k, 1 + k).clone()
    mask[:, 0, 1:] = False
    return mask[:, None]


class ListTransformerLayer(nn.Module):
    """Post-LN Transformer-encoder layer (Eqs. 4-7) whose attention takes the ListAttention mask."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ConfigError(f"hidden size {hidden} is not divisible by {heads} heads", key="list_heads")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.ffn_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:
        batch, n, hidden = z.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, n, self.heads, hidden // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.query(z)),
            split(self.key(z)),
            split(self.value(z)),
            attn_mask=mask,
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(batch, n, hidden)
        z = self.attention_norm(z + self.dropout(self.out(attended)))
        return self.ffn_norm(z + self.dropout(self.ffn(z)))


#: pair feature builders: name -> (input size multiple of D, function)
PAIR_FEATURES = {
    "concat": (2, lambda a, b: torch.cat([a, b], dim=-1)),
    "interaction": (4, lambda a, b: torch.cat([a, b, a * b, (a - b).abs()], dim=-1)),
}


class PairMLP(nn.Module):
    """MLP_ori / MLP_list: ``ReLU(Linear(pair_features(a, b)))``, ``a, b [..., D] -> [..., out]``."""

    def __init__(self, hidden: int, outputs: int, pair_features: str):
        super().__init__()
        multiple, self.features = PAIR_FEATURES[pair_features]
        self.linear = nn.Linear(multiple * hidden, outputs)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return F.relu(self.linear(self.features(a, b)))


def fusion_mlp(inputs: int, hidden: int | None) -> nn.Module:
    """MLP_fused: one linear layer to the logit, or ``inputs -> hidden (GELU) -> 1``."""
    if hidden is None:
        return nn.Linear(inputs, 1)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, 1))


class EmbeddingListTokenizer(RerankerTokenizer):
    """Query and passages tokenized *separately* for the embedding model (``[CLS] text [SEP]``).

    Batch keys: ``query_input_ids``, ``query_attention_mask`` ``long [B, Lq]``;
    ``passage_input_ids``, ``passage_attention_mask`` ``long [B, k, Lp]``; ``passage_mask``
    ``bool [B, k]``.
    """

    def encode_single(self, texts: Sequence[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        rows = [list(self.post_process(enc).ids) for enc in self.encode_texts(texts, max_tokens)]
        ids = pad_rows(rows, self.pad_token_id)
        return ids, pad_rows([[1] * len(r) for r in rows], 0, ids.shape[1])

    def __call__(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        check_lists(queries, passages)
        batch_size, k = len(queries), max((len(p) for p in passages), default=0)
        if batch_size == 0 or k == 0:
            raise ValueError("need at least one query with at least one passage")
        query_ids, query_attention = self.encode_single(queries, self.query_length)
        padded = [list(p) + [""] * (k - len(p)) for p in passages]
        p_ids, p_attention = self.encode_single([t for row in padded for t in row], self.passage_length)
        passage_mask = torch.tensor([[j < len(p) for j in range(k)] for p in passages], dtype=torch.bool)
        return {
            "query_input_ids": query_ids,
            "query_attention_mask": query_attention,
            "passage_input_ids": p_ids.view(batch_size, k, -1),
            "passage_attention_mask": p_attention.view(batch_size, k, -1),
            "passage_mask": passage_mask,
        }


def _sentence_transformers_pooling(path: str | os.PathLike) -> str | None:
    try:
        with open(os.path.join(os.fspath(path), "1_Pooling", "config.json"), encoding="utf-8") as fh:
            pooling = json.load(fh)
    except (OSError, ValueError):
        return None
    if pooling.get("pooling_mode_mean_tokens"):
        return "mean"
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    return None


class ListConRanker(Reranker):
    """ListConRanker student. Batch: :class:`EmbeddingListTokenizer`.

    ``forward(query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask,
    passage_mask) -> ListConRankerOutput``. ``score`` uses iterative inference (Algorithm 1)
    unless ``config.iterative_inference`` is False.
    """

    config_class = ListConRankerConfig
    registry_name = "listconranker"
    listwise = True

    def __init__(self, config: ListConRankerConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.embedder = backbone if backbone is not None else encoder_from_config(config.backbone_config)
        hidden = self.embedder.config.hidden_size
        heads = config.list_heads or self.embedder.config.num_attention_heads
        ffn = config.list_ffn_size or 4 * hidden
        mlp_hidden = config.mlp_hidden_size or hidden
        self.query_type_embedding = nn.Parameter(torch.zeros(hidden))
        self.passage_type_embedding = nn.Parameter(torch.zeros(hidden))
        self.list_transformer = nn.ModuleList(
            ListTransformerLayer(hidden, heads, ffn, config.list_dropout) for _ in range(config.list_layers)
        )
        self.mlp_ori = PairMLP(hidden, mlp_hidden, config.pair_features)
        self.mlp_list = PairMLP(hidden, mlp_hidden, config.pair_features)
        self.mlp_fused = fusion_mlp(2 * mlp_hidden, config.fusion_hidden_size)
        self.post_init()
        self.freeze_embedding_model(config.freeze_embedding_model)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            init.normal_(self.query_type_embedding, mean=0.0, std=0.02)
            init.normal_(self.passage_type_embedding, mean=0.0, std=0.02)

    def _make_tokenizer(self, hf_tokenizer: Any) -> EmbeddingListTokenizer:
        return EmbeddingListTokenizer(hf_tokenizer, **self.config.tokenizer_kwargs())

    def max_sequence_tokens(self) -> int:
        return max(self.config.query_length, self.config.passage_length) + 2

    @classmethod
    def _load_backbone(cls, path: str | os.PathLike) -> nn.Module:
        return load_encoder(path)

    @classmethod
    def from_backbone(cls, path: str | os.PathLike, **config: Any) -> ListConRanker:
        """Embedding model directory -> ListConRanker (pooling from its sentence-transformers config)."""
        if config.get("pooling") is None:
            config = {**config, "pooling": _sentence_transformers_pooling(path) or "cls"}
        return super().from_backbone(path, **config)

    # ---- training stages ----------------------------------------------------------------------

    def freeze_embedding_model(self, frozen: bool = True) -> None:
        """Freeze (first stage) or unfreeze the embedding model; recorded in the config."""
        self.config.freeze_embedding_model = bool(frozen)
        for param in self.embedder.parameters():
            param.requires_grad_(not frozen)

    # ---- model --------------------------------------------------------------------------------

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Embedding model + pooling: ``[N, L] -> [N, D]`` (Eqs. 1-2)."""
        grad = torch.is_grad_enabled() and not self.config.freeze_embedding_model
        with torch.set_grad_enabled(grad):
            hidden = self.embedder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if (self.config.pooling or "cls") == "cls":
                return hidden[:, 0]
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def list_scores(self, h_q: Tensor, h_p: Tensor, passage_mask: Tensor) -> tuple[Tensor, Tensor]:
        """ListTransformer + MLPs: ``h_q [B, D], h_p [B, k, D] -> (logits [B, k], Z [B, 1 + k, D])``."""
        z = torch.cat([(h_q + self.query_type_embedding)[:, None], h_p + self.passage_type_embedding], dim=1)
        mask = list_attention_mask(passage_mask)
        for layer in self.list_transformer:
            z = layer(z, mask)
        z_q, z_p = z[:, :1].expand_as(h_p), z[:, 1:]
        s_origin = self.mlp_ori(h_q[:, None].expand_as(h_p), h_p)
        s_list = self.mlp_list(z_q, z_p)
        return self.mlp_fused(torch.cat([s_origin, s_list], dim=-1)).squeeze(-1), z

    def forward(
        self,
        query_input_ids: Tensor,
        query_attention_mask: Tensor,
        passage_input_ids: Tensor,
        passage_attention_mask: Tensor,
        passage_mask: Tensor,
        **unused: Any,
    ) -> ListConRankerOutput:
        batch, k, length = passage_input_ids.shape
        h_q = self.embed(query_input_ids, query_attention_mask)
        flat_valid = passage_mask.reshape(-1)
        h_valid = self.embed(
            passage_input_ids.reshape(-1, length)[flat_valid], passage_attention_mask.reshape(-1, length)[flat_valid]
        )
        h_p = h_valid.new_zeros(batch * k, h_valid.shape[-1]).masked_scatter(flat_valid[:, None], h_valid)
        logits, z = self.list_scores(h_q, h_p.view(batch, k, -1), passage_mask)
        padding = ~passage_mask
        return ListConRankerOutput(
            scores=torch.sigmoid(logits).masked_fill(padding, float("-inf")),
            mask=passage_mask,
            logits=logits.masked_fill(padding, float("-inf")),
            query_features=z[:, 0],
            passage_features=z[:, 1:],
        )

    # ---- inference ----------------------------------------------------------------------------

    def _embed_texts(self, tokenizer: EmbeddingListTokenizer, texts: list[str], max_tokens: int, batch_size: int):
        """Embeddings ``[n, D]`` in input order, computed in chunks sorted by token length."""
        ids, attention = tokenizer.encode_single(texts, max_tokens)
        lengths = attention.sum(-1)
        order = torch.argsort(lengths, descending=True, stable=True)
        out: Tensor | None = None
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx[0]])
            emb = self.embed(ids[idx, :width].to(self.device), attention[idx, :width].to(self.device))
            if out is None:
                out = emb.new_empty(len(texts), emb.shape[-1])
            out[idx.to(emb.device)] = emb
        return out

    def _score(self, tokenizer: Any, query: str, passages: list[str], batch_size: int) -> list[float]:
        h_q = self._embed_texts(tokenizer, [query], tokenizer.query_length, 1)
        h_p = self._embed_texts(tokenizer, passages, tokenizer.passage_length, batch_size)
        return self.iterative_scores(h_q[0], h_p)

    def iterative_scores(self, h_q: Tensor, h_p: Tensor) -> list[float]:
        """Algorithm 1 on precomputed embeddings ``h_q [D]``, ``h_p [n, D]``: ``round + s`` per passage."""
        n = h_p.shape[0]
        beta, theta = float(self.config.drop_rate), int(self.config.stop_size)
        remaining = list(range(n))
        final = [0.0] * n
        rounds = 0

        def probabilities(idx: list[int]) -> list[float]:
            mask = torch.ones(1, len(idx), dtype=torch.bool, device=h_p.device)
            logits, _ = self.list_scores(h_q[None], h_p[idx][None], mask)
            return torch.sigmoid(logits[0]).float().cpu().tolist()

        while self.config.iterative_inference and len(remaining) > theta:
            probs = probabilities(remaining)
            drop = math.ceil(len(remaining) * beta)
            order = sorted(range(len(remaining)), key=lambda i: probs[i], reverse=True)
            for i in order[len(order) - drop :]:
                final[remaining[i]] = rounds + probs[i]
            remaining = [remaining[i] for i in order[: len(order) - drop]]
            rounds += 1
        for i, p in zip(remaining, probabilities(remaining)):
            final[i] = rounds + p
        return final


def iterative_round_sizes(n: int, drop_rate: float = 0.2, stop_size: int = 20) -> list[int]:
    """How many passages each round of Algorithm 1 scores (e.g. 100 -> [100, 80, 64, 51, 40, 32, 25, 20])."""
    sizes = [n]
    while sizes[-1] > stop_size:
        sizes.append(sizes[-1] - math.ceil(sizes[-1] * drop_rate))
    return sizes
