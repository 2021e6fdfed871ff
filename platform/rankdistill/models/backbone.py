"""Hugging Face backbone helpers shared by the student rerankers.

Every cross-encoder student keeps a stock ``AutoModelForSequenceClassification`` (``num_labels=1``)
inside it, so its weights stay named and shaped exactly like a Hugging Face cross-encoder
checkpoint. This module knows the few architecture-specific facts the students need:

- :func:`load_sequence_classifier` / :func:`sequence_classifier_from_config` build that model;
- :func:`encode` runs it and returns the final hidden states *and* the classification logit
  (CELI needs both; one encoder pass);
- :class:`EncoderParts` exposes the embedding module, the transformer layers and the head, so the
  Set-Encoder can run its own layer loop with the very same weights (BERT and ELECTRA).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rankdistill.errors import ConfigError

#: backbones whose layer structure :class:`EncoderParts` understands (BERT-style post-LN layers)
LAYER_LOOP_MODEL_TYPES = ("bert", "electra")


def config_from_dict(config: Mapping[str, Any]):
    """Rebuild a Hugging Face ``PretrainedConfig`` from its ``to_dict()`` (as stored in our configs)."""
    from transformers import AutoConfig

    values = dict(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ConfigError("the backbone config has no 'model_type'", key="backbone_config.model_type")
    return AutoConfig.for_model(model_type, **values)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration of the block."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _check_path(path: str | os.PathLike) -> str:
    """A local folder of the backbone (a storage URI is copied once per node, a Hugging Face Hub id
    read from the Hugging Face cache; see :mod:`rankdistill.model_source`)."""
    from rankdistill.model_source import local_model_folder

    return str(local_model_folder(path, "backbone"))


def load_sequence_classifier(path: str | os.PathLike, **config_overrides: Any) -> nn.Module:
    """``AutoModelForSequenceClassification`` with one label from a local directory.

    A cross-encoder checkpoint keeps its trained head; a plain encoder (e.g. all-MiniLM-L6-v2)
    gets a freshly initialised head.
    """
    from transformers import AutoModelForSequenceClassification

    path = _check_path(path)
    with quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **config_overrides)


def load_trained_sequence_classifier(path: str | os.PathLike) -> nn.Module:
    """Like :func:`load_sequence_classifier`, for scoring with it: a checkpoint whose
    classification head is missing from (or shaped unlike) its weights would score with a random
    head, so it is a :class:`DataFormatError` naming the folder and the keys."""
    from transformers import AutoModelForSequenceClassification

    from rankdistill.errors import DataFormatError

    path = _check_path(path)
    with quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                                         output_loading_info=True)
    missing = sorted(set(info.get("missing_keys") or ()))
    mismatched = sorted(str(m[0] if isinstance(m, tuple) else m) for m in info.get("mismatched_keys") or ())
    if missing or mismatched:
        what = ", ".join(missing + [f"{k} (shape)" for k in mismatched])
        raise DataFormatError(f"not a trained cross-encoder: its weights lack {what}, so it would score with a "
                              "randomly initialised head (an encoder is a student's backbone, not a teacher)", path)
    return model


def sequence_classifier_from_config(config: Mapping[str, Any] | Any) -> nn.Module:
    """A randomly initialised ``AutoModelForSequenceClassification`` for a backbone config."""
    from transformers import AutoModelForSequenceClassification

    hf_config = config_from_dict(config) if isinstance(config, Mapping) else config
    hf_config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(hf_config)


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """``AutoModel`` (no head, no BERT pooler: embedding models pool the hidden states themselves,
    and an unused pooler would leave parameters without gradients under DDP) from a directory."""
    from transformers import AutoModel

    path = _check_path(path)
    with quiet_transformers():
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False)
        except TypeError:  # architectures without a pooler option
            return AutoModel.from_pretrained(path)


def encoder_from_config(config: Mapping[str, Any] | Any) -> nn.Module:
    from transformers import AutoModel

    hf_config = config_from_dict(config) if isinstance(config, Mapping) else config
    try:
        return AutoModel.from_config(hf_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(hf_config)


def classification_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``hidden_states [N, L, D] -> logits [N, 1]`` of a sequence classifier, for known heads.

    BERT: dropout(pooler(h[:, 0])) -> linear. ELECTRA / RoBERTa / DeBERTa-style heads take the full
    sequence and read the first token themselves.
    """
    model_type = model.config.model_type
    if model_type == "bert":
        pooler = model.bert.pooler

        def head(hidden: torch.Tensor) -> torch.Tensor:
            return model.classifier(model.dropout(pooler(hidden)))

        return head
    if model_type in ("electra", "roberta", "xlm-roberta", "camembert"):
        return model.classifier
    raise ConfigError(
        f"no known classification head for backbone type '{model_type}'", key="backbone_config.model_type"
    )


def encode(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a sequence classifier once: ``(last_hidden_state [N, L, D], logits [N])``."""
    base = getattr(model, model.base_model_prefix, None)
    try:
        head = classification_head(model)
    except ConfigError:
        head = None
    if base is not None and head is not None:
        hidden = base(**inputs, return_dict=True).last_hidden_state
        return hidden, head(hidden).squeeze(-1)
    out = model(**inputs, output_hidden_states=True, return_dict=True)
    return out.hidden_states[-1], out.logits.squeeze(-1)


@dataclass
class EncoderParts:
    """The pieces of a BERT-style sequence classifier, for a hand-written layer loop.

    ``embed(input_ids, token_type_ids, position_ids=None)`` returns the input hidden states
    (default positions are taken per row, i.e. they restart at 0 in every sequence); ``layers`` are the HF layer modules whose
    ``attention.self.{query,key,value}``, ``attention.output`` (dense, dropout, LayerNorm),
    ``intermediate`` and ``output`` sub-modules are reused as they are; ``head`` maps the final
    hidden states to the relevance logit.
    """

    embed: Callable[..., torch.Tensor]
    layers: nn.ModuleList
    head: Callable[[torch.Tensor], torch.Tensor]
    num_heads: int
    head_dim: int

    @classmethod
    def of(cls, model: nn.Module) -> EncoderParts:
        model_type = model.config.model_type
        if model_type not in LAYER_LOOP_MODEL_TYPES:
            raise ConfigError(
                f"backbone type '{model_type}' is not supported here; supported: {', '.join(LAYER_LOOP_MODEL_TYPES)}",
                key="backbone_config.model_type",
            )
        base = getattr(model, model.base_model_prefix)
        embeddings = base.embeddings
        project = getattr(base, "embeddings_project", None)  # ELECTRA with embedding_size != hidden_size

        def embed(
            input_ids: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
            position_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            hidden = embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
            return project(hidden) if project is not None else hidden

        first = base.encoder.layer[0].attention.self
        return cls(
            embed=embed,
            layers=base.encoder.layer,
            head=classification_head(model),
            num_heads=first.num_attention_heads,
            head_dim=first.attention_head_size,
        )
