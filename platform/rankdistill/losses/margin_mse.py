"""Margin-MSE distillation (Hofstätter et al. 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from rankdistill.losses.base import RankingLoss, check_shapes, fill, resolve_mask


class MarginMSE(RankingLoss):
    """Margin-MSE (Hofstätter et al., "Improving Efficient Neural Ranking Models with
    Cross-Architecture Knowledge Distillation", 2020)::

        L = mean_{(i, j)} ((s_i - s_j) - (t_i - t_j))^2

    ``pairs="first"`` (default, the paper's (q, d+, d-) triples and sentence-transformers'
    multi-negative form) compares passage 0 (the positive) with every other passage;
    ``pairs="all"`` uses every pair i < j. The mean runs over all margins of the batch (as
    sentence-transformers' ``MarginMSELoss``).

    Inputs:
        scores: ``[B, k]`` student scores.
        targets: ``[B, k]`` teacher scores (not margins).
        mask: ``bool [B, k]``.

    Example::

        >>> MarginMSE()(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[5.0, 4.0, 1.0]]))
        tensor(5.)   # student margins (2, 1), teacher margins (1, 4): (1 + 9) / 2
    """

    name = "margin_mse"

    def __init__(self, pairs: str = "first"):
        super().__init__()
        if pairs not in ("first", "all"):
            raise ValueError("pairs must be 'first' or 'all'")
        self.pairs = pairs

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        check_shapes(scores, targets)
        mask = resolve_mask(scores, mask)
        s, t = fill(scores, mask), fill(targets.to(scores.dtype), mask)
        k = scores.shape[1]
        if self.pairs == "first":
            s_diff, t_diff = s[:, :1] - s[:, 1:], t[:, :1] - t[:, 1:]
            pair_mask = mask[:, :1] & mask[:, 1:]
        else:
            upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=scores.device), diagonal=1)
            s_diff, t_diff = s[:, :, None] - s[:, None, :], t[:, :, None] - t[:, None, :]
            pair_mask = mask[:, :, None] & mask[:, None, :] & upper
        squared = (s_diff - t_diff) ** 2 * pair_mask
        dims = tuple(range(1, squared.dim()))
        count = pair_mask.sum(dim=dims)
        per_query = squared.sum(dim=dims) / count.clamp(min=1)
        # weight queries by their number of margins: the mean over all margins in the batch
        valid = count > 0
        if not bool(valid.any()):
            return (squared * 0.0).sum()
        return (per_query * count)[valid].sum() / count[valid].sum()

