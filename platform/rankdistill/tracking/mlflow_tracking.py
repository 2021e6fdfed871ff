"""MLflow tracking with an embedded default store.

Unless ``MLFLOW_TRACKING_URI`` (or the job's ``tracking.uri``) says otherwise, a job logs to a
sqlite database and an artifact folder under its output directory (``<output>/mlruns``), so a
fresh machine needs no server: ``mlflow ui --backend-store-uri sqlite:///<output>/mlruns/mlflow.db``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankdistill.config import dump_yaml, flatten, to_dict
from rankdistill.tracking.names import mlflow_safe_name


@dataclass
class TrackingConfig:
    """Where and under which experiment a job is tracked."""

    enabled: bool = True
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite under the output dir
    experiment: str = "rankdistill"
    run_name: str | None = None
    register_model: str | None = None  # registered-model name for jobs that produce a model


def tracking_uri(config: TrackingConfig, output_dir: str | Path) -> str:
    if config.uri:
        return config.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = Path(output_dir).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _experiment_id(mlflow, name: str, uri: str, output_dir: str | Path) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        artifact_location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another process
        return mlflow.get_experiment_by_name(name).experiment_id


class Tracker:
    """A thin handle on the active MLflow run (or a no-op when tracking is disabled)."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        import mlflow

        items = {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}
        keys = list(items)
        for i in range(0, len(keys), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params({k: items[k] for k in keys[i : i + 100]})

    def log_config(self, config: Any, name: str = "config.yaml") -> None:
        """The resolved config as flat params and as a YAML artifact."""
        if not self.active:
            return
        import mlflow

        self.log_params(flatten(to_dict(config)))
        mlflow.log_text(dump_yaml(config), name)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
        if not self.active:
            return
        import mlflow

        safe = {mlflow_safe_name(prefix + k): float(v) for k, v in metrics.items()}
        mlflow.log_metrics(safe, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        if not self.active:
            return
        import mlflow

        mlflow.log_text(json.dumps(data, indent=2, sort_keys=True), name)

    def log_figure(self, figure: Any, name: str) -> None:
        if not self.active:
            return
        import mlflow

        mlflow.log_figure(figure, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def register_model(self, model_dir: str | Path, name: str, tags: Mapping[str, Any] | None = None) -> str | None:
        """Log ``model_dir`` (a save_pretrained folder) as artifacts and register a model version."""
        if not self.active:
            return None
        return register_model(self.run_id, model_dir, name, tags)


@contextlib.contextmanager
def start_run(
    config: TrackingConfig, output_dir: str | Path, tags: Mapping[str, Any] | None = None
) -> Iterator[Tracker]:
    """Open an MLflow run (nested runs are not used: one job, one run)."""
    if not config.enabled:
        yield Tracker(None)
        return
    import mlflow

    uri = tracking_uri(config, output_dir)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; restore it afterwards so a later
    # job in this process (or a child process) does not log into this job's store
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = _experiment_id(mlflow, config.experiment, uri, output_dir)
        with mlflow.start_run(experiment_id=experiment_id, run_name=config.run_name, tags=dict(tags or {})) as run:
            yield Tracker(run.info.run_id)
    finally:
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def register_model(
    run_id: str, model_dir: str | Path, name: str, tags: Mapping[str, Any] | None = None
) -> str:
    """Upload ``model_dir`` under the run's ``model/`` artifacts and register it; returns the version.
    Tag keys follow the metric-name rule (``nDCG@10`` → ``nDCG_at_10``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.log_artifacts(run_id, str(model_dir), "model")
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    source = f"runs:/{run_id}/model"
    safe_tags = {mlflow_safe_name(k): str(v) for k, v in (tags or {}).items()}
    version = client.create_model_version(name, source, run_id=run_id, tags=safe_tags)
    return str(version.version)


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path

