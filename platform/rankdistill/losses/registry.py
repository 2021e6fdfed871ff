"""Name -> loss class."""

from __future__ import annotations

from typing import Any

from torch import nn

from rankdistill.errors import ConfigError
from rankdistill.losses.bce import BCE
from rankdistill.losses.circle import CircleLoss
from rankdistill.losses.da_infonce import DuplicateAwareInfoNCE
from rankdistill.losses.infonce import InfoNCE
from rankdistill.losses.kl import KLDistillation
from rankdistill.losses.margin_mse import MarginMSE
from rankdistill.losses.na_ranknet import NoveltyAwareRankNet
from rankdistill.losses.pairdistill import PairDistillLoss, PairDistillZSLoss
from rankdistill.losses.pairwise_kl import PairwiseKL
from rankdistill.losses.ranknet import RankNet
from rankdistill.losses.window_kl import WindowKLDistillation

LOSSES: dict[str, type[nn.Module]] = {
    "infonce": InfoNCE,
    "lce": InfoNCE,
    "bce": BCE,
    "ranknet": RankNet,
    "margin_mse": MarginMSE,
    "kl": KLDistillation,
    "pairwise_kl": PairwiseKL,
    "da_infonce": DuplicateAwareInfoNCE,
    "na_ranknet": NoveltyAwareRankNet,
    "circle": CircleLoss,
    "pairdistill": PairDistillLoss,
    "pairdistill_zs": PairDistillZSLoss,
    "window_kl": WindowKLDistillation,
}


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a loss by registry name (``-`` and ``_`` are interchangeable)."""
    key = name.strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; known: {', '.join(sorted(LOSSES))}", key="loss.name")
    try:
        return LOSSES[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for loss '{name}': {exc}", key="loss") from exc
    except ConfigError:
        raise
    except ValueError as exc:  # an option's value out of range (e.g. a negative lambda)
        raise ConfigError(f"bad option value for loss '{name}': {exc}", key="loss.options") from exc
