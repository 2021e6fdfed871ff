"""PairDistill's full objective (Huang & Chen, ../shared/papers/pairdistill.md §3.1, §3.3, §4.2)::

    L    = L_CL + λ_KD · L_KD + λ_pair · L_pair        (supervised)
    L_ZS =        λ_KD · L_KD + λ_pair · L_pair        (zero-shot: no L_CL; paper: λ_KD = 1)

- ``L_CL``: InfoNCE ``-log exp(s(q, d+)) / sum_{d in D'} exp(s(q, d))`` over the positive, the
  hard negatives and (``in_batch_negatives``) the other queries' passages
  (:class:`~rankdistill.losses.infonce.InfoNCE`).
- ``L_KD = 1/|B| sum_q KL(P_point(d | q) || P(d | q))`` with ``P_point = softmax(s_point / τ)``
  and the student's ``P = softmax(s)`` (:class:`~rankdistill.losses.kl.KLDistillation`,
  ``student_temperature=1``).
- ``L_pair = 1/N sum_q sum_{(i, j) in D_pair} KL(P_pair(d_i ≻ d_j) || σ(s_i - s_j))``
  (:class:`~rankdistill.losses.pairwise_kl.PairwiseKL`), with ``N`` the number of pairs in the
  batch (``pair_reduction: pairs``, the official code's mean over pairs; default) or the batch size
  ``|B|`` (``pair_reduction: queries``, the paper's equation).

λ_pair defaults to 3.0: the official code's weight, and the best value of the paper's Table 6
(its Table 7 says 30, which contradicts both; with the ``queries`` reduction and m pairs per
query, λ_pair = 30 weights L_pair about 10·m times the official loss).

All three are vectorised over the batch and the pairs (no Python loop).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rankdistill.losses.base import RankingLoss, resolve_mask
from rankdistill.losses.infonce import InfoNCE
from rankdistill.losses.kl import KLDistillation
from rankdistill.losses.pairwise_kl import PairwiseKL


class PairDistillLoss(RankingLoss):
    """``L = L_CL + λ_KD L_KD + λ_pair L_pair`` (or ``L_ZS`` with ``contrastive=False``).

    Inputs (``forward``):
        scores: ``float [B, k]`` student scores of each query's list (-inf at padding).
        targets: ``float [B, k]`` pointwise teacher scores ``s_point`` (logits or
            log-probabilities; NaN = no teacher score for that passage, left out of L_KD).
        mask: ``bool [B, k]`` real passages (default: finite ``scores``).
        labels: ``[B, k]`` relevance (``> 0`` = the positive d+) or ``[B]`` index of the positive;
            required when ``contrastive``.
        pair_targets: ``float [B, k, k]`` teacher ``P(d_i ≻ d_j)`` at ``[b, i, j]`` for the sampled
            pairs, NaN elsewhere (one entry per unordered pair); required when ``lambda_pair > 0``.
        pair_mask: ``bool [B, k, k]`` pairs to use (default: the non-NaN ``pair_targets``).
        in_batch_scores / in_batch_mask: ``[B, B*k]`` from a dense student's ``DenseOutput``
            (``DenseRetriever.compute_loss`` passes them; ``in_batch`` is True when
            ``in_batch_negatives`` and ``contrastive``).

    Args:
        lambda_kd: λ_KD (paper Table 7: 1.0).
        lambda_pair: λ_pair (official code and paper Table 6: 3.0; Table 7's 30 contradicts both).
        pair_reduction: ``pairs`` (mean over all pairs of the batch, as the official code) or
            ``queries`` (sum over pairs / |B|, as the paper's equation).
        temperature: τ of P_point (paper: 1.0).
        contrastive: include L_CL (False = L_ZS).
        in_batch_negatives: L_CL also contrasts the other queries' passages.

    After each call ``last_components`` holds the detached ``{"l_cl", "l_kd", "l_pair"}``
    values (for logging).

    Example (hand-checked: P = (.75, .25), P_point = (.5, .5), P_pair(0 ≻ 1) = .9)::

        >>> import math
        >>> loss = PairDistillLoss(lambda_kd=1.0, lambda_pair=3.0, in_batch_negatives=False)
        >>> loss(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]]),
        ...      labels=torch.tensor([0]), pair_targets=torch.tensor([[[float("nan"), 0.9],
        ...                                                          [float("nan"), float("nan")]]]))
        tensor(0.6489)   # -log .75 + .5 log(4/3) + 3 (.9 log(.9/.75) + .1 log(.1/.25))
    """

    name = "pairdistill"

    def __init__(
        self,
        lambda_kd: float = 1.0,
        lambda_pair: float = 3.0,
        temperature: float = 1.0,
        contrastive: bool = True,
        in_batch_negatives: bool = True,
        pair_reduction: str = "pairs",
    ):
        super().__init__()
        if lambda_kd < 0 or lambda_pair < 0:
            raise ValueError("lambda_kd and lambda_pair must be >= 0")
        self.lambda_kd = float(lambda_kd)
        self.lambda_pair = float(lambda_pair)
        self.contrastive = bool(contrastive)
        self.contrastive_loss = InfoNCE(in_batch_negatives=in_batch_negatives)
        self.kd_loss = KLDistillation(temperature=temperature, student_temperature=1.0)
        self.pair_loss = PairwiseKL(reduction=pair_reduction)
        self.in_batch = self.contrastive and self.contrastive_loss.in_batch
        self.last_components: dict[str, float] = {}

    def forward(
        self,
        scores: Tensor,
        targets: Tensor | None = None,
        mask: Tensor | None = None,
        labels: Tensor | None = None,
        pair_targets: Tensor | None = None,
        pair_mask: Tensor | None = None,
        in_batch_scores: Tensor | None = None,
        in_batch_mask: Tensor | None = None,
    ) -> Tensor:
        mask = resolve_mask(scores, mask)
        total = (scores.masked_fill(~mask, 0.0) * 0.0).sum()
        components: dict[str, float] = {}
        if self.contrastive:
            if labels is None:
                raise ValueError("L_CL needs labels (the positive of each query); use contrastive=False for L_ZS")
            l_cl = self.contrastive_loss(scores, labels, mask, in_batch_scores, in_batch_mask)
            total = total + l_cl
            components["l_cl"] = float(l_cl.detach())
        if self.lambda_kd > 0:
            if targets is None:
                raise ValueError("L_KD needs targets: [B, k] pointwise teacher scores")
            teacher = targets.to(scores.dtype)
            kd_mask = mask & ~torch.isnan(teacher)
            l_kd = self.kd_loss(scores, torch.nan_to_num(teacher, nan=0.0), kd_mask)
            total = total + self.lambda_kd * l_kd
            components["l_kd"] = float(l_kd.detach())
        if self.lambda_pair > 0:
            if pair_targets is None:
                raise ValueError("L_pair needs pair_targets: [B, k, k] teacher P(d_i ≻ d_j), NaN where unlabelled")
            pairs = mask[:, :, None] & mask[:, None, :]
            if pair_mask is not None:
                pairs = pairs & pair_mask.bool()
            l_pair = self.pair_loss(scores, pair_targets, pairs)
            total = total + self.lambda_pair * l_pair
            components["l_pair"] = float(l_pair.detach())
        self.last_components = components
        return total


class PairDistillZSLoss(PairDistillLoss):
    """``L_ZS = λ_KD L_KD + λ_pair L_pair`` (PairDistill §4.2, zero-shot domain adaptation):
    :class:`PairDistillLoss` with ``contrastive=False`` (no labels needed)."""

    name = "pairdistill_zs"

    def __init__(self, lambda_kd: float = 1.0, lambda_pair: float = 3.0, temperature: float = 1.0,
                 pair_reduction: str = "pairs"):
        super().__init__(lambda_kd, lambda_pair, temperature, contrastive=False, in_batch_negatives=False,
                         pair_reduction=pair_reduction)
