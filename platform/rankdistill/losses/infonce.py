"""InfoNCE / LCE: softmax cross-entropy of the positive(s) against the whole list."""

from __future__ import annotations

import torch
from torch import Tensor

from rankdistill.losses.base import RankingLoss, mean_over_queries, resolve_mask


def _one_hot_targets(scores: Tensor, targets: Tensor) -> Tensor:
    if targets.dim() == 1:  # index of the positive per query
        return torch.nn.functional.one_hot(targets.long(), scores.shape[1]).to(scores.dtype)
    if targets.shape != scores.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match scores {tuple(scores.shape)}")
    return targets


class InfoNCE(RankingLoss):
    """InfoNCE (van den Oord et al. 2018), a.k.a. LCE (Gao et al. 2021) in CELI's notation::

        L = -log( sum_{i in P} exp(s_i / τ) / sum_{i valid} exp(s_i / τ) )

    With one positive this is exactly Set-Encoder §3.3 / CELI §2 / PairDistill's L_CL
    ``-log exp(s_+) / sum_i exp(s_i)``; with several positives P (e.g. a duplicated positive) they
    share the numerator.

    Inputs:
        scores: ``[B, k]`` student scores.
        targets: ``[B, k]`` relevance labels (``> 0`` = positive) or ``[B]`` index of the positive.
        mask: ``bool [B, k]`` real passages (default: finite scores).

    Returns the mean over queries that have a positive.

    Args:
        temperature: τ (papers: 1).

    Example::

        >>> loss = InfoNCE()
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))  # log(1 + e^-1 + e^-2)
        tensor(0.4076)
    """

    name = "infonce"

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        targets = _one_hot_targets(scores, targets)
        mask = resolve_mask(scores, mask)
        logits = (scores / self.temperature).masked_fill(~mask, float("-inf"))
        positive = (targets > 0) & mask
        log_all = torch.logsumexp(logits, dim=1)
        log_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
        valid = positive.any(dim=1)
        per_query = torch.where(valid, log_all - log_pos, torch.zeros_like(log_all))
        return mean_over_queries(per_query, valid, scores.masked_fill(~mask, 0.0))


#: CELI's name for the same loss
LCE = InfoNCE
