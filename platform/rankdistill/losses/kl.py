"""Listwise KL distillation from teacher scores."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import RankingLoss, check_shapes, mean_over_queries, resolve_mask


class KLDistillation(RankingLoss):
    """Listwise KL divergence (PairDistill's L_KD, §3.3; Hinton et al. 2015)::

        L = KL( softmax(t / τ) || softmax(s / τ_s) ) = sum_i p_i (log p_i - log q_i)

    over each query's real passages, averaged over queries (``1/|B| sum_q``).

    Inputs:
        scores: ``[B, k]`` student scores.
        targets: ``[B, k]`` teacher scores (logits / log-probabilities: they go through the
            softmax with temperature τ).
        mask: ``bool [B, k]``.

    Args:
        temperature: τ applied to the teacher (default 1).
        student_temperature: τ_s applied to the student; ``None`` (default) = τ, Hinton-style.
            PairDistill's P(d | q) has no temperature: ``student_temperature=1``.

    Example::

        >>> import math
        >>> KLDistillation()(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]]))
        tensor(0.1438)   # p = (.5, .5), q = (.75, .25): .5 log(.5/.75) + .5 log(.5/.25)
    """

    name = "kl"

    def __init__(self, temperature: float = 1.0, student_temperature: float | None = None):
        super().__init__()
        if temperature <= 0 or (student_temperature is not None and student_temperature <= 0):
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)
        self.student_temperature = float(temperature if student_temperature is None else student_temperature)

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        check_shapes(scores, targets)
        mask = resolve_mask(scores, mask)
        neg_inf = float("-inf")
        log_q = F.log_softmax((scores / self.student_temperature).masked_fill(~mask, neg_inf), dim=1)
        log_p = F.log_softmax((targets.to(scores.dtype) / self.temperature).masked_fill(~mask, neg_inf), dim=1)
        p = log_p.exp()
        terms = torch.where(mask & (p > 0), p * (log_p - log_q), torch.zeros_like(p))
        valid = mask.any(dim=1)
        return mean_over_queries(terms.sum(dim=1), valid, terms)
