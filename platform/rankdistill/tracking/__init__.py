"""MLflow tracking: embedded default store, config logging, MLflow-safe metric names, registry."""

from rankdistill.tracking.mlflow_tracking import (
    Tracker,
    TrackingConfig,
    close_stale_runs,
    register_model,
    start_run,
    tracking_uri,
)
from rankdistill.tracking.names import mlflow_safe_name

__all__ = ["Tracker", "TrackingConfig", "close_stale_runs", "mlflow_safe_name", "register_model", "start_run", "tracking_uri"]
