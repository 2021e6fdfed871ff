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

    With ``in_batch_negatives=True`` (dense retrievers; PairDistill's L_CL over the positive,
    the hard negatives and in-batch negatives, as DPR §3.2) the denominator also runs over every
    other query's passages in the batch::

        L_b = -log( exp(s_b+) / (sum_{j <= k} exp(s_bj) + sum_{c != b} sum_{j <= k} exp(s(q_b, d_cj))) )

    Another query's passage is a negative even if it is the same document (DPR does the same).

    Inputs:
        scores: ``[B, k]`` student scores.
        targets: ``[B, k]`` relevance labels (``> 0`` = positive) or ``[B]`` index of the positive.
        mask: ``bool [B, k]`` real passages (default: finite scores).
        in_batch_scores: ``[B, B*k]`` query b against passage j of query c at column ``c*k + j``
            (a dense student's ``DenseOutput.in_batch_scores``); needed with in-batch negatives.
        in_batch_mask: ``bool [B, B*k]`` real passage slots (default: finite ``in_batch_scores``).

    Returns the mean over queries that have a positive.

    Args:
        temperature: τ (papers: 1).
        in_batch_negatives: add the other queries' passages as negatives (sets ``in_batch``, which
            makes ``DenseRetriever.compute_loss`` pass the in-batch scores).

    Example::

        >>> loss = InfoNCE()
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))  # log(1 + e^-1 + e^-2)
        tensor(0.4076)
        >>> ib = InfoNCE(in_batch_negatives=True)   # B = 2, k = 1: the other query's passage
        >>> ib(torch.tensor([[0.0], [0.0]]), torch.tensor([0, 0]),
        ...    in_batch_scores=torch.tensor([[0.0, 0.0], [0.0, 0.0]]))   # log 2
        tensor(0.6931)
    """

    name = "infonce"

    def __init__(self, temperature: float = 1.0, in_batch_negatives: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)
        self.in_batch = bool(in_batch_negatives)

    def forward(
        self,
        scores: Tensor,
        targets: Tensor,
        mask: Tensor | None = None,
        in_batch_scores: Tensor | None = None,
        in_batch_mask: Tensor | None = None,
    ) -> Tensor:
        targets = _one_hot_targets(scores, targets)
        mask = resolve_mask(scores, mask)
        if self.in_batch:
            scores, targets, mask = with_in_batch_negatives(scores, targets, mask, in_batch_scores, in_batch_mask)
        logits = (scores / self.temperature).masked_fill(~mask, float("-inf"))
        positive = (targets > 0) & mask
        log_all = torch.logsumexp(logits, dim=1)
        log_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
        valid = positive.any(dim=1)
        per_query = torch.where(valid, log_all - log_pos, torch.zeros_like(log_all))
        return mean_over_queries(per_query, valid, scores.masked_fill(~mask, 0.0))


def with_in_batch_negatives(
    scores: Tensor, targets: Tensor, mask: Tensor, in_batch_scores: Tensor | None, in_batch_mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Widen ``[B, k]`` scores/targets/mask to ``[B, B*k]``: query b's own block (columns
    ``b*k .. b*k+k-1``) holds its own ``scores``/``targets``/``mask``, the other blocks the other
    queries' passages from ``in_batch_scores`` with target 0."""
    if in_batch_scores is None:
        raise ValueError("in_batch_negatives=True needs in_batch_scores [B, B*k] (a dense student's "
                         "DenseOutput; DenseRetriever.compute_loss passes them)")
    batch, k = scores.shape
    if in_batch_scores.shape != (batch, batch * k):
        raise ValueError(f"in_batch_scores must be [B, B*k] = {(batch, batch * k)}, got {tuple(in_batch_scores.shape)}")
    ib_mask = torch.isfinite(in_batch_scores) if in_batch_mask is None else in_batch_mask.bool()
    own = torch.eye(batch, dtype=torch.bool, device=scores.device)[:, :, None]  # [B, B, 1]
    wide_scores = torch.where(own, scores[:, None, :], in_batch_scores.view(batch, batch, k))
    wide_mask = torch.where(own, mask[:, None, :], ib_mask.view(batch, batch, k))
    wide_targets = torch.where(own, targets.to(scores.dtype)[:, None, :], torch.zeros((), dtype=scores.dtype,
                                                                                       device=scores.device))
    return (wide_scores.reshape(batch, batch * k), wide_targets.reshape(batch, batch * k),
            wide_mask.reshape(batch, batch * k))


#: CELI's name for the same loss
LCE = InfoNCE
