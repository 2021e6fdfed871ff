"""Novelty-aware RankNet (Set-Encoder §3.5) and the near-duplicate clustering it needs."""

from __future__ import annotations

import torch
from torch import Tensor

from rankdistill.losses.base import (
    RankingLoss,
    better_pairs,
    check_shapes,
    fill,
    ranks_to_relevance,
    resolve_mask,
)
from rankdistill.losses.ranknet import pairwise_logistic


class NoveltyAwareRankNet(RankingLoss):
    """NA-RankNet (Schlatt et al., Set-Encoder §3.5)::

        r̄_i = r_i * (1 - max_j 1[c_i = c_j] * 1[s_i < s_j])
        L   = sum_{i, j} 1[r̄_i < r̄_j] log(1 + exp(s_i - s_j))

    ``r`` is a relevance grade (larger = better); a passage whose near-duplicate (same cluster
    ``c``) is already scored higher by the model gets relevance 0, so it is pushed below every
    passage that still adds something. The indicator uses the current scores without gradient.

    Inputs:
        scores: ``[B, k]``.
        targets: ``[B, k]`` teacher ranks, 1 = best (default; turned into relevance
            ``n + 1 - rank`` like the paper's novelty data) or relevance grades
            (``targets_are_ranks=False``).
        mask: ``bool [B, k]``.
        clusters: ``long [B, k]`` near-duplicate cluster id per passage (from
            :func:`rankdistill.training.augment.novelty_clusters`); a negative id means "its own cluster".

    Args:
        reduction: ``"sum"`` over pairs (paper) or ``"mean"``; then averaged over queries.

    Example::

        >>> loss = NoveltyAwareRankNet()
        >>> loss(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[1, 2, 3]]), clusters=torch.tensor([[0, 0, 1]]))
        tensor(1.7535)   # r̄ = (3, 0, 1): softplus(-1) + softplus(1) + softplus(-2)
    """

    name = "na_ranknet"

    def __init__(self, targets_are_ranks: bool = True, reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError("reduction must be 'sum' or 'mean'")
        self.targets_are_ranks = targets_are_ranks
        self.reduction = reduction

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None, *, clusters: Tensor) -> Tensor:
        check_shapes(scores, targets)
        if clusters.shape != scores.shape:
            raise ValueError(f"clusters shape {tuple(clusters.shape)} does not match scores {tuple(scores.shape)}")
        mask = resolve_mask(scores, mask)
        s = fill(scores, mask)
        relevance = targets.to(s.dtype)
        if self.targets_are_ranks:
            relevance = ranks_to_relevance(relevance, mask)
        adjusted = novelty_adjusted_relevance(s.detach(), relevance, clusters, mask)
        pairs = better_pairs(adjusted, mask, lower_is_better=False)
        return pairwise_logistic(s, pairs, self.reduction)


def novelty_adjusted_relevance(scores: Tensor, relevance: Tensor, clusters: Tensor, mask: Tensor) -> Tensor:
    """``r̄_i = r_i * (1 - max_j 1[c_i = c_j] 1[s_i < s_j])`` over real passages ``j``."""
    k = scores.shape[1]
    ids = clusters.long()
    # a negative id is a singleton: give it a unique id that cannot collide
    unique = -1 - torch.arange(k, device=ids.device).expand_as(ids) - 10 * k
    ids = torch.where(ids < 0, unique, ids)
    same = (ids[:, :, None] == ids[:, None, :]) & mask[:, None, :]
    beaten = (scores[:, :, None] < scores[:, None, :]) & same
    return relevance * (1 - beaten.any(dim=2).to(relevance.dtype))


