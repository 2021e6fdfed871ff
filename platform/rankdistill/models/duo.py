"""duoBERT / duoELECTRA: the pairwise cross-encoder (Pradeep et al., "The Expando-Mono-Duo Design
Pattern", 2021; PairDistill §4.1 "classification-based" pairwise reranker).

``P(a ≻ b | q) = sigmoid(head(T_[CLS]))`` on ``[CLS] q [SEP] a [SEP] b [SEP]`` (query type id 0,
both passages type id 1). Train it with BCE on ``y = 1[a ≻ b]``. As a pairwise *teacher*
(PairDistill) call :meth:`DuoCrossEncoder.pair_probabilities`; as a reranker :meth:`score`
aggregates all ordered pairs (duoBERT's ``SUM`` by default: ``s_i = sum_{j != i} P(i ≻ j)``;
also ``sym_sum``, ``binary``, ``min``, ``max``). ``score`` costs k(k-1) forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import sequence_classifier_from_config
from rankdistill.models.base import Reranker, RerankerOutput, flatten_valid, scatter_scores
from rankdistill.models.config import RerankerConfig
from rankdistill.models.tokenizers import RerankerTokenizer, pad_rows

AGGREGATIONS = ("sum", "sym_sum", "binary", "min", "max")
ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class DuoConfig(RerankerConfig):
    """Options of :class:`DuoCrossEncoder`.

    Args:
        passage_length: tokens per passage (duoBERT: 223; default 224 keeps 32 + 2 x 224 + 4 <= 512).
        aggregation: how :meth:`DuoCrossEncoder.score` turns pair probabilities into scores.
    """

    model_type = "rankdistill-duo"

    passage_length: int = 224
    aggregation: str = "sum"

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"must be one of {AGGREGATIONS}, got {self.aggregation!r}", key="aggregation")


@dataclass
class DuoOutput(RerankerOutput):
    """``scores [B, P]``: logit of ``P(a ≻ b)`` per pair (-inf at padding); ``probabilities`` its
    sigmoid (0 at padding); ``mask`` the pair mask."""

    probabilities: Tensor | None = None


class DuoTokenizer(RerankerTokenizer):
    """``(queries, pairs)`` with ``pairs[b]`` a list of ``(a, b)`` passage pairs for query b.

    Batch keys: ``input_ids``, ``attention_mask`` (``token_type_ids``) ``long [B, P, L]`` and
    ``pair_mask`` ``bool [B, P]``.
    """

    def __call__(self, queries: Sequence[str], pairs: Sequence[Sequence[tuple[str, str]]]) -> dict[str, Tensor]:
        if len(queries) != len(pairs):
            raise ValueError(f"{len(queries)} queries but {len(pairs)} pair lists")
        batch_size, n_pairs = len(queries), max((len(p) for p in pairs), default=0)
        if batch_size == 0 or n_pairs == 0:
            raise ValueError("need at least one query with at least one pair")
        sep = self.tokenizer.sep_token_id
        q_enc = self.encode_texts(queries, self.query_length)
        flat = [text for plist in pairs for pair in plist for text in pair] + [""]
        p_enc = self.encode_texts(flat, self.passage_length)
        empty = p_enc[-1]
        ids, types = [], []
        pair_mask = torch.zeros(batch_size, n_pairs, dtype=torch.bool)
        pos = 0
        for b, plist in enumerate(pairs):
            for j in range(n_pairs):
                if j < len(plist):
                    first, second = p_enc[pos], p_enc[pos + 1]
                    pos += 2
                    pair_mask[b, j] = True
                else:
                    first, second = empty, empty
                enc = self.post_process(q_enc[b], first)
                second_ids = list(second.ids) + ([sep] if sep is not None else [])
                ids.append(list(enc.ids) + second_ids)
                types.append(list(enc.type_ids) + [enc.type_ids[-1]] * len(second_ids))
        input_ids = pad_rows(ids, self.pad_token_id)
        length = input_ids.shape[1]
        batch = {
            "input_ids": input_ids.view(batch_size, n_pairs, length),
            "attention_mask": pad_rows([[1] * len(r) for r in ids], 0, length).view(batch_size, n_pairs, length),
        }
        if self.uses_token_type_ids:
            batch["token_type_ids"] = pad_rows(types, 0, length).view(batch_size, n_pairs, length)
        batch["pair_mask"] = pair_mask
        return batch


def aggregate_pairs(prob: Tensor, method: str = "sum") -> Tensor:
    """Scores ``[k]`` from the matrix ``prob[i, j] = P(i ≻ j)`` (diagonal ignored)."""
    k = prob.shape[0]
    off = ~torch.eye(k, dtype=torch.bool, device=prob.device)
    if k == 1:
        return prob.new_zeros(1)
    if method == "sum":
        return (prob * off).sum(1)
    if method == "sym_sum":
        return (prob * off).sum(1) + ((1 - prob.T) * off).sum(1)
    if method == "binary":
        return ((prob > 0.5) & off).sum(1).to(prob.dtype)
    if method == "min":
        return prob.masked_fill(~off, float("inf")).min(1).values
    if method == "max":
        return prob.masked_fill(~off, float("-inf")).max(1).values
    raise ConfigError(f"unknown aggregation {method!r}; one of {AGGREGATIONS}", key="aggregation")


class DuoCrossEncoder(Reranker):
    """Pairwise cross-encoder. ``forward(input_ids, attention_mask, pair_mask, token_type_ids=None)
    -> DuoOutput`` over ``[B, P]`` pairs."""

    config_class = DuoConfig
    registry_name = "duo"
    default_batch_size = 16

    def __init__(self, config: DuoConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.model = backbone if backbone is not None else sequence_classifier_from_config(config.backbone_config)
        self.post_init()

    def _make_tokenizer(self, hf_tokenizer: Any) -> DuoTokenizer:
        return DuoTokenizer(hf_tokenizer, **self.config.tokenizer_kwargs())

    def max_sequence_tokens(self) -> int:
        return self.config.query_length + 2 * self.config.passage_length + 4

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pair_mask: Tensor,
        token_type_ids: Tensor | None = None,
        **unused: Any,
    ) -> DuoOutput:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = self.model(**flatten_valid(batch, pair_mask, ENCODER_KEYS)).logits.squeeze(-1)
        scores = scatter_scores(logits, pair_mask)
        # fp32: under bf16 a probability near 0.5 moves in steps of 2^-8, so a weak model's pair
        # probabilities (and the served pair_sum / (k-1)) collapse onto a few values
        probabilities = torch.sigmoid(scores.float())  # sigmoid(-inf) = 0 at padding
        return DuoOutput(scores=scores, mask=pair_mask, probabilities=probabilities)

    def pair_probabilities(
        self, query: str, pairs: Sequence[tuple[str, str]], batch_size: int | None = None
    ) -> list[float]:
        """``P(a ≻ b | query)`` for every ``(a, b)``: the pairwise-teacher entry point (eval, no grad)."""
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            return []
        tokenizer = self._require_tokenizer()
        batch_size = batch_size or self.default_batch_size
        out: list[float] = []
        with self.inference():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                result = self(**self._batch_to_device(tokenizer([query], [chunk])))
                out.extend(result.probabilities[0].float().cpu().tolist())
        return out

    def _score(self, tokenizer: Any, query: str, passages: list[str], batch_size: int) -> list[float]:
        k = len(passages)
        index = [(i, j) for i in range(k) for j in range(k) if i != j]
        prob = torch.zeros(k, k)
        if index:
            values = self.pair_probabilities(query, [(passages[i], passages[j]) for i, j in index], batch_size)
            for (i, j), p in zip(index, values):
                prob[i, j] = p
        return aggregate_pairs(prob, self.config.aggregation).tolist()
