"""Ranking losses: one small ``torch.nn.Module`` per file, ``forward(scores, targets, mask)``.

Shapes and the reduction convention are in ``base.py``; each class's docstring gives the
formula, the paper and a hand-checked example. ``get_loss(name, **options)`` builds one by name.
"""

from rankdistill.losses.base import RankingLoss
from rankdistill.losses.bce import BCE
from rankdistill.losses.circle import CircleLoss
from rankdistill.losses.da_infonce import DuplicateAwareInfoNCE
from rankdistill.losses.infonce import LCE, InfoNCE, with_in_batch_negatives
from rankdistill.losses.kl import KLDistillation
from rankdistill.losses.margin_mse import MarginMSE
from rankdistill.losses.na_ranknet import NoveltyAwareRankNet, novelty_adjusted_relevance
from rankdistill.losses.pairdistill import PairDistillLoss, PairDistillZSLoss
from rankdistill.losses.pairwise_kl import PairwiseKL, pair_targets
from rankdistill.losses.ranknet import RankNet
from rankdistill.losses.registry import LOSSES, get_loss
from rankdistill.losses.window_kl import WindowKLDistillation

__all__ = [
    "BCE",
    "LCE",
    "LOSSES",
    "CircleLoss",
    "DuplicateAwareInfoNCE",
    "InfoNCE",
    "KLDistillation",
    "MarginMSE",
    "NoveltyAwareRankNet",
    "PairDistillLoss",
    "PairDistillZSLoss",
    "PairwiseKL",
    "RankNet",
    "RankingLoss",
    "WindowKLDistillation",
    "get_loss",
    "novelty_adjusted_relevance",
    "pair_targets",
    "with_in_batch_negatives",
]
