"""Duplicate-aware InfoNCE (Set-Encoder §3.4)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from rankdistill.losses.base import RankingLoss, mean_over_queries, resolve_mask
from rankdistill.losses.infonce import InfoNCE


class DuplicateAwareInfoNCE(RankingLoss):
    """DA-InfoNCE (Schlatt et al., Set-Encoder §3.4)::

        L = L_InfoNCE - sum_i [ 1[d_i = d_x] log p_i + 1[d_i != d_x] log(1 - p_i) ]

    with ``p_i = σ(duplicate_logit_i)`` from the Set-Encoder's duplicate head. (The paper prints the
    second term with a plus sign; minimising it must *maximise* the log-likelihood of the duplicate
    labels, i.e. add the binary cross-entropy, as here.) Build the lists with
    ``rankdistill.training.augment.add_duplicate``; both copies of ``d_x`` are duplicates.

    Inputs:
        scores: ``[B, k]`` relevance scores (the list *with* the appended duplicate).
        targets: ``[B, k]`` relevance labels (> 0 = positive) or ``[B]`` positive index.
        mask: ``bool [B, k]``.
        duplicate_logits: ``[B, k]`` duplicate-head logits (``SetEncoderOutput.duplicate_logits``;
            ``SetEncoder.compute_loss`` passes it).
        duplicate_targets: ``[B, k]`` 1 for copies of ``d_x``, else 0.

    Args:
        temperature: InfoNCE τ.
        duplicate_weight: weight of the duplicate term (paper: 1).
        duplicate_reduction: ``"sum"`` over passages (the paper's Σ) or ``"mean"``.

    Example::

        >>> loss = DuplicateAwareInfoNCE()
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]),
        ...      duplicate_logits=torch.tensor([[0.0, 0.0, 0.0]]), duplicate_targets=torch.tensor([[0, 1, 1]]))
        tensor(2.4870)   # 0.4076 + 3 log 2
    """

    name = "da_infonce"
    uses_duplicate_logits = True

    def __init__(self, temperature: float = 1.0, duplicate_weight: float = 1.0, duplicate_reduction: str = "sum"):
        super().__init__()
        if duplicate_reduction not in ("sum", "mean"):
            raise ValueError("duplicate_reduction must be 'sum' or 'mean'")
        self.infonce = InfoNCE(temperature)
        self.duplicate_weight = float(duplicate_weight)
        self.duplicate_reduction = duplicate_reduction

    def forward(
        self,
        scores: Tensor,
        targets: Tensor,
        mask: Tensor | None = None,
        *,
        duplicate_logits: Tensor,
        duplicate_targets: Tensor,
    ) -> Tensor:
        mask = resolve_mask(scores, mask)
        if duplicate_logits.shape != scores.shape or duplicate_targets.shape != scores.shape:
            raise ValueError("duplicate_logits and duplicate_targets must have the shape of scores")
        ranking = self.infonce(scores, targets, mask)
        bce = F.binary_cross_entropy_with_logits(
            duplicate_logits.masked_fill(~mask, 0.0), duplicate_targets.to(scores.dtype), reduction="none"
        )
        bce = bce * mask
        count = mask.sum(dim=1)
        per_query = bce.sum(dim=1)
        if self.duplicate_reduction == "mean":
            per_query = per_query / count.clamp(min=1)
        duplicate = mean_over_queries(per_query, count > 0, bce)
        return ranking + self.duplicate_weight * duplicate

