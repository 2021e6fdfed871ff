"""Training on Ray Train: DDP or DeepSpeed ZeRO, rank-0 MLflow logging, checkpoint and resume."""

from rankdistill.training.config import TrainingConfig
from rankdistill.training.fit import FitResult, fit

__all__ = ["FitResult", "TrainingConfig", "fit"]
