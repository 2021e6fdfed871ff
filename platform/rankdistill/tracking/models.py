"""Loading trained models by MLflow model URI or local folder.

``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` (MLflow model registry) and ``runs:/RUN_ID/PATH``
resolve to a local folder with :func:`mlflow.artifacts.download_artifacts`; anything else must be a
local ``save_pretrained`` folder, a storage URI or a Hugging Face Hub id. :func:`tracking.mlflow_tracking.register_model` logs a student
as a pyfunc model whose ``student`` artifact is its ``save_pretrained`` folder
(:func:`rankdistill.tracking.pyfunc.student_folder` finds it in the download).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rankdistill.errors import ConfigError

#: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (NAME may contain '/'-free registry names)
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[A-Za-z0-9_\-]+))$")


def is_model_uri(source: str | os.PathLike) -> bool:
    """True for ``models:/...`` and ``runs:/...`` URIs."""
    return isinstance(source, str) and source.startswith(("models:/", "runs:/"))


@contextmanager
def _scoped_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for the block, then restored with the environment.

    mlflow 3.17's ``models:/`` download builds a default ``MlflowClient()`` inside (its prompt check),
    which ignores the URIs passed to ``download_artifacts`` and would open MLflow's own default store,
    creating ``./mlflow.db`` in the working directory."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def resolve_model_source(
    source: str | os.PathLike,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    dst_path: str | os.PathLike | None = None,
) -> Path:
    """A local folder holding the model of ``source`` (a folder, or an MLflow model URI).

    Args:
        source: local folder, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/ID/PATH``.
        tracking_uri / registry_uri: MLflow stores (default: the platform's own store,
            ``tracking.tracking_uri()``: ``$MLFLOW_TRACKING_URI``, else the machine's embedded store under
            ``$RANKDISTILL_HOME``; never MLflow's own default, a ``mlflow.db`` in the working directory).
        dst_path: where to download (default: a fresh temporary folder managed by MLflow).

    Raises:
        ConfigError: malformed URI, unknown model/version/alias, or a missing local folder.
    """
    if not is_model_uri(source):
        from rankdistill.model_source import hub_folder, is_hub_id

        path = Path(source)
        if not path.is_dir() and is_hub_id(source):
            return hub_folder(str(source), "model")
        if not path.is_dir():
            raise ConfigError(f"model folder '{path}' does not exist (or use models:/NAME/VERSION or a Hub id)",
                              key="model")
        return path
    source = str(source)
    if source.startswith("models:/") and not MODEL_URI.match(source):
        raise ConfigError(
            f"'{source}' is not a model registry URI; expected models:/NAME/VERSION or models:/NAME@ALIAS",
            key="model",
        )
    import mlflow
    from mlflow.exceptions import MlflowException

    from rankdistill.tracking.mlflow_tracking import tracking_uri as default_tracking_uri

    tracking_uri = tracking_uri or default_tracking_uri()
    try:
        with _scoped_tracking_uri(tracking_uri):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source,
                tracking_uri=tracking_uri,
                registry_uri=registry_uri or tracking_uri,
                dst_path=os.fspath(dst_path) if dst_path is not None else None,
            )
    except MlflowException as exc:
        raise ConfigError(f"cannot resolve '{source}': {exc.message}", key="model") from exc
    from rankdistill.tracking.pyfunc import student_folder

    path = Path(local)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return path / "model"  # a plain folder logged under model/
    try:
        return student_folder(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"'{source}' holds no rankdistill student: {exc}", key="model") from exc


def load_reranker_from(source: str | os.PathLike, tracking_uri: str | None = None, **kwargs):
    """``load_reranker`` on a local folder, a storage URI (``s3://...``, copied once per node), a
    Hugging Face Hub id or an MLflow model URI."""
    from rankdistill.models import load_reranker
    from rankdistill.storage import is_uri

    if is_uri(source) and not is_model_uri(source):
        return load_reranker(source, **kwargs)
    return load_reranker(resolve_model_source(source, tracking_uri=tracking_uri), **kwargs)
