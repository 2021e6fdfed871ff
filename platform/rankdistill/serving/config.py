"""The serve app's own options (the ``args:`` of ``serve/config.yaml``), checked up front.

Deployment options (replicas, autoscaling, resources, ``max_ongoing_requests``,
``max_queued_requests``) live in the Serve config's ``deployments:`` section, where Ray reads them;
``reranker_options`` / ``gateway_options`` here serve programmatic use (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.serving.schemas import RequestError, ServeLimits
from rankdistill.serving.scoring import ScoringConfig

DEFAULT_TOKEN_ENV = "RANKDISTILL_SERVE_TOKEN"


@dataclass
class ServeAppConfig:
    """Args:
    models: model name -> local ``save_pretrained`` folder, storage URI (``s3://...``), Hugging Face
        Hub id (``org/name``, from the HF cache while the Hub is offline) or MLflow
        ``models:/NAME/VERSION`` / ``models:/NAME@ALIAS``; requests choose one with their ``model``
        field. A value may also be ``{source: ..., lazy: true}``: that model is not checked nor
        loaded at start but on its first request, and while it cannot load it answers 503 with the
        reason (every other model is loaded at start, and one that cannot load fails the deployment).
    lazy_models: the models marked ``lazy`` (filled from ``models``; the default model cannot be lazy).
    default_model: used when a request names none (default: the first of ``models``).
    model_aliases: other names clients send -> a served model (e.g. ``rerank-v3.5: minilm-mono``
        for clients with hard-coded Cohere model names).
    strict_model: an unknown ``model`` is a 404 (true) or served by ``default_model`` (false).
    tracking_uri: MLflow tracking/registry store for ``models:/`` URIs (default:
        ``$MLFLOW_TRACKING_URI``).
    batching: ``@serve.batch`` across requests (off: one request per forward, for comparison).
    batch_wait_timeout_s: how long a batch waits for more requests.
    ready_cache_s: ``/healthz`` / ``/readyz`` / ``/health`` score on the default model at most once
        per this many seconds and answer from the last result meanwhile (probes stay cheap under load).
    scoring: :class:`ScoringConfig` (token budget, dtype, chunking).
    limits: :class:`ServeLimits` (documents, characters, body size).
    auth_token_env: environment variable holding the bearer token; auth is on when it is set.
    retriever: first stage of ``/search`` (e.g. ``{kind: bm25, corpus: path}``), or none.
    reranker_options / gateway_options / retriever_options: ``Deployment.options(...)`` overrides.
    """

    models: dict[str, str] = field(default_factory=dict)
    default_model: str | None = None
    lazy_models: list[str] = field(default_factory=list)
    model_aliases: dict[str, str] = field(default_factory=dict)
    strict_model: bool = True
    tracking_uri: str | None = None
    batching: bool = True
    batch_wait_timeout_s: float = 0.005
    ready_cache_s: float = 2.0
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
        if self.ready_cache_s < 0:
            raise ConfigError("must be >= 0", key="ready_cache_s")
        for name in self.lazy_models:
            if name not in self.models:
                raise ConfigError(f"'{name}' is not one of models {sorted(self.models)}", key="lazy_models")
        if self.default_model in self.lazy_models:
            raise ConfigError("the default model is loaded at start (readiness scores on it); it cannot be lazy",
                              key=f"models.{self.default_model}.lazy")
        for alias, target in self.model_aliases.items():
            if target not in self.models:
                raise ConfigError(f"'{alias}' maps to '{target}', which is not one of models {sorted(self.models)}",
                                  key=f"model_aliases.{alias}")
        for key in ("max_request_tokens", "max_pairs"):
            if getattr(self.limits, key) < 1:
                raise ConfigError("must be >= 1", key=f"limits.{key}")
        if self.limits.request_timeout_s <= 0:
            raise ConfigError("must be > 0", key="limits.request_timeout_s")

    def resolve_model(self, name: str | None) -> str:
        """The served model for a request's ``model`` (absent: the default; an alias: its target;
        unknown: 404, or the default model when ``strict_model`` is off)."""
        if name is None:
            return str(self.default_model)
        if name in self.models:
            return name
        if name in self.model_aliases:
            return self.model_aliases[name]
        if not self.strict_model:
            return str(self.default_model)
        aliases = f", aliases: {sorted(self.model_aliases)}" if self.model_aliases else ""
        raise RequestError(404, f"model: unknown model {name!r}; available: {sorted(self.models)}{aliases}")

    def check_model_sources(self, base: str | Path | None = None) -> ServeAppConfig:
        """Resolve local model folders against ``base`` (default: the working directory) to absolute
        paths, and fail now, naming the model and the path, when one is not a saved model folder
        with weights. A Hub id (``org/name`` that is no local path) is looked up in the Hugging Face
        cache (downloaded while the Hub is online; offline and not cached: an error naming the id)
        and stays a Hub id. Lazy models are only made absolute; URIs (``models:/``, ``s3://``, ...)
        are left to the loader (the replicas load every non-lazy model at start and fail naming it)."""
        from rankdistill.model_source import hub_folder, is_hub_id
        from rankdistill.models.registry import check_model_folder

        root = Path(base) if base is not None else Path.cwd()
        for name, source in list(self.models.items()):
            if "://" in source or source.startswith("models:/"):
                continue
            key = f"models.{name}"
            path = (root / source).resolve()
            if not path.exists() and is_hub_id(source) and not Path(source).is_absolute():
                if name not in self.lazy_models:
                    check_model_folder(hub_folder(source, key), key)
                continue
            if name not in self.lazy_models:
                if not (path / "config.json").is_file():
                    what = "does not exist" if not path.exists() else "is not a saved model folder (no config.json)"
                    raise ConfigError(f"model folder '{path}' {what} (relative paths are read from '{root}'; "
                                      "`make demo` writes outputs/train_reranker-mono/model)", key=key)
                check_model_folder(path, key)
            self.models[name] = str(path)
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | ServeAppConfig) -> ServeAppConfig:
        if isinstance(values, ServeAppConfig):
            return values
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}", key="args")
        values = dict(values)
        models, lazy = {}, list(values.get("lazy_models") or [])
        for name, value in dict(values.get("models") or {}).items():
            if isinstance(value, Mapping):
                extra = sorted(set(value) - {"source", "lazy"})
                if extra or "source" not in value:
                    raise ConfigError(f"expected a source or {{source: ..., lazy: true|false}}, got keys {sorted(value)}",
                                      key=f"models.{name}")
                if not isinstance(value.get("lazy", False), bool):
                    raise ConfigError(f"must be true or false, got {value['lazy']!r}", key=f"models.{name}.lazy")
                if value.get("lazy") and str(name) not in lazy:
                    lazy.append(str(name))
                value = value["source"]
            models[str(name)] = str(value)
        values["models"] = models
        values["lazy_models"] = [str(x) for x in lazy]
        values["model_aliases"] = {str(k): str(v) for k, v in dict(values.get("model_aliases") or {}).items()}
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


def token_sha256(token: str | None) -> str | None:
    """The bearer token's SHA-256 (hex), the only form the app keeps; None when auth is off."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest() if token else None
