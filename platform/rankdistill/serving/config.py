"""The serve app's own options (the ``args:`` of ``serve/config.yaml``), checked up front.

Deployment options (replicas, autoscaling, resources, ``max_ongoing_requests``,
``max_queued_requests``) live in the Serve config's ``deployments:`` section, where Ray reads them;
``reranker_options`` / ``gateway_options`` here serve programmatic use (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.serving.schemas import ServeLimits
from rankdistill.serving.scoring import ScoringConfig

DEFAULT_TOKEN_ENV = "RANKDISTILL_SERVE_TOKEN"


@dataclass
class ServeAppConfig:
    """Args:
    models: model name -> local ``save_pretrained`` folder or MLflow ``models:/NAME/VERSION`` /
        ``models:/NAME@ALIAS``; requests choose one with their ``model`` field.
    default_model: used when a request names none (default: the first of ``models``).
    tracking_uri: MLflow tracking/registry store for ``models:/`` URIs (default:
        ``$MLFLOW_TRACKING_URI``).
    batching: ``@serve.batch`` across requests (off: one request per forward, for comparison).
    batch_wait_timeout_s: how long a batch waits for more requests.
    scoring: :class:`ScoringConfig` (token budget, dtype, chunking).
    limits: :class:`ServeLimits` (documents, characters, body size).
    auth_token_env: environment variable holding the bearer token; auth is on when it is set.
    retriever: first stage of ``/search`` (e.g. ``{kind: bm25, corpus: path}``), or none.
    reranker_options / gateway_options / retriever_options: ``Deployment.options(...)`` overrides.
    """

    models: dict[str, str] = field(default_factory=dict)
    default_model: str | None = None
    tracking_uri: str | None = None
    batching: bool = True
    batch_wait_timeout_s: float = 0.005
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    limits: ServeLimits = field(default_factory=ServeLimits)
    auth_token_env: str = DEFAULT_TOKEN_ENV
    retriever: dict[str, Any] | None = None
    reranker_options: dict[str, Any] = field(default_factory=dict)
    gateway_options: dict[str, Any] = field(default_factory=dict)
    retriever_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("at least one model is needed (name: folder or models:/ URI)", key="models")
        if self.default_model is None:
            self.default_model = next(iter(self.models))
        if self.default_model not in self.models:
            raise ConfigError(f"'{self.default_model}' is not one of models {sorted(self.models)}", key="default_model")
        if self.batch_wait_timeout_s < 0:
            raise ConfigError("must be >= 0", key="batch_wait_timeout_s")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | ServeAppConfig) -> ServeAppConfig:
        if isinstance(values, ServeAppConfig):
            return values
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}", key="args")
        values = dict(values)
        values["models"] = {str(k): str(v) for k, v in dict(values.get("models") or {}).items()}
        for key, sub in (("scoring", ScoringConfig), ("limits", ServeLimits)):
            raw = values.get(key) or {}
            if not isinstance(raw, sub):
                names = {f.name for f in fields(sub)}
                bad = sorted(set(raw) - names)
                if bad:
                    raise ConfigError(f"unknown option(s) {bad}; known: {sorted(names)}", key=key)
                values[key] = sub(**raw)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
