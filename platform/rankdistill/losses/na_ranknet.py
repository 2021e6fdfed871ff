"""Novelty-aware RankNet (Set-Encoder §3.5) and the near-duplicate clustering it needs."""

from __future__ import annotations

import re
from collections.abc import Sequence

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
            :func:`novelty_clusters`); a negative id means "its own cluster".

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


_WORD = re.compile(r"\w+|[^\w\s]")


def _words(text: str, lowercase: bool, max_words: int) -> set[str]:
    tokens = _WORD.findall(text.lower() if lowercase else text)
    return set(tokens[:max_words])


def jaccard_distances(passages: Sequence[str], lowercase: bool = False, max_words: int = 512) -> list[list[float]]:
    """Pairwise word-set Jaccard distances ``1 - |A ∩ B| / |A ∪ B|`` (two empty texts: 0)."""
    sets = [_words(p, lowercase, max_words) for p in passages]
    n = len(sets)
    out = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            union = len(sets[i] | sets[j])
            d = 1.0 - (len(sets[i] & sets[j]) / union if union else 1.0)
            out[i][j] = out[j][i] = d
    return out


def novelty_clusters(
    passages: Sequence[str], threshold: float = 0.5, lowercase: bool = False, max_words: int = 512
) -> list[int]:
    """Near-duplicate clusters of one ranking (Set-Encoder §3.5): agglomerative clustering with
    *complete* linkage on word Jaccard distance, merging while the linkage distance is below
    ``1 - threshold`` (i.e. every pair in a cluster has Jaccard similarity > ``threshold``).

    Mirrors the authors' script (scikit-learn ``AgglomerativeClustering(metric="precomputed",
    linkage="complete", distance_threshold=0.5)`` on ``nltk`` word tokens, first 512 words); words
    here are ``\\w+`` runs and punctuation marks. Cluster ids are numbered by first appearance.
    """
    n = len(passages)
    if n == 0:
        return []
    dist = jaccard_distances(passages, lowercase, max_words)
    limit = 1.0 - threshold
    clusters: list[list[int]] = [[i] for i in range(n)]

    def linkage(a: list[int], b: list[int]) -> float:
        return max(dist[i][j] for i in a for j in b)

    while len(clusters) > 1:
        best, pair = None, None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                d = linkage(clusters[x], clusters[y])
                if best is None or d < best:
                    best, pair = d, (x, y)
        if best is None or best >= limit:
            break
        x, y = pair
        clusters[x] = clusters[x] + clusters[y]
        del clusters[y]
    label = [0] * n
    for cid, members in enumerate(sorted(clusters, key=min)):
        for i in members:
            label[i] = cid
    return label
