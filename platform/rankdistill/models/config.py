"""The base config of every student: the backbone's own config plus the tokenizer lengths, and
the validation of architecture options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

from rankdistill.errors import ConfigError


class RerankerConfig(PretrainedConfig):
    """Base config: the backbone's own config (a dict, so checkpoints stay plain JSON) plus the
    tokenizer lengths. Subclasses add their architecture options as annotated fields
    (transformers v5 configs are dataclasses) and validate them in ``__post_init__``.

    Args:
        backbone_config: ``config.to_dict()`` of the Hugging Face encoder (or classifier).
        query_length: max query tokens (special tokens not counted); Set-Encoder paper: 32.
        passage_length: max passage tokens; Set-Encoder paper: 256.
    """

    model_type = "rankdistill-reranker"

    backbone_config: dict | None = None
    query_length: int = 32
    passage_length: int = 256

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.backbone_config, PretrainedConfig):
            self.backbone_config = self.backbone_config.to_dict()
        super().__post_init__(**kwargs)
        for key in ("query_length", "passage_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", key=key)

    def tokenizer_kwargs(self) -> dict[str, Any]:
        return {"query_length": self.query_length, "passage_length": self.passage_length}


def option_names(config_class: type[RerankerConfig]) -> set[str]:
    """The architecture options of a reranker config class (its own dataclass fields)."""
    import dataclasses

    base = {f.name for f in dataclasses.fields(PretrainedConfig)}
    return {f.name for f in dataclasses.fields(config_class)} - base - {"backbone_config"}


def validate_options(config_class: type[RerankerConfig], kwargs: Mapping[str, Any]) -> None:
    allowed = option_names(config_class)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for {config_class.__name__}; known: {sorted(allowed)}",
            key=unknown[0],
        )
