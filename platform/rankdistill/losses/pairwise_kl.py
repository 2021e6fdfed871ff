"""PairDistill's pairwise KL distillation (L_pair) from teacher pair probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import RankingLoss


class PairwiseKL(RankingLoss):
    """L_pair of PairDistill (Huang & Chen, ../shared/papers/pairdistill.md §4.2)::

        P(d_i ≻ d_j) = exp(s_i) / (exp(s_i) + exp(s_j)) = σ(s_i - s_j)
        KL_ij = KL( P_pair(i ≻ j) || P(i ≻ j) )      (two Bernoulli distributions)

        reduction "pairs"   (default):  L = 1/|pairs in the batch| Σ_q Σ_(i,j) KL_ij
        reduction "queries":            L = 1/|B| Σ_q Σ_(i,j) KL_ij

    ``pairs`` is what the official code computes (MiuLab/PairDistill,
    ``colbert/training/training.py:pair_distill_loss``: a ``KLDivLoss(batchmean)`` per pair, summed,
    divided by the number of pairs); ``queries`` is the paper's equation, dividing by the batch size
    |B| (every query of the batch, with pairs or not). With m pairs per query the two differ by a
    factor m. The pairs are the teacher-labelled ones (the paper samples them with ``|i - j| < δ``;
    that is the data side's job).

    Inputs:
        scores: ``[B, k]`` student scores.
        targets: ``[B, k, k]`` teacher ``P(i ≻ j)`` at ``[b, i, j]``, NaN where the pair has no
            label (build it with :func:`pair_targets`). Label each unordered pair once.
        mask: ``bool [B, k]`` real passages or ``bool [B, k, k]`` pairs to use (default: every
            non-NaN target whose passages have finite scores).

    Example::

        >>> t = pair_targets(2, [(0, 1)], [0.9])[None]
        >>> PairwiseKL()(torch.tensor([[1.0, 0.0]]), t)
        tensor(0.0882)   # 0.9 log(0.9 / σ(1)) + 0.1 log(0.1 / σ(-1))
    """

    name = "pairwise_kl"
    REDUCTIONS = ("pairs", "queries")

    def __init__(self, reduction: str = "pairs"):
        super().__init__()
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"pair_reduction must be one of {', '.join(self.REDUCTIONS)}, got '{reduction}'")
        self.reduction = reduction

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        if scores.dim() != 2 or targets.shape != (*scores.shape, scores.shape[1]):
            raise ValueError(f"scores must be [B, k] and targets [B, k, k]; got {tuple(scores.shape)}, "
                             f"{tuple(targets.shape)}")
        finite = torch.isfinite(scores)
        if mask is None:
            pair_mask = finite[:, :, None] & finite[:, None, :]
        elif mask.dim() == 2:
            pair_mask = mask.bool()[:, :, None] & mask.bool()[:, None, :]
        else:
            pair_mask = mask.bool()
        k = scores.shape[1]
        eye = torch.eye(k, dtype=torch.bool, device=scores.device)
        pair_mask = pair_mask & ~torch.isnan(targets) & ~eye
        s = scores.masked_fill(~finite, 0.0)
        diff = s[:, :, None] - s[:, None, :]  # s_i - s_j
        p = torch.nan_to_num(targets.to(scores.dtype), nan=0.5).clamp(0.0, 1.0)
        log_q1, log_q0 = F.logsigmoid(diff), F.logsigmoid(-diff)
        kl = torch.xlogy(p, p) - p * log_q1 + torch.xlogy(1 - p, 1 - p) - (1 - p) * log_q0
        kl = torch.where(pair_mask, kl, torch.zeros_like(kl))
        if self.reduction == "queries":
            return kl.sum() / scores.shape[0]
        count = int(pair_mask.sum())
        return kl.sum() / count if count else (kl * 0.0).sum()


def pair_targets(
    k: int, pairs: Sequence[tuple[int, int]], probabilities: Sequence[float], dtype: torch.dtype = torch.float32
) -> Tensor:
    """``[k, k]`` matrix with ``P(i ≻ j)`` at ``[i, j]`` for each labelled pair, NaN elsewhere
    (from the label store's ``docid_a, docid_b, p(a ≻ b)`` rows mapped to list positions)."""
    out = torch.full((k, k), float("nan"), dtype=dtype)
    for (i, j), prob in zip(pairs, probabilities):
        if i == j:
            raise ValueError(f"pair ({i}, {j}) compares a passage with itself")
        out[i, j] = float(prob)
    return out
