"""CELI: Cross-Encoder with Late Interaction (Zhang, Li & Lin; ../shared/papers/celi.md §2).

A mono cross-encoder whose final-layer token vectors are also projected to ``D_tok`` dimensions
(Eq. 3, ``v = T W + b``, default ``D_tok = 32``), and scored ColBERT-style *inside* the joint
sequence (Eq. 4)::

    s_m(q, d) = head(T_[CLS])                                    (Eq. 1)
    s_l(q, d) = sum_{query tokens i} max_{passage tokens j} v_i . v_j   (Eq. 4)

Query tokens are the query segment of ``[CLS] q [SEP] d [SEP]`` and passage tokens the passage
segment; special and padding tokens are excluded. The paper does not normalise the token vectors
(plain inner product, no L2 norm, unlike ColBERT); ``normalize_token_vectors`` switches that on.

Training: ``LCE(s_m) + LCE(s_l)`` — :meth:`Reranker.compute_loss` applies the given loss to both
(``CELIOutput.loss_scores()``). Inference: ``s_m + s_l`` (the paper tried weights and kept the plain
sum; ``late_interaction_weight`` defaults to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import encode, sequence_classifier_from_config
from rankdistill.models.base import Reranker, RerankerOutput, flatten_valid, scatter_scores
from rankdistill.models.config import RerankerConfig
from rankdistill.models.maxsim import maxsim
from rankdistill.models.tokenizers import CrossEncoderTokenizer

ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class CELIConfig(RerankerConfig):
    """Options of :class:`CELI`.

    Args:
        token_dim: ``D_tok`` of the token projection (paper default 32; Table 4: 1..384 all work).
        normalize_token_vectors: L2-normalise ``v`` before the dot products (paper: no).
        late_interaction_weight: ``w`` in the inference score ``s_m + w * s_l`` (paper: 1).
    """

    model_type = "rankdistill-celi"

    token_dim: int = 32
    normalize_token_vectors: bool = False
    late_interaction_weight: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if not isinstance(self.token_dim, int) or self.token_dim < 1:
            raise ConfigError(f"must be a positive integer, got {self.token_dim!r}", key="token_dim")


@dataclass
class CELIOutput(RerankerOutput):
    """``scores = s_m + w * s_l``; ``mono_scores`` is ``s_m``, ``late_scores`` is ``s_l`` (all ``[B, k]``)."""

    mono_scores: Tensor | None = None
    late_scores: Tensor | None = None

    def loss_scores(self) -> list[Tensor]:
        return [self.mono_scores, self.late_scores]


def late_interaction(vectors: Tensor, query_token_mask: Tensor, passage_token_mask: Tensor) -> Tensor:
    """CELI Eq. 4 on joint sequences: ``s_l = sum_{i in query} max_{j in passage} v_i . v_j``
    (the shared :func:`~rankdistill.models.maxsim.maxsim`, also used by ColBERT).

    Args:
        vectors: ``[N, L, D]`` token vectors of N joint query-passage sequences.
        query_token_mask / passage_token_mask: ``bool [N, L]`` marking each segment's own tokens.

    Returns:
        ``[N]``; a sequence without passage tokens contributes 0 per query token.
    """
    rows = query_token_mask.any(dim=0).nonzero().flatten()  # token positions holding any query token
    if rows.numel() == 0:
        return vectors.new_zeros(vectors.shape[0])
    rows = torch.arange(int(rows.min()), int(rows.max()) + 1, device=vectors.device)
    # query span R of each sequence against the whole sequence (the passage mask picks its tokens)
    return maxsim(vectors[:, rows], query_token_mask[:, rows], vectors, passage_token_mask, paired=True)


class CELI(Reranker):
    """CELI student. Batch: :class:`CrossEncoderTokenizer` with ``segment_masks=True``
    (keys ``input_ids, attention_mask, token_type_ids, query_token_mask, passage_token_mask,
    passage_mask``).

    ``forward(...) -> CELIOutput`` with ``scores, mono_scores, late_scores`` ``[B, k]``.
    """

    config_class = CELIConfig
    registry_name = "celi"

    def __init__(self, config: CELIConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.model = backbone if backbone is not None else sequence_classifier_from_config(config.backbone_config)
        self.token_proj = nn.Linear(self.model.config.hidden_size, config.token_dim)
        self.post_init()

    def _make_tokenizer(self, hf_tokenizer: Any) -> CrossEncoderTokenizer:
        return CrossEncoderTokenizer(hf_tokenizer, segment_masks=True, **self.config.tokenizer_kwargs())

    def token_vectors(self, hidden: Tensor) -> Tensor:
        """Eq. 3: ``v = T W + b`` (optionally L2-normalised)."""
        vectors = self.token_proj(hidden)
        if self.config.normalize_token_vectors:
            vectors = nn.functional.normalize(vectors, dim=-1)
        return vectors

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        passage_mask: Tensor,
        query_token_mask: Tensor,
        passage_token_mask: Tensor,
        token_type_ids: Tensor | None = None,
        **unused: Any,
    ) -> CELIOutput:
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "query_token_mask": query_token_mask,
            "passage_token_mask": passage_token_mask,
        }
        flat = flatten_valid(batch, passage_mask, (*ENCODER_KEYS, "query_token_mask", "passage_token_mask"))
        hidden, s_m = encode(self.model, {k: flat[k] for k in ENCODER_KEYS if k in flat})
        s_l = late_interaction(self.token_vectors(hidden), flat["query_token_mask"], flat["passage_token_mask"])
        mono = scatter_scores(s_m, passage_mask)
        late = scatter_scores(s_l, passage_mask)
        final = scatter_scores(s_m + self.config.late_interaction_weight * s_l, passage_mask)
        return CELIOutput(scores=final, mask=passage_mask, mono_scores=mono, late_scores=late)
