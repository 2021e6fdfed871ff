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
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import load_sequence_classifier, quiet_transformers

NEG_INF = float("-inf")


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


# --------------------------------------------------------------------------------------------
# tokenizers / collators
# --------------------------------------------------------------------------------------------


def _pad(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> Tensor:
    width = max((len(r) for r in rows), default=0) if length is None else length
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def _check_lists(queries: Sequence[str], passages: Sequence[Sequence[str]]) -> None:
    if isinstance(queries, str) or isinstance(passages, str):
        raise TypeError("queries must be a list of str and passages a list of lists of str")
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passage lists")
    for i, plist in enumerate(passages):
        if isinstance(plist, str):
            raise TypeError(f"passages[{i}] is a str; expected a list of passages for query {i}")


class RerankerTokenizer:
    """Base of the collators: wraps a Hugging Face *fast* tokenizer.

    It truncates query and passage separately (``query_length`` / ``passage_length`` tokens,
    special tokens not counted) and lets the tokenizer's own post-processor add the special
    tokens, so any BERT/ELECTRA/RoBERTa-style tokenizer works. ``save_pretrained`` saves the
    wrapped tokenizer; the lengths live in the model config.
    """

    def __init__(self, tokenizer: Any, query_length: int = 32, passage_length: int = 256):
        if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
            raise ConfigError("a fast (Rust-backed) Hugging Face tokenizer is required", key="tokenizer")
        if query_length < 1 or passage_length < 1:
            raise ConfigError("query_length and passage_length must be >= 1", key="query_length")
        self.tokenizer = tokenizer
        self.query_length = int(query_length)
        self.passage_length = int(passage_length)
        self._refresh_backend()

    def _refresh_backend(self) -> None:
        from tokenizers import Tokenizer

        # a private copy: the saved tokenizer.json may carry padding/truncation settings
        backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        self._backend = backend
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.uses_token_type_ids = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())

    def __len__(self) -> int:
        return len(self.tokenizer)

    def add_special_token(self, token: str) -> int:
        """Add a special token (e.g. ``[INT]``) if absent and return its id."""
        if token not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": [token]})
            self._refresh_backend()
        return self.tokenizer.convert_tokens_to_ids(token)

    def encode_texts(self, texts: Sequence[str], max_tokens: int):
        """Encodings without special tokens, each cut to ``max_tokens``."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        for enc in encodings:
            if len(enc.ids) > max_tokens:
                enc.truncate(max_tokens)
        return encodings

    def post_process(self, first, second=None):
        """Add the tokenizer's special tokens around one text or a pair of texts."""
        return self._backend.post_process(first, second, add_special_tokens=True)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(os.fspath(directory))

    def __call__(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        raise NotImplementedError


class CrossEncoderTokenizer(RerankerTokenizer):
    """``[CLS] q [SEP] p [SEP]`` for every (query, passage), the k dimension padded.

    Batch keys (B queries, k = longest passage list, L = longest sequence):

    - ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer uses them):
      ``long [B, k, L]``. Padded passage slots hold the sequence of an empty passage.
    - ``passage_mask``: ``bool [B, k]``.
    - with ``segment_masks=True`` (CELI): ``query_token_mask`` and ``passage_token_mask``,
      ``bool [B, k, L]``, True on the query's / passage's own tokens (special and padding tokens
      excluded).

    With ``interaction_token`` (Set-Encoder) that token is inserted right after the first
    special token: ``[CLS] [INT] q [SEP] p [SEP]``, with the first token's type id (unless the
    tokenizer's post-processor already put it there, as lightning-ir's Set-Encoder tokenizer does).
    """

    def __init__(
        self,
        tokenizer: Any,
        query_length: int = 32,
        passage_length: int = 256,
        interaction_token: str | None = None,
        segment_masks: bool = False,
    ):
        super().__init__(tokenizer, query_length, passage_length)
        self.interaction_token = interaction_token
        self.interaction_token_id = self.add_special_token(interaction_token) if interaction_token else None
        self.segment_masks = segment_masks

    def __call__(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        _check_lists(queries, passages)
        batch_size = len(queries)
        k = max((len(p) for p in passages), default=0)
        if batch_size == 0 or k == 0:
            raise ValueError("need at least one query with at least one passage")
        q_enc = self.encode_texts(queries, self.query_length)
        flat = [p for plist in passages for p in plist] + [""]
        p_enc = self.encode_texts(flat, self.passage_length)
        empty = p_enc[-1]
        ids, types, seg_q, seg_p = [], [], [], []
        passage_mask = torch.zeros(batch_size, k, dtype=torch.bool)
        pos = 0
        for b, plist in enumerate(passages):
            for j in range(k):
                if j < len(plist):
                    enc = self.post_process(q_enc[b], p_enc[pos])
                    pos += 1
                    passage_mask[b, j] = True
                else:
                    enc = self.post_process(q_enc[b], empty)
                row_ids, row_types = list(enc.ids), list(enc.type_ids)
                # segment of every token: the first n_q non-special tokens are the query's, the rest
                # the passage's (any special-token template keeps that order)
                n_query, seq, seen = len(q_enc[b].ids), [], 0
                for special in enc.special_tokens_mask:
                    seq.append(None if special else (0 if seen < n_query else 1))
                    seen += not special
                # a tokenizer whose post-processor already inserts it (lightning-ir's) keeps its one
                if self.interaction_token_id is not None and row_ids[1:2] != [self.interaction_token_id]:
                    row_ids.insert(1, self.interaction_token_id)
                    row_types.insert(1, row_types[0])
                    seq.insert(1, None)
                ids.append(row_ids)
                types.append(row_types)
                if self.segment_masks:
                    seg_q.append([int(s == 0) for s in seq])
                    seg_p.append([int(s == 1) for s in seq])
        input_ids = _pad(ids, self.pad_token_id)
        length = input_ids.shape[1]
        attention_mask = _pad([[1] * len(r) for r in ids], 0, length)
        batch = {
            "input_ids": input_ids.view(batch_size, k, length),
            "attention_mask": attention_mask.view(batch_size, k, length),
        }
        if self.uses_token_type_ids:
            batch["token_type_ids"] = _pad(types, 0, length).view(batch_size, k, length)
        if self.segment_masks:
            batch["query_token_mask"] = _pad(seg_q, 0, length).view(batch_size, k, length).bool()
            batch["passage_token_mask"] = _pad(seg_p, 0, length).view(batch_size, k, length).bool()
        batch["passage_mask"] = passage_mask
        return batch


# --------------------------------------------------------------------------------------------
# config and model base
# --------------------------------------------------------------------------------------------


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


def _validate_kwargs(config_class: type[RerankerConfig], kwargs: Mapping[str, Any]) -> None:
    allowed = option_names(config_class)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for {config_class.__name__}; known: {sorted(allowed)}",
            key=unknown[0],
        )


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
        _validate_kwargs(cls.config_class, config)
        return cls.config_class(backbone_config=backbone.config.to_dict(), **config)

    # ---- training ---------------------------------------------------------------------------

    def compute_loss(self, output: RerankerOutput, targets: Tensor, loss_fn: nn.Module, **extra: Any) -> Tensor:
        """``sum(loss_fn(s, targets, output.mask, **extra) for s in output.loss_scores())``."""
        total = None
        for scores in output.loss_scores():
            value = loss_fn(scores, targets, output.mask, **extra)
            total = value if total is None else total + value
        return total

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

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode and no autograd for the block; the previous train/eval mode is restored."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
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
