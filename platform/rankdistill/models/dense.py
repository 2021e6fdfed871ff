"""What the dense students (:class:`~rankdistill.models.bi_encoder.BiEncoder`,
:class:`~rankdistill.models.colbert.ColBERT`) share.

They follow the reranker contract of ``base.py`` (``save_pretrained`` / ``from_pretrained`` /
``from_backbone``, ``tokenizer(queries, passages)``, ``forward(**batch)``, ``compute_loss``,
``score``) so the training loop and the evaluation code take them unchanged, and add

- ``encode_queries(texts, batch_size) / encode_passages(texts, batch_size)``: the representations
  an index stores (bi-encoder: ``float [N, D]``; ColBERT: token vectors);
- **in-batch scores**: ``forward`` also scores every query against every passage of the batch
  (``DenseOutput.in_batch_scores [B, B*k]``), which PairDistill's contrastive loss L_CL uses as
  extra negatives. :meth:`DenseRetriever.compute_loss` passes them to a loss whose ``in_batch``
  attribute is True (``in_batch_scores=``, ``in_batch_mask=``, ``in_batch_owner=``).

Batch keys (``DenseTokenizer``): ``query_input_ids``, ``query_attention_mask`` ``long [B, Lq]``;
``passage_input_ids``, ``passage_attention_mask`` ``long [B, k, Lp]``; ``passage_mask``
``bool [B, k]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rankdistill.models.base import NEG_INF, Reranker, RerankerOutput, fp32_loss
from rankdistill.models.tokenizers import RerankerTokenizer, check_lists, pad_rows


@dataclass
class DenseOutput(RerankerOutput):
    """``scores [B, k]`` (query b vs its own passages, -inf at padding) and ``mask [B, k]`` as
    every reranker; plus

    Attributes:
        in_batch_scores: ``float [B, B*k]``: query b against every passage slot of the batch
            (column ``c*k + j`` is passage j of query c), -inf at padded slots.
        in_batch_mask: ``bool [B, B*k]``: True where the slot holds a real passage.
    """

    in_batch_scores: Tensor | None = None
    in_batch_mask: Tensor | None = None


class DenseTokenizer(RerankerTokenizer):
    """Queries and passages tokenized separately, ``[CLS] text [SEP]`` each (special tokens from
    the tokenizer's own post-processor), texts truncated to ``query_length`` / ``passage_length``
    tokens (special tokens not counted). Batch keys: see the module docstring."""

    def encode_single(self, texts: Sequence[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        rows = [list(self.post_process(enc).ids) for enc in self.encode_texts(texts, max_tokens)]
        ids = pad_rows(rows, self.pad_token_id)
        return ids, pad_rows([[1] * len(r) for r in rows], 0, ids.shape[1])

    def queries(self, texts: Sequence[str]) -> dict[str, Tensor]:
        ids, attention = self.encode_single(texts, self.query_length)
        return {"input_ids": ids, "attention_mask": attention}

    def passages(self, texts: Sequence[str]) -> dict[str, Tensor]:
        ids, attention = self.encode_single(texts, self.passage_length)
        return {"input_ids": ids, "attention_mask": attention}

    def __call__(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        check_lists(queries, passages)
        batch_size, k = len(queries), max((len(p) for p in passages), default=0)
        if batch_size == 0 or k == 0:
            raise ValueError("need at least one query with at least one passage")
        q = self.queries(queries)
        padded = [list(p) + [""] * (k - len(p)) for p in passages]
        p = self.passages([t for row in padded for t in row])
        passage_mask = torch.tensor([[j < len(row) for j in range(k)] for row in passages], dtype=torch.bool)
        # every per-token passage field (ColBERT adds token_mask) becomes passage_<field> [B, k, L]
        return {
            "query_input_ids": q["input_ids"],
            "query_attention_mask": q["attention_mask"],
            **{f"passage_{name}": value.view(batch_size, k, -1) for name, value in p.items()},
            "passage_mask": passage_mask,
        }


def sentence_transformers_options(path: str | os.PathLike) -> dict[str, Any]:
    """Pooling / normalisation / max length of a sentence-transformers folder (empty if none).

    Returns a subset of ``{"pooling": "mean" | "cls", "normalize": bool, "max_seq_length": int}``.
    """
    path = os.fspath(path)
    out: dict[str, Any] = {}
    try:
        with open(os.path.join(path, "1_Pooling", "config.json"), encoding="utf-8") as fh:
            pooling = json.load(fh)
        if pooling.get("pooling_mode_mean_tokens"):
            out["pooling"] = "mean"
        elif pooling.get("pooling_mode_cls_token"):
            out["pooling"] = "cls"
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(path, "modules.json"), encoding="utf-8") as fh:
            modules = json.load(fh)
        out["normalize"] = any("Normalize" in str(m.get("type", "")) for m in modules)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(path, "sentence_bert_config.json"), encoding="utf-8") as fh:
            max_len = json.load(fh).get("max_seq_length")
        if isinstance(max_len, int) and max_len > 2:
            out["max_seq_length"] = max_len
    except (OSError, ValueError):
        pass
    return out


class DenseRetriever(Reranker):
    """Base of the dense students: tokenizer, in-batch loss routing, batched encoding helpers."""

    #: default ``batch_size`` of :meth:`score`, :meth:`encode_queries`, :meth:`encode_passages`
    default_batch_size = 64

    def _make_tokenizer(self, hf_tokenizer: Any) -> RerankerTokenizer:
        return DenseTokenizer(hf_tokenizer, **self.config.tokenizer_kwargs())

    def max_sequence_tokens(self) -> int:
        return max(self.config.query_length, self.config.passage_length) + 2

    def compute_loss(self, output: RerankerOutput, targets: Tensor, loss_fn: nn.Module, **extra: Any) -> Tensor:
        """``loss_fn(scores, targets, mask, **extra)``; a loss with ``in_batch = True`` also gets
        ``in_batch_scores``, ``in_batch_mask`` (``[B, B*k]``) from a :class:`DenseOutput`; half
        precision scores are cast to fp32 first (:func:`~rankdistill.models.base.fp32_loss`)."""
        if getattr(loss_fn, "in_batch", False) and isinstance(output, DenseOutput):
            extra = {**extra, "in_batch_scores": output.in_batch_scores, "in_batch_mask": output.in_batch_mask}
        return fp32_loss(loss_fn, output.scores, targets, output.mask, **extra)  # scores in fp32 (bf16 runs)

    @staticmethod
    def _scatter_in_batch(all_scores: Tensor, passage_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``all_scores [B, B*k]`` -> (own ``scores [B, k]``, ``in_batch_scores [B, B*k]``,
        ``in_batch_mask [B, B*k]``), -inf at padding."""
        batch, k = passage_mask.shape
        flat_mask = passage_mask.reshape(1, batch * k).expand(batch, -1)
        in_batch = all_scores.masked_fill(~flat_mask, NEG_INF)
        own = in_batch.view(batch, batch, k)[torch.arange(batch), torch.arange(batch)]
        return own, in_batch, flat_mask

    def _chunks(self, texts: Sequence[str], batch_size: int | None):
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a str")
        texts = list(texts)
        size = batch_size or self.default_batch_size
        for start in range(0, len(texts), size):
            yield texts[start : start + size]

    def _score(self, tokenizer: RerankerTokenizer, query: str, passages: list[str], batch_size: int) -> list[float]:
        """Reranker API: the training-time score of every passage (chunks of ``batch_size``)."""
        out: list[float] = []
        for start in range(0, len(passages), batch_size):
            batch = tokenizer([query], [passages[start : start + batch_size]])
            out.extend(self(**self._batch_to_device(batch)).scores[0].float().cpu().tolist())
        return out
