"""MLflow tracking: one home for every job's runs.

Where runs go, first match wins: the job's ``tracking.uri``; ``$MLFLOW_TRACKING_URI`` (on a
cluster: the MLflow server that ``cluster.yaml`` starts on the head, passed to jobs through the
runtime environment); else the machine's embedded store, a sqlite database and an artifact folder
under ``$RANKDISTILL_HOME`` (default ``~/.rankdistill``), shared by every job on this machine so
one MLflow UI compares them all (``make mlflow-ui``). The embedded store needs no server, and is
for one machine only: a Ray Train worker on another node cannot reach it, which
:func:`check_reachable_from_workers` turns into an error naming what to set.
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
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite under $RANKDISTILL_HOME
    experiment: str = "rankdistill"
    run_name: str | None = None  # default: what ran, e.g. "train_reranker mono nfcorpus"
    register_model: str | None = None  # registered-model name for jobs that produce a model


def rankdistill_home() -> Path:
    """``$RANKDISTILL_HOME``, else ``~/.rankdistill``: the machine's embedded MLflow store."""
    return Path(os.environ.get("RANKDISTILL_HOME") or Path.home() / ".rankdistill").expanduser().resolve()


def tracking_uri(config: TrackingConfig | None = None) -> str:
    """The tracking URI a job logs to (see the module docstring for the order)."""
    if config is not None and config.uri:
        return config.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = rankdistill_home() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def is_machine_local(uri: str) -> bool:
    """A store only this machine can open (sqlite, a plain folder), as opposed to a server."""
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def run_name_for(tags: Mapping[str, Any]) -> str | None:
    """A run name saying what ran: the job, then the student / first stage / teacher, the dataset."""
    parts = [str(tags[k]) for k in ("job", "architecture", "first_stage", "kind", "teacher", "dataset", "split")
             if tags.get(k)]
    return " ".join(parts) or None


def _experiment_id(mlflow, name: str, uri: str) -> str:
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

    def __init__(self, run_id: str | None, uri: str | None = None):
        self.run_id = run_id
        self.uri = uri or (tracking_uri() if run_id else None)

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
        """Log ``model_dir`` (a save_pretrained folder) as a pyfunc model and register a version."""
        if not self.active:
            return None
        return register_model(self.run_id, model_dir, name, tags)

    def worker_handle(self) -> dict[str, str] | None:
        """What a Ray Train worker needs to log into this run: ``{"uri", "run_id"}``."""
        return {"uri": self.uri, "run_id": self.run_id} if self.active else None


@contextlib.contextmanager
def start_run(config: TrackingConfig, tags: Mapping[str, Any] | None = None, nested: bool = False) -> Iterator[Tracker]:
    """Open an MLflow run named after what ran (``tags``); ``nested`` opens a child of the active
    run (PairDistill's iterations under the job's parent run). Tag values are sent as strings: an
    MLflow tracking server's REST store refuses anything else (the embedded sqlite store does not)."""
    if not config.enabled:
        yield Tracker(None)
        return
    import mlflow

    tags = {str(k): str(v) for k, v in (tags or {}).items()}

    if nested:
        parent = mlflow.active_run()
        if parent is None:
            raise RuntimeError("a nested run needs an active parent run (open the job's run first)")
        with mlflow.start_run(experiment_id=parent.info.experiment_id, nested=True, tags=tags,
                              run_name=run_name_for(tags)) as run:
            yield Tracker(run.info.run_id)
        return

    uri = tracking_uri(config)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; restore it afterwards so a later
    # job in this process (or a child process) does not log into this job's store
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = _experiment_id(mlflow, config.experiment, uri)
        name = config.run_name or run_name_for(tags)
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            yield Tracker(run.info.run_id, uri)
    finally:
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def register_model(
    run_id: str, model_dir: str | Path, name: str, tags: Mapping[str, Any] | None = None
) -> str:
    """Log ``model_dir`` as the run's pyfunc model (``model``; see :mod:`rankdistill.tracking.pyfunc`)
    and register it as a new version of ``name``; returns the version. Tag keys follow the
    metric-name rule (``nDCG@10`` → ``nDCG_at_10``)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from rankdistill.tracking.pyfunc import log_student

    safe_tags = {mlflow_safe_name(k): str(v) for k, v in (tags or {}).items()}
    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        with mlflow.start_run(run_id=run_id):
            info = log_student(model_dir)
    else:
        info = log_student(model_dir)
    client = MlflowClient()
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    version = client.create_model_version(name, info.model_uri, run_id=run_id, tags=safe_tags,
                                          model_id=getattr(info, "model_id", None))
    return str(version.version)


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path



def check_reachable_from_workers(uri: str) -> None:
    """Fail early when a Ray cluster of several nodes would log into a machine-local store (its
    workers would each quietly create an empty one)."""
    import ray

    from rankdistill.errors import ConfigError

    if not ray.is_initialized() or not is_machine_local(uri):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        raise ConfigError(f"MLflow store '{uri}' is on this machine only, but the Ray cluster has {len(nodes)} "
                          "nodes: set MLFLOW_TRACKING_URI (or tracking.uri) to an MLflow server, e.g. the one "
                          "cluster.yaml starts on the head (http://<head>:5000)", "tracking.uri")


def close_stale_runs(config: TrackingConfig, tags: Mapping[str, Any], status: str = "KILLED") -> list[str]:
    """Mark the RUNNING runs of ``config.experiment`` whose tags equal ``tags`` (and their nested
    child runs) as ``status``; returns their ids.

    A job killed with SIGKILL (or a lost node) never ends its MLflow runs, which then show as
    running forever in the UI. A job calls this when it starts again on the same output, before
    opening its own run: a run of the same job instance that is still RUNNING then is a dead one
    (two live runs on one output folder are not supported)."""
    if not config.enabled or not tags:
        return []
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(config)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        return []

    # tags are compared here, not in the filter string: MLflow's filter grammar has no escape for
    # quotes, and an output path may hold any character. RUNNING runs are few.
    running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=50000)
    wanted = {str(k): str(v) for k, v in tags.items()}
    stale = [r for r in running if all(r.data.tags.get(k) == v for k, v in wanted.items())]
    children_of: dict[str | None, list] = {}
    for r in running:
        children_of.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)
    closed: list[str] = []
    for run in stale:
        for child in children_of.get(run.info.run_id, []):
            client.set_terminated(child.info.run_id, status)
            closed.append(child.info.run_id)
        client.set_terminated(run.info.run_id, status)
        closed.append(run.info.run_id)
    return closed
