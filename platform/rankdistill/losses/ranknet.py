"""RankNet distillation from teacher ranks (Set-Encoder §3.3, RankZephyr permutations)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import (
    RankingLoss,
    better_pairs,
    check_shapes,
    fill,
    mean_over_queries,
    resolve_mask,
)


class RankNet(RankingLoss):
    """RankNet (Burges et al. 2005) on every pair the teacher orders::

        L = sum_{i, j : i ranked above j} log(1 + exp(s_j - s_i))

    This is Set-Encoder Eq. ``sum_ij 1[r_i < r_j] log(1 + e^{s_i - s_j})`` written with ``r`` as a
    relevance grade (larger = better, as in its NA-RankNet); with teacher *ranks* (1 = best) the
    better passage must get the larger score, hence ``s_j - s_i`` above. Ties are skipped.

    Inputs:
        scores: ``[B, k]``.
        targets: ``[B, k]`` teacher ranks, 1 = best (``targets_are_ranks=True``, default) or
            relevance values, larger = better (``targets_are_ranks=False``).
        mask: ``bool [B, k]``.

    Args:
        reduction: ``"sum"`` over a query's pairs (the paper's formula, default) or ``"mean"``;
            either way averaged over queries.

    Example::

        >>> RankNet()(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[1, 2, 3]]))
        tensor(1.7535)   # softplus(-2) + softplus(-1) + softplus(1)
    """

    name = "ranknet"

    def __init__(self, targets_are_ranks: bool = True, reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError("reduction must be 'sum' or 'mean'")
        self.targets_are_ranks = targets_are_ranks
        self.reduction = reduction

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        check_shapes(scores, targets)
        mask = resolve_mask(scores, mask)
        pairs = better_pairs(targets.to(scores.dtype), mask, lower_is_better=self.targets_are_ranks)
        return pairwise_logistic(fill(scores, mask), pairs, self.reduction)


def pairwise_logistic(scores: Tensor, pairs: Tensor, reduction: str = "sum") -> Tensor:
    """``sum_{(i, j) in pairs} softplus(s_j - s_i)`` per query (i should beat j), mean over queries."""
    diff = scores[:, None, :] - scores[:, :, None]  # [b, i, j] = s_j - s_i
    per_pair = F.softplus(diff) * pairs
    count = pairs.sum(dim=(1, 2))
    per_query = per_pair.sum(dim=(1, 2))
    if reduction == "mean":
        per_query = per_query / count.clamp(min=1)
    return mean_over_queries(per_query, count > 0, per_pair)
