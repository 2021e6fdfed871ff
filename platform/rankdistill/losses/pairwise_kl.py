"""PairDistill's pairwise KL distillation (L_pair) from teacher pair probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import RankingLoss, mean_over_queries


class PairwiseKL(RankingLoss):
    """L_pair of PairDistill (Huang & Chen, ../shared/papers/pairdistill.md §4.2)::

        P(d_i ≻ d_j) = exp(s_i) / (exp(s_i) + exp(s_j)) = σ(s_i - s_j)
        L = 1/|B| sum_q sum_{(i, j)} KL( P_pair(i ≻ j) || P(i ≻ j) )

    the KL between two Bernoulli distributions, summed over the teacher-labelled pairs of each
    query (the paper samples pairs with ``|i - j| < δ``; that is the data side's job).

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
        kl = kl * pair_mask
        count = pair_mask.sum(dim=(1, 2))
        return mean_over_queries(kl.sum(dim=(1, 2)), count > 0, kl)


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
