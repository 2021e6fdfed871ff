"""Circle loss (Sun et al., CVPR 2020) as used by ListConRanker (§3.3)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import RankingLoss, check_shapes, fill, mean_over_queries, resolve_mask


class CircleLoss(RankingLoss):
    """Circle loss, ListConRanker Eqs. 11-17::

        L     = log(1 + r_neg * r_pos)
        r_neg = sum_j exp( γ α_neg^j (s_neg^j - Δ_neg)),   α_neg^j = max(0, s_neg^j - O_neg)
        r_pos = sum_i exp(-γ α_pos^i (s_pos^i - Δ_pos)),   α_pos^i = max(0, O_pos - s_pos^i)
        Δ_neg = m,  Δ_pos = 1 - m,  O_neg = -m,  O_pos = 1 + m

    computed per query over its real passages (stable form ``softplus(logsumexp + logsumexp)``),
    averaged over queries. Queries without a positive or without a negative give 0.

    Inputs:
        scores: ``[B, k]`` similarities, ListConRanker's sigmoid scores in (0, 1).
        targets: ``[B, k]`` binary labels (> 0 = positive).
        mask: ``bool [B, k]``.

    Args:
        gamma: γ (paper: 10).
        margin: m (paper: -0.2 in the first, frozen-embedding stage and 0.1 in the second; default
            0.1).
        detach_weights: treat α as constants, as in Sun et al.'s reference implementation.

    Example::

        >>> CircleLoss(gamma=10, margin=0.25)(torch.tensor([[0.8, 0.3, 0.6]]), torch.tensor([[1, 0, 0]]))
        tensor(2.8732)   # log(1 + e^0.05 + e^2.75)
    """

    name = "circle"

    def __init__(self, gamma: float = 10.0, margin: float = 0.1, detach_weights: bool = True):
        super().__init__()
        self.gamma = float(gamma)
        self.margin = float(margin)
        self.detach_weights = detach_weights

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        check_shapes(scores, targets)
        mask = resolve_mask(scores, mask)
        s = fill(scores, mask)
        positive = (targets > 0) & mask
        negative = (targets <= 0) & mask
        m = self.margin
        o_pos, o_neg, d_pos, d_neg = 1 + m, -m, 1 - m, m
        ref = s.detach() if self.detach_weights else s
        alpha_pos = torch.clamp_min(o_pos - ref, 0.0)
        alpha_neg = torch.clamp_min(ref - o_neg, 0.0)
        neg_inf = float("-inf")
        logit_pos = (-self.gamma * alpha_pos * (s - d_pos)).masked_fill(~positive, neg_inf)
        logit_neg = (self.gamma * alpha_neg * (s - d_neg)).masked_fill(~negative, neg_inf)
        valid = positive.any(dim=1) & negative.any(dim=1)
        total = torch.logsumexp(logit_pos, dim=1) + torch.logsumexp(logit_neg, dim=1)
        per_query = F.softplus(torch.where(valid, total, torch.zeros_like(total)))
        return mean_over_queries(per_query, valid, s)
