"""Pointwise binary cross-entropy."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import RankingLoss, check_shapes, mean_over_queries, resolve_mask


class BCE(RankingLoss):
    """Binary cross-entropy per passage (monoBERT's pointwise objective; duoBERT on pairs)::

        L = -[ t log σ(s) + (1 - t) log(1 - σ(s)) ]

    averaged over the real passages of each query, then over queries.

    Inputs:
        scores: ``[B, k]`` logits (or probabilities with ``from_probabilities=True``, e.g.
            ListConRanker's sigmoid scores).
        targets: ``[B, k]`` in [0, 1]: binary labels or teacher probabilities.
        mask: ``bool [B, k]`` real passages (default: finite scores).

    Example::

        >>> BCE()(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]]))  # (log 2 + softplus(2)) / 2
        tensor(1.4100)
    """

    name = "bce"

    def __init__(self, from_probabilities: bool = False):
        super().__init__()
        self.from_probabilities = from_probabilities

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        check_shapes(scores, targets)
        mask = resolve_mask(scores, mask)
        targets = targets.to(scores.dtype).masked_fill(~mask, 0.0)
        if self.from_probabilities:
            probs = scores.masked_fill(~mask, 0.5).clamp(1e-7, 1 - 1e-7)
            elementwise = F.binary_cross_entropy(probs, targets, reduction="none")
        else:
            elementwise = F.binary_cross_entropy_with_logits(scores.masked_fill(~mask, 0.0), targets, reduction="none")
        elementwise = elementwise * mask
        count = mask.sum(dim=1)
        per_query = elementwise.sum(dim=1) / count.clamp(min=1)
        return mean_over_queries(per_query, count > 0, elementwise)
