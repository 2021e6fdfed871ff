"""Teacher backends behind one interface: ``hf`` (transformers), ``vllm``, ``replay`` (recordings),
``reranker`` (a trained rankdistill student: duo for pairwise labels, any for pointwise),
``ensemble`` (several scorers fused per candidate list, for pointwise labels)."""

from __future__ import annotations

import logging

from rankdistill.errors import ConfigError, MissingExtraError
from rankdistill.teachers.backends.base import (
    BackendConfig,
    EnsembleMember,
    Prompt,
    TeacherBackend,
    as_prompts,
)

logger = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm", "replay", "reranker", "ensemble")


def make_backend(config: BackendConfig) -> TeacherBackend:
    """Load the configured backend. ``vllm`` without vllm installed falls back to ``fallback``
    (``hf`` by default) with a warning, so a CPU machine runs the same job."""
    if config.name == "hf":
        from rankdistill.teachers.backends.hf import HFBackend

        return HFBackend(config)
    if config.name == "replay":
        from rankdistill.teachers.backends.replay import ReplayBackend

        return ReplayBackend(config)
    if config.name == "reranker":
        from rankdistill.teachers.backends.reranker import RerankerBackend

        return RerankerBackend(config)
    if config.name == "ensemble":
        from rankdistill.teachers.backends.ensemble import EnsembleBackend

        return EnsembleBackend(config)
    if config.name == "vllm":
        from rankdistill.teachers.backends.vllm import VLLMBackend

        try:
            return VLLMBackend(config)
        except MissingExtraError as exc:
            if config.fallback in (None, "", "vllm"):
                raise
            logger.warning("%s; falling back to the '%s' backend", exc, config.fallback)
            from dataclasses import replace

            return make_backend(replace(config, name=config.fallback))
    raise ConfigError(f"unknown backend '{config.name}' (known: {', '.join(BACKENDS)})", "teacher.backend.name")


__all__ = ["BACKENDS", "BackendConfig", "EnsembleMember", "Prompt", "TeacherBackend", "as_prompts", "make_backend"]
