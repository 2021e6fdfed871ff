"""The contract every reranker student follows, and the code they share.

The training loop and the Ray Serve app use exactly this, nothing more:

1. **Build / load**::

       model = MonoCrossEncoder.from_backbone(path, **config)   # fresh student from an encoder
       model = MonoCrossEncoder.from_pretrained(path)           # trained student (tokenizer included)
       model.save_pretrained(path)                              # safetensors + config.json + tokenizer

   ``rankdistill.models.load_reranker(path)`` picks the class from ``config.json``.

2. **Tokenize**: ``batch = model.tokenizer(queries, passages)`` with ``queries: list[str]`` (B) and
   ``passages: list[list[str]]`` (B lists of up to k passages). Lists shorter than the longest one
   are padded; ``batch["passage_mask"]`` (``bool [B, k]``) is True for real passages. The other
   keys (``input_ids``, ``attention_mask``, ``token_type_ids`` ... each ``[B, k, L]``) depend on the
   architecture and are documented on its tokenizer class. Every value is a tensor.

3. **Forward**: ``output = model(**batch)`` returns a :class:`RerankerOutput` (or a subclass with
   auxiliary fields) whose ``scores`` is ``float [B, k]``, **-inf at padded positions**, and whose
   ``mask`` is the passage mask. Higher score = more relevant.

4. **Loss**: ``loss = model.compute_loss(output, targets, loss_fn, **extra)`` applies a loss from
   ``rankdistill.losses`` to every score tensor the architecture trains (CELI: ``s_m`` and
   ``s_l``; the others: ``scores``) and sums; the Set-Encoder also routes its duplicate logits to a
   duplicate-aware loss. ``extra`` goes to the loss (e.g. ``clusters=`` for NA-RankNet).

5. **Inference**: ``model.score(query, passages, batch_size=...) -> list[float]``, one float per
   passage in input order, in eval mode without gradients. Pointwise models (mono, CELI) score
   length-sorted chunks of ``batch_size`` passages; listwise models see the whole list at once and
   use ``batch_size`` only for speed and memory (Set-Encoder: sequences per length bucket inside
   the one listwise pass; ListConRanker: passages per embedding chunk), never changing the scores.
   The duo model's ``score`` aggregates all ordered pairs (``pair_probabilities`` is its teacher
   entry point).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import load_sequence_classifier, quiet_transformers
from rankdistill.models.config import RerankerConfig, validate_options
from rankdistill.models.tokenizers import CrossEncoderTokenizer, RerankerTokenizer

NEG_INF = float("-inf")
logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


@dataclass
class RerankerOutput:
    """What ``forward`` returns.

    Attributes:
        scores: ``float [B, k]`` relevance scores, ``-inf`` where ``mask`` is False.
        mask: ``bool [B, k]``, True for real (non-padding) passages.
    """

    scores: Tensor
    mask: Tensor

    def loss_scores(self) -> list[Tensor]:
        """The score tensors the training loss is applied to (summed). Default: ``[scores]``."""
        return [self.scores]


def as_fp32(value: Any) -> Any:
    """A bf16 / fp16 tensor cast to fp32 (differentiably); anything else unchanged."""
    if isinstance(value, Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    return value


def fp32_loss(loss_fn: nn.Module, scores: Tensor, targets: Tensor, mask: Tensor | None, **extra: Any) -> Tensor:
    """``loss_fn(scores, targets, mask, **extra)`` with every half-precision tensor cast to fp32
    first and autocast off, so a bf16 run's scores (a ColBERT score near 25 moves in steps of
    0.125 in bf16) and the loss arithmetic keep fp32 resolution."""
    device_type = scores.device.type if scores.device.type in ("cpu", "cuda") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        return loss_fn(as_fp32(scores), as_fp32(targets), mask, **{k: as_fp32(v) for k, v in extra.items()})


# --------------------------------------------------------------------------------------------
# the model base
# --------------------------------------------------------------------------------------------


class Reranker(PreTrainedModel):
    """Base class of the reranker students (see the module docstring for the contract).

    Subclasses set ``config_class``, ``tokenizer_class``, ``registry_name`` and implement
    ``__init__(config, backbone=None)``, ``forward(**batch)``, ``from_backbone`` and
    ``_make_tokenizer``.
    """

    config_class = RerankerConfig
    base_model_prefix = "reranker"
    registry_name: ClassVar[str] = ""
    #: listwise models score the whole passage list in one forward pass
    listwise: ClassVar[bool] = False
    #: default ``batch_size`` of :meth:`score`
    default_batch_size: ClassVar[int] = 32
    #: what :meth:`inference` runs under (resolved: fp32 | bf16 | fp16); set by :meth:`use_precision`
    inference_precision: str = "fp32"

    def __init__(self, config: RerankerConfig, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.tokenizer: RerankerTokenizer | None = None

    # ---- tokenizer --------------------------------------------------------------------------

    def _make_tokenizer(self, hf_tokenizer: Any) -> RerankerTokenizer:
        return CrossEncoderTokenizer(hf_tokenizer, **self.config.tokenizer_kwargs())

    def attach_tokenizer(self, hf_tokenizer: Any) -> RerankerTokenizer:
        """Wrap a Hugging Face tokenizer as this model's collator and keep it on ``self.tokenizer``."""
        self.tokenizer = self._make_tokenizer(hf_tokenizer)
        return self.tokenizer

    @staticmethod
    def _load_hf_tokenizer(path: str | os.PathLike) -> Any:
        from transformers import AutoTokenizer

        with quiet_transformers():
            return AutoTokenizer.from_pretrained(os.fspath(path))

    def _require_tokenizer(self) -> RerankerTokenizer:
        if self.tokenizer is None:
            raise ConfigError(
                "this model has no tokenizer; call model.attach_tokenizer(hf_tokenizer) "
                "or load it with from_pretrained / from_backbone",
                key="tokenizer",
            )
        return self.tokenizer

    # ---- save / load ------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Hugging Face ``save_pretrained`` plus the tokenizer in the same directory."""
        with quiet_transformers():
            super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a student saved with :meth:`save_pretrained` (weights, config and tokenizer)."""
        with quiet_transformers():
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = os.fspath(pretrained_model_name_or_path)
        if any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
            model.attach_tokenizer(cls._load_hf_tokenizer(path))
        model.eval()
        return model

    @classmethod
    def from_backbone(cls, path: str | os.PathLike, **config: Any):
        """A fresh student on a pre-trained encoder in a local directory (its tokenizer included);
        ``config`` sets architecture options (unknown names raise ``ConfigError``)."""
        return cls.from_backbone_model(cls._load_backbone(path), cls._load_hf_tokenizer(path), **config)

    @classmethod
    def from_backbone_model(cls, backbone: nn.Module, hf_tokenizer: Any, **config: Any):
        """Like :meth:`from_backbone` with an already built Hugging Face model and tokenizer
        (used by the tests with tiny random models)."""
        model = cls(cls._config_for(backbone, config), backbone=backbone)
        model.attach_tokenizer(hf_tokenizer)
        model.check_lengths()
        return model

    def max_sequence_tokens(self) -> int:
        """Upper bound on one encoder input (special tokens included); subclasses adjust it."""
        return self.config.query_length + self.config.passage_length + 3

    def check_lengths(self) -> None:
        """``ConfigError`` when query_length + passage_length cannot fit the backbone's positions."""
        limit = (self.config.backbone_config or {}).get("max_position_embeddings")
        if limit is not None and self.max_sequence_tokens() > limit:
            raise ConfigError(
                f"query_length {self.config.query_length} + passage_length {self.config.passage_length} "
                f"gives sequences of up to {self.max_sequence_tokens()} tokens, more than the backbone's "
                f"{limit} positions",
                key="passage_length",
            )

    @classmethod
    def _load_backbone(cls, path: str | os.PathLike) -> nn.Module:
        return load_sequence_classifier(path)

    @classmethod
    def _config_for(cls, backbone: nn.Module, config: Mapping[str, Any]) -> RerankerConfig:
        validate_options(cls.config_class, config)
        return cls.config_class(backbone_config=backbone.config.to_dict(), **config)

    # ---- training ---------------------------------------------------------------------------

    def compute_loss(self, output: RerankerOutput, targets: Tensor, loss_fn: nn.Module, **extra: Any) -> Tensor:
        """``sum(loss_fn(s, targets, output.mask, **extra) for s in output.loss_scores())``, in fp32
        (:func:`fp32_loss`)."""
        total = None
        for scores in output.loss_scores():
            value = fp32_loss(loss_fn, scores, targets, output.mask, **extra)
            total = value if total is None else total + value
        return total

    def backbones(self) -> list[PreTrainedModel]:
        """The Hugging Face models inside this student (its encoder(s)), outermost only."""
        found: list[PreTrainedModel] = []
        for module in self.modules():
            if module is self or not isinstance(module, PreTrainedModel):
                continue
            if not any(module is not outer and any(m is module for m in outer.modules()) for outer in found):
                found.append(module)
        return found

    def enable_gradient_checkpointing(self) -> list[str]:
        """``training.gradient_checkpointing``: every backbone's own activation checkpointing
        (transformers' ``activation_checkpointing_enable`` / ``gradient_checkpointing_enable``,
        non-reentrant ``torch.utils.checkpoint``): in training, each encoder layer keeps only its
        input and recomputes the rest in the backward pass (one more forward's compute; the same
        gradients, dropout included, as torch restores the RNG state). The Set-Encoder, which runs
        its own layer loop over the backbone's layers, checkpoints each layer of that loop when its
        backbone is switched on. Returns the backbones' class names; a backbone that cannot
        checkpoint is a ``ConfigError``."""
        names = []
        for backbone in self.backbones():
            if not backbone.supports_gradient_checkpointing:
                raise ConfigError(f"the backbone {type(backbone).__name__} does not support activation "
                                  "checkpointing", key="training.gradient_checkpointing")
            enable = getattr(backbone, "activation_checkpointing_enable", None)
            if enable is not None:  # transformers >= 5 (gradient_checkpointing_enable is its deprecated alias)
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:  # pragma: no cover - transformers 4
                backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            names.append(type(backbone).__name__)
        if not names:
            raise ConfigError(f"{type(self).__name__} has no Hugging Face backbone to checkpoint",
                              key="training.gradient_checkpointing")
        return names

    @property
    def checkpoints_activations(self) -> bool:
        """Whether a backbone checkpoints its layers (see :meth:`enable_gradient_checkpointing`)."""
        return any(getattr(m, "gradient_checkpointing", False) is True for b in self.backbones() for m in b.modules())

    @property
    def weights_precision(self) -> str:
        """The real precision of the floating-point weights (``fp32`` | ``bf16`` | ``fp16``; the
        narrowest one when they are mixed): what a loaded student holds, whatever was configured."""
        dtypes = {p.dtype for p in self.parameters() if p.is_floating_point()}
        for dtype, name in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
            if dtype in dtypes:
                return name
        return "fp32"

    # ---- inference --------------------------------------------------------------------------

    def _batch_to_device(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        device = self.device
        return {k: v.to(device) for k, v in batch.items()}

    def score(self, query: str, passages: Sequence[str], batch_size: int | None = None) -> list[float]:
        """Relevance score of every passage for ``query`` (input order), in eval mode, no grad."""
        passages = list(passages)
        if not passages:
            return []
        tokenizer = self._require_tokenizer()
        with self.inference():
            return self._score(tokenizer, query, passages, batch_size or self.default_batch_size)

    def use_precision(self, precision: str) -> str:
        """Run inference (``score``, ``encode_queries`` / ``encode_passages``,
        ``pair_probabilities``) under ``precision``: ``fp32`` | ``bf16`` | ``fp16`` | ``auto``
        (:mod:`rankdistill.precision`; ``auto`` is resolved for the device the model is on now, so
        move it first). Returns the resolved precision: the weights' own (:attr:`weights_precision`)
        when they are bf16 / fp16, since those compute in their dtype (a warning says so). Scores and
        embeddings come back fp32."""
        from rankdistill.precision import check_precision, has_bf16_unit, resolve_precision

        check_precision(precision, "precision")
        resolved = resolve_precision(precision, has_bf16_unit(self.device.type))
        weights = self.weights_precision
        if weights != "fp32" and resolved != weights:
            # half-precision weights compute in their own dtype whatever autocast asks: say so
            logger.warning("%s holds %s weights: it runs in %s, not the %s asked for (precision: %s); load or "
                           "save it in fp32 for fp32 scores", type(self).__name__, weights, weights, resolved,
                           precision)
            resolved = weights
        self.inference_precision = resolved
        return self.inference_precision

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode, no autograd and the model's ``inference_precision`` (autocast) for the block;
        the previous train/eval mode is restored."""
        from rankdistill.precision import autocast

        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), autocast(self.inference_precision, self.device.type):
                yield
        finally:
            self.train(was_training)

    def _score(self, tokenizer: RerankerTokenizer, query: str, passages: list[str], batch_size: int) -> list[float]:
        batch = tokenizer([query], [passages])
        if self.listwise:
            out = self(**self._batch_to_device(batch))
            return out.scores[0].float().cpu().tolist()
        # pointwise: chunks of passages sorted by token length keep the padding small
        lengths = batch["attention_mask"][0].reshape(len(passages), -1).sum(-1)
        order = torch.argsort(lengths, descending=True, stable=True)
        scores = torch.empty(len(passages))
        for start in range(0, len(passages), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx[0]])
            chunk = {
                key: value[:, idx, :width] if value.dim() == 3 else value[:, idx] for key, value in batch.items()
            }
            scores[idx] = self(**self._batch_to_device(chunk)).scores[0].float().cpu()
        return scores.tolist()


def scatter_scores(flat: Tensor, passage_mask: Tensor) -> Tensor:
    """Put per-passage values of the real passages (row-major) into a ``[B, k]`` tensor, -inf elsewhere."""
    out = flat.new_full(passage_mask.shape, NEG_INF)
    return out.masked_scatter(passage_mask, flat)


def flatten_valid(batch: Mapping[str, Tensor], passage_mask: Tensor, keys: Sequence[str]) -> dict[str, Tensor]:
    """``[B, k, L]`` tensors -> ``[n_valid, L]`` rows of the real passages."""
    flat_mask = passage_mask.reshape(-1)
    out = {}
    for key in keys:
        value = batch.get(key)
        if value is not None:
            out[key] = value.reshape(-1, value.shape[-1])[flat_mask]
    return out
