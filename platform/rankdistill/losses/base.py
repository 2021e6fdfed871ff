"""Shared conventions of the ranking losses.

Every loss is a small ``torch.nn.Module`` whose ``forward(scores, targets, mask=None, ...)`` takes

- ``scores``: ``float [B, k]`` student scores (B queries, k passages; a model's output may hold
  ``-inf`` at padded positions),
- ``targets``: ``[B, k]`` labels whose meaning each loss documents (relevance, teacher scores,
  teacher ranks, or ``[B, k, k]`` pair probabilities),
- ``mask``: ``bool [B, k]``, True for real passages; ``None`` means "where ``scores`` is finite",

and returns a scalar: the mean over queries of the per-query loss (queries that give the loss
nothing to compare are left out; if none is left the result is a differentiable 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def resolve_mask(scores: Tensor, mask: Tensor | None) -> Tensor:
    """``mask`` as bool (``isfinite(scores)`` when None), shape-checked against ``scores``."""
    if mask is None:
        return torch.isfinite(scores)
    mask = mask.bool()
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match scores {tuple(scores.shape)}")
    return mask


def check_shapes(scores: Tensor, targets: Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, k], got shape {tuple(scores.shape)}")
    if targets.shape != scores.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match scores {tuple(scores.shape)}")


def fill(scores: Tensor, mask: Tensor, value: float = 0.0) -> Tensor:
    """Replace masked entries (which may be -inf) by a finite value so arithmetic stays NaN-free."""
    return scores.masked_fill(~mask, value)


def mean_over_queries(per_query: Tensor, valid: Tensor, like: Tensor) -> Tensor:
    """Mean of ``per_query [B]`` over ``valid [B]``; a graph-connected 0 when nothing is valid."""
    if bool(valid.any()):
        return per_query[valid].mean()
    return (like * 0.0).sum()


def ranks_to_relevance(ranks: Tensor, mask: Tensor) -> Tensor:
    """Teacher ranks (1 = best) -> relevance ``n_valid + 1 - rank`` (0 at padding), as in the
    Set-Encoder novelty data (``relevance = 1 + max rank - rank``)."""
    n_valid = mask.sum(dim=1, keepdim=True).to(ranks.dtype)
    return torch.where(mask, n_valid + 1 - ranks, torch.zeros_like(ranks))


def better_pairs(targets: Tensor, mask: Tensor, lower_is_better: bool) -> Tensor:
    """``bool [B, k, k]``: ``[b, i, j]`` True iff passage i is strictly better than j (both real)."""
    t_i, t_j = targets[:, :, None], targets[:, None, :]
    better = t_i < t_j if lower_is_better else t_i > t_j
    return better & mask[:, :, None] & mask[:, None, :]


class RankingLoss(nn.Module):
    """Base class; subclasses implement ``forward``. ``name`` is the registry key."""

    name: str = ""
