"""Set-Encoder: permutation-invariant inter-passage attention (Schlatt et al.; ../shared/papers/set-encoder.md §3).

Input (§3.1): one sequence per passage, ``[CLS] [INT] q [SEP] d_i [SEP]``; positions restart at 0
in every sequence (each sequence is its own row), so the model cannot see the passage order.

Inter-passage attention (§3.2): in every self-attention layer the sequence of passage ``d_i``
attends to its own tokens *and* to the ``[INT]`` token of every other passage of the same query::

    Attention(Q_i, [K_i, K̄_i], [V_i, V̄_i]),   K̄_i = [K_2^(j) : j != i],  V̄_i = [V_2^(j) : j != i]

implemented by appending the k ``[INT]`` keys/values of the query's list to every sequence's own
keys/values (the sequence's own ``[INT]`` column masked, it is already in ``K_i``) and one fused
``scaled_dot_product_attention`` call: cost O(k·L·(L+k)), never a dense mask over k·L tokens.

The layer loop is written here but reuses the Hugging Face modules' weights (query/key/value,
attention output dense + LayerNorm, intermediate, output), so the checkpoint is a BERT/ELECTRA
``AutoModelForSequenceClassification`` plus one new embedding row for ``[INT]`` and the duplicate
head. With a single passage the model *is* that mono cross-encoder on the same input ids.
Two execution paths compute the same function: with autograd (training) the padded ``[B*k, L]``
batch goes through :func:`set_encoder_layer`; without (``score``, ``torch.no_grad``)
:func:`encode_bucketed` skips padded passages and runs length-sorted buckets, like the sorted
batches of a pointwise model (tests check both against each other and against a dense k·L
reference built with Hugging Face's own BertModel).

Cost: the [INT] columns add ``4·L·k·D`` FLOPs per sequence and layer to the ``24·L·D²`` of a
mono layer, i.e. ``k / (6·D)`` relative (4.3 % for k = 100 on MiniLM, D = 384; half that on
BERT-base) — more in practice on CPU, where attention runs at a lower FLOP rate than the GEMMs.

Step 0: a fresh Set-Encoder should start as the mono cross-encoder it is built from; the k
other [INT] keys disturb that most (their share of every softmax grows with k), so by default they
get a learnable logit offset (``int_attention_bias``, -4.0; ``None`` = the paper's attention).

Published lightning-ir checkpoints (``webis/set-encoder-*``): :meth:`SetEncoder.from_lightning_ir`
(``load_reranker`` picks it for ``model_type: set-encoder``) — bias-free linear head on [CLS],
the tokenizer's own [INT], and lightning-ir's ``sample_missing_docs`` / ``depth`` list padding
(:func:`sample_missing_ints`; no sampling when k >= depth, where lightning-ir 0.0.6 fails).

Scores: the backbone's classification head on the final ``[CLS]`` (``score_head="backbone"``,
as mono) or one linear layer on it (``"linear"``, the paper's §3.1 and lightning-ir). Duplicate detection (§3.4):
``duplicate_head`` (linear) on the final ``[CLS]`` (default) or ``[INT]`` gives
``duplicate_logits`` — train with ``rankdistill.losses.DuplicateAwareInfoNCE`` on lists built by
:func:`rankdistill.training.augment.add_duplicate`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.nn import functional as F

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import EncoderParts, quiet_transformers, sequence_classifier_from_config
from rankdistill.models.base import Reranker, RerankerOutput
from rankdistill.models.config import RerankerConfig
from rankdistill.models.tokenizers import CrossEncoderTokenizer

#: index of the [INT] token in every sequence ([CLS] [INT] q ...)
INT_POSITION = 1
POSITION_LAYOUTS = ("shared", "shifted")
INT_INITS = ("cls", "mean")
SCORE_HEADS = ("backbone", "linear")


def position_ids_for(layout: str, n: int, length: int, device: torch.device | None = None) -> Tensor | None:
    """Position ids ``long [n, L]`` of ``[CLS] [INT] q [SEP] d [SEP]`` rows, or None for the
    backbone's default ``0..L-1`` (``"shifted"``). ``"shared"``: ``0, 0, 1, 2, ..., L-2``."""
    if layout == "shifted":
        return None
    positions = (torch.arange(length, device=device) - 1).clamp(min=0)
    return positions.expand(n, length)


def int_biased_mask(mask: Tensor, own_columns: int, bias: Tensor | None) -> Tensor:
    """The SDPA mask: ``mask`` (``bool [n, 1, 1, C]``) itself, or with ``bias`` (``[H]``, the
    layer's ``int_attention_bias``) a float mask ``[n, H, 1, C]`` adding ``bias[h]`` to the logits
    of the columns from ``own_columns`` on (the other passages' [INT]s) and -inf where masked."""
    if bias is None:
        return mask
    columns = mask.shape[-1]
    own = bias.new_zeros(bias.shape[0], own_columns)
    offsets = torch.cat([own, bias[:, None].expand(-1, columns - own_columns)], dim=1)  # [H, C], differentiable
    return offsets[None, :, None, :].masked_fill(~mask, float("-inf"))


def sample_missing_ints(ints: Tensor, passage_mask: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """lightning-ir's ``sample_missing_docs`` (0.0.6, ``SetEncoderModel.cat_other_doc_hidden_states``).

    Args:
        ints: ``[B, k, D]`` the layer-input hidden states of every passage's [INT].
        passage_mask: ``bool [B, k]`` (real passages first in every row).

    Returns:
        ``(extra [B, m, D], extra_mask bool [B, m])`` with ``m = max_b(depth - k_b, 0)``: for query
        b, ``depth - k_b`` rows drawn by one ``torch.normal(mean, std)`` call (mean and unbiased
        std over its real rows; std 0 for a single passage), queries in order, as lightning-ir.
    """
    batch, _, dim = ints.shape
    counts = passage_mask.sum(dim=1).tolist()
    missing = [max(depth - int(c), 0) for c in counts]
    m = max(missing, default=0)
    extra = ints.new_zeros(batch, m, dim)
    extra_mask = torch.zeros(batch, m, dtype=torch.bool, device=ints.device)
    for b, count in enumerate(counts):
        if missing[b] == 0 or count == 0:
            continue
        real = ints[b, : int(count)]
        mean = real.mean(0, keepdim=True).expand(missing[b], -1)
        std = torch.zeros_like(mean) if count == 1 else real.std(0, keepdim=True).expand(missing[b], -1)
        extra[b, : missing[b]] = torch.normal(mean, std).to(real)
        extra_mask[b, : missing[b]] = True
    return extra, extra_mask


class SetEncoderConfig(RerankerConfig):
    """Options of :class:`SetEncoder`.

    Args:
        interaction_token: the added special token (paper: ``[INT]``).
        duplicate_head_token: which final token the duplicate head reads, ``"cls"`` (default) or
            ``"int"`` (§3.4 only says "a binary classification head").
        inference_chunk_size: sequences per length bucket in the no-grad inference path (speed
            and memory only; results do not depend on it). ``score(batch_size=...)`` overrides it.
        position_ids: ``"shifted"`` (default): positions 0..L-1 over ``[CLS] [INT] q ...``, i.e.
            [INT] at 1 and the query and passage moved by one (the paper's §3.1 and lightning-ir);
            ``"shared"``: [INT] takes position 0 like [CLS] and every other token keeps the position
            it has in the mono cross-encoder's ``[CLS] q [SEP] d [SEP]``. Both restart in every
            sequence, so both are permutation invariant. On all-MiniLM-L6-v2 the shift disturbs the
            pretrained model less than a second token at position 0 (``"shared"`` helps only
            backbones with unrelated neighbouring position embeddings, e.g. random ones).
        int_init: how :meth:`SetEncoder.from_backbone` initialises the new [INT] embedding row:
            ``"mean"`` (default): Hugging Face's ``resize_token_embeddings`` row (mean and
            covariance of the vocabulary), what lightning-ir does; ``"cls"`` copies [CLS]'s row
            (with ``"shared"``, [INT] starts as a second [CLS]). The paper does not say.
        int_attention_bias: the step-0 disturbance of the pretrained model comes mostly from the
            other passages' [INT] keys: k near-identical extra keys take a share of every softmax
            that grows with k. A float (default -4.0) adds a learnable logit offset per layer and
            head (initialised to it) to those k columns, so a fresh Set-Encoder starts close to the
            mono cross-encoder on the same backbone and learns how much to attend to the other
            passages. ``None``: the paper's exact attention (§3.2), no offset (lightning-ir).
        score_head: ``"backbone"`` (default): the backbone's sequence-classification head, as the
            mono cross-encoder (BERT: pooler dense+tanh, then a linear layer); ``"linear"``: one
            linear layer on the final [CLS] (the paper's §3.1 and lightning-ir's checkpoints), with a
            bias when ``score_head_bias``.
        depth, sample_missing_docs: lightning-ir's list padding: with ``sample_missing_docs``, a
            list of k < ``depth`` passages also attends, in every layer, to ``depth - k`` [INT]
            states drawn from a normal with the mean and (unbiased) standard deviation of its real
            [INT] states (``torch.normal``: seed with ``torch.manual_seed``). Off by default; on in
            the published ``webis/set-encoder-*`` checkpoints (depth 100).
    """

    model_type = "rankdistill-set-encoder"

    interaction_token: str = "[INT]"
    duplicate_head_token: str = "cls"
    inference_chunk_size: int = 32
    position_ids: str = "shifted"
    int_init: str = "mean"
    score_head: str = "backbone"
    score_head_bias: bool = False
    depth: int = 100
    sample_missing_docs: bool = False
    int_attention_bias: float | None = -4.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        choices = {"position_ids": POSITION_LAYOUTS, "int_init": INT_INITS, "score_head": SCORE_HEADS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"must be one of {', '.join(allowed)}; got {getattr(self, key)!r}", key=key)
        if not isinstance(self.score_head_bias, bool) or not isinstance(self.sample_missing_docs, bool):
            key = "score_head_bias" if not isinstance(self.score_head_bias, bool) else "sample_missing_docs"
            raise ConfigError(f"must be true or false, got {getattr(self, key)!r}", key=key)
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ConfigError(f"must be a positive integer, got {self.depth!r}", key="depth")
        bias = self.int_attention_bias
        if bias is not None and (isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias)):
            raise ConfigError(f"must be a finite number or null, got {bias!r}", key="int_attention_bias")
        if self.duplicate_head_token not in ("cls", "int"):
            raise ConfigError(f"must be 'cls' or 'int', got {self.duplicate_head_token!r}", key="duplicate_head_token")
        if not isinstance(self.inference_chunk_size, int) or self.inference_chunk_size < 1:
            raise ConfigError(
                f"must be a positive integer, got {self.inference_chunk_size!r}", key="inference_chunk_size"
            )


@dataclass
class SetEncoderOutput(RerankerOutput):
    """``scores [B, k]`` from the [CLS] head; ``duplicate_logits [B, k]`` (-inf at padding)."""

    duplicate_logits: Tensor | None = None


def inter_passage_keys(
    keys: Tensor, values: Tensor, attention_mask: Tensor, passage_mask: Tensor, int_position: int = INT_POSITION
) -> tuple[Tensor, Tensor, Tensor]:
    """Append the other passages' [INT] keys/values to every sequence (Set-Encoder §3.2).

    Args:
        keys, values: ``[N, H, L, d]`` with ``N = B * k``, the k sequences of a query contiguous.
        attention_mask: ``[N, L]`` (1 = real token).
        passage_mask: ``bool [B, k]`` (True = real passage).

    Returns:
        ``(keys [N, H, L + k, d], values [N, H, L + k, d], key_mask bool [N, 1, 1, L + k])``; the
        extra column ``L + j`` of sequence ``(b, i)`` is passage j's [INT], masked for ``j == i``
        and for padded passages.
    """
    n, h, _, d = keys.shape
    batch, k = passage_mask.shape
    if n != batch * k:
        raise ValueError(f"{n} sequences but passage_mask is {tuple(passage_mask.shape)}")

    def others(t: Tensor) -> Tensor:
        ints = t[:, :, int_position].reshape(batch, k, h, d).transpose(1, 2)  # [B, H, k, d]
        return ints.unsqueeze(1).expand(batch, k, h, k, d).reshape(n, h, k, d)

    key_mask = inter_passage_key_mask(attention_mask, passage_mask)
    return torch.cat([keys, others(keys)], dim=2), torch.cat([values, others(values)], dim=2), key_mask


def inter_passage_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    attention_mask: Tensor,
    passage_mask: Tensor,
    dropout_p: float = 0.0,
    int_position: int = INT_POSITION,
) -> Tensor:
    """``Attention(Q_i, [K_i, K̄_i], [V_i, V̄_i])`` for all sequences at once: ``[N, H, L, d]``."""
    full_keys, full_values, key_mask = inter_passage_keys(keys, values, attention_mask, passage_mask, int_position)
    return F.scaled_dot_product_attention(query, full_keys, full_values, attn_mask=key_mask, dropout_p=dropout_p)


def inter_passage_key_mask(attention_mask: Tensor, passage_mask: Tensor) -> Tensor:
    """``bool [N, 1, 1, L + k]``: own tokens per ``attention_mask``, then the k [INT] columns
    (the sequence's own and padded passages' masked). Broadcast over heads and query rows."""
    batch, k = passage_mask.shape
    eye = torch.eye(k, dtype=torch.bool, device=passage_mask.device)
    other = (passage_mask[:, None, :] & ~eye).reshape(batch * k, k)
    return torch.cat([attention_mask.bool(), other], dim=1)[:, None, None, :]


def set_encoder_layer(
    layer: nn.Module,
    hidden: Tensor,
    key_mask: Tensor,
    num_passages: int,
    parts: EncoderParts,
    sample: tuple[Tensor, int] | None = None,
    int_bias: Tensor | None = None,
) -> Tensor:
    """One BERT/ELECTRA layer with inter-passage attention on ``[N, L, D]`` (training path).

    Reuses ``layer``'s modules: ``attention.self.{query,key,value}``, ``attention.output`` (dense,
    dropout, residual LayerNorm), ``intermediate`` and ``output``; ``key_mask`` comes from
    :func:`inter_passage_key_mask` (plus the sampled columns' mask with ``sample``).
    ``sample = (passage_mask, depth)`` appends :func:`sample_missing_ints` columns after the k [INT]s;
    ``int_bias`` (``[H]``) is added to the logits of all those columns (:func:`int_biased_mask`).
    """
    n, length, dim = hidden.shape
    heads, head_dim = parts.num_heads, parts.head_dim
    sa = layer.attention.self
    batch = n // num_passages

    def split(t: Tensor) -> Tensor:
        return t.view(n, t.shape[1], heads, head_dim).transpose(1, 2)

    ints = hidden[:, INT_POSITION].reshape(batch, num_passages, dim)
    if sample is not None:
        ints = torch.cat([ints, sample_missing_ints(ints, sample[0], sample[1])[0]], dim=1)

    def extend(project: nn.Module) -> Tensor:  # [N, L + k (+ m), D]: own tokens, then the [INT]s
        others = project(ints)[:, None].expand(-1, num_passages, -1, -1).reshape(n, ints.shape[1], dim)
        return torch.cat([project(hidden), others], dim=1)

    context = F.scaled_dot_product_attention(
        split(sa.query(hidden)),
        split(extend(sa.key)),
        split(extend(sa.value)),
        attn_mask=int_biased_mask(key_mask, length, int_bias),
        dropout_p=sa.dropout.p if layer.training else 0.0,
    )
    context = context.transpose(1, 2).reshape(n, length, heads * head_dim)
    attention_output = layer.attention.output(context, hidden)
    return layer.output(layer.intermediate(attention_output), attention_output)


def _heads(t: Tensor, heads: int, head_dim: int) -> Tensor:
    """``[n, L, H * d] -> [n, H, L, d]`` (a view)."""
    return t.view(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)


def encode_bucketed(
    parts: EncoderParts,
    input_ids: Tensor,
    attention_mask: Tensor,
    passage_mask: Tensor,
    token_type_ids: Tensor | None,
    chunk_size: int,
    position_layout: str = "shifted",
    sample_depth: int | None = None,
    int_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Inference path of the Set-Encoder (no autograd): the same computation as the layer loop
    over :func:`set_encoder_layer`, organised for speed.

    - Only real passages are encoded; they are sorted by length and cut into chunks of
      ``chunk_size`` sequences, each padded to its own longest sequence (what length-sorted
      batches give a pointwise model).
    - Per layer, first the [INT] keys/values of all passages are projected (k rows), then each
      chunk runs through the whole layer on its own: its keys/values are its own tokens' followed
      by the query's k [INT]s, one fused SDPA call. Keeping one chunk's working set at a time
      (instead of staging every chunk's keys/values) is measurably faster on CPU caches. The [INT]
      rows' key/value projection is computed twice (k extra rows of the ~k*L in the layer).

    Returns ``(first_tokens [n_valid, 2, D], rows)``: the final hidden states of [CLS] and [INT]
    for the real passages, and their flat indices ``b * k + i``.
    """
    batch, k, length = input_ids.shape
    heads, head_dim = parts.num_heads, parts.head_dim
    flat_ids = input_ids.reshape(-1, length)
    flat_attention = attention_mask.reshape(-1, length)
    flat_types = token_type_ids.reshape(-1, length) if token_type_ids is not None else None
    rows = passage_mask.reshape(-1).nonzero().flatten()
    lengths = flat_attention[rows].sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    rows, lengths = rows[order], lengths[order]
    query_of = torch.div(rows, k, rounding_mode="floor")
    slot_of = rows % k
    other_ints = passage_mask[query_of] & (torch.arange(k, device=rows.device)[None, :] != slot_of[:, None])

    chunks = []
    for start in range(0, rows.numel(), max(1, chunk_size)):
        idx = torch.arange(start, min(start + chunk_size, rows.numel()), device=rows.device)
        width = int(lengths[idx[0]])
        r = rows[idx]
        positions = position_ids_for(position_layout, r.numel(), width, r.device)
        hidden = parts.embed(flat_ids[r, :width], flat_types[r, :width] if flat_types is not None else None, positions)
        mask = torch.cat([flat_attention[r, :width].bool(), other_ints[idx]], dim=1)
        chunks.append([idx, width, hidden, mask])

    dim = chunks[0][2].shape[-1]
    for layer_index, layer in enumerate(parts.layers):
        sa = layer.attention.self
        layer_bias = int_bias[layer_index] if int_bias is not None else None
        # pass 1: the layer's [INT] keys/values of every passage (n rows: cheap)
        ints = chunks[0][2].new_zeros(batch * k, dim)  # zeros, not garbage: padded slots are masked but still multiplied
        for idx, _, hidden, _ in chunks:
            ints.index_copy_(0, rows[idx], hidden[:, INT_POSITION])
        ints = ints.view(batch, k, dim)
        extra_mask = None
        if sample_depth is not None:  # lightning-ir's sample_missing_docs: more columns, same for the whole list
            extra, extra_mask = sample_missing_ints(ints, passage_mask, sample_depth)
            ints = torch.cat([ints, extra], dim=1)
        int_keys, int_values = sa.key(ints), sa.value(ints)
        columns = ints.shape[1]
        # pass 2: one chunk at a time through the whole layer (its working set stays in cache)
        for chunk in chunks:
            idx, width, hidden, mask = chunk
            n = hidden.shape[0]
            if extra_mask is not None:
                mask = torch.cat([mask, extra_mask[query_of[idx]]], dim=1)
            mask = int_biased_mask(mask[:, None, None, :], width, layer_bias)
            if batch == 1:  # the usual inference case: every row shares the one list's [INT]s
                other_keys = int_keys[0].expand(n, columns, dim)
                other_values = int_values[0].expand(n, columns, dim)
            else:
                owners = query_of[idx]
                other_keys, other_values = int_keys[owners], int_values[owners]
            context = F.scaled_dot_product_attention(
                _heads(sa.query(hidden), heads, head_dim),
                _heads(torch.cat([sa.key(hidden), other_keys], dim=1), heads, head_dim),
                _heads(torch.cat([sa.value(hidden), other_values], dim=1), heads, head_dim),
                attn_mask=mask,
            )
            context = context.transpose(1, 2).reshape(n, width, dim)
            attention_output = layer.attention.output(context, hidden)
            chunk[2] = layer.output(layer.intermediate(attention_output), attention_output)

    first = chunks[0][2].new_empty(rows.numel(), 2, dim)
    for idx, _, hidden, _ in chunks:
        first[idx] = hidden[:, :2]
    return first, rows


class SetEncoder(Reranker):
    """Set-Encoder student (BERT or ELECTRA backbone).

    Batch: :class:`CrossEncoderTokenizer` with ``interaction_token="[INT]"`` (keys ``input_ids,
    attention_mask, token_type_ids [B, k, L], passage_mask [B, k]``).
    ``forward(...) -> SetEncoderOutput(scores, mask, duplicate_logits)``. Listwise: ``score``
    encodes the whole passage list of the query together.
    """

    config_class = SetEncoderConfig
    registry_name = "set-encoder"
    listwise = True

    def __init__(self, config: SetEncoderConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.model = backbone if backbone is not None else sequence_classifier_from_config(config.backbone_config)
        EncoderParts.of(self.model)  # raises ConfigError for unsupported backbones
        self.duplicate_head = nn.Linear(self.model.config.hidden_size, 1)
        self.int_attention_bias: nn.Parameter | None = None
        if config.int_attention_bias is not None:
            parts = EncoderParts.of(self.model)
            self.int_attention_bias = nn.Parameter(
                torch.full((len(parts.layers), parts.num_heads), float(config.int_attention_bias))
            )
        self.score_linear: nn.Linear | None = None
        if config.score_head == "linear":
            # the paper's / lightning-ir's head; the backbone's unused head and pooler are dropped
            # (no parameters without gradients under DDP, no such keys in the checkpoint)
            self.score_linear = nn.Linear(self.model.config.hidden_size, 1, bias=config.score_head_bias)
            self.model.classifier = nn.Identity()
            base = getattr(self.model, self.model.base_model_prefix)
            if getattr(base, "pooler", None) is not None:
                base.pooler = None
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """As the base class; a checkpoint saved before ``int_attention_bias`` existed (no such key
        in its config.json) loads with the paper's attention it was trained with."""
        config_file = os.path.join(os.fspath(pretrained_model_name_or_path), "config.json")
        if "config" not in kwargs and os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as fh:
                if "int_attention_bias" not in json.load(fh):
                    kwargs.setdefault("int_attention_bias", None)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _head(self, parts: EncoderParts) -> Any:
        if self.score_linear is None:
            return parts.head
        return lambda first: self.score_linear(first[:, 0])

    def _make_tokenizer(self, hf_tokenizer: Any) -> CrossEncoderTokenizer:
        return CrossEncoderTokenizer(
            hf_tokenizer, interaction_token=self.config.interaction_token, **self.config.tokenizer_kwargs()
        )

    def max_sequence_tokens(self) -> int:
        return super().max_sequence_tokens() + 1  # [INT]

    @classmethod
    def from_backbone_model(cls, backbone: nn.Module, hf_tokenizer: Any, **config: Any) -> SetEncoder:
        """Adds ``[INT]`` to the tokenizer and a row to the embedding matrix, initialised as
        ``int_init`` says (default: a copy of [CLS]'s row)."""
        EncoderParts.of(backbone)
        token = config.get("interaction_token", SetEncoderConfig.interaction_token)
        int_init = config.get("int_init", SetEncoderConfig.int_init)
        if int_init not in INT_INITS:
            raise ConfigError(f"must be one of {', '.join(INT_INITS)}; got {int_init!r}", key="int_init")
        added = token not in hf_tokenizer.get_vocab()
        if added:
            hf_tokenizer.add_special_tokens({"additional_special_tokens": [token]})
        if len(hf_tokenizer) > backbone.config.vocab_size:
            with quiet_transformers():
                backbone.resize_token_embeddings(len(hf_tokenizer))
        if added and int_init == "cls":
            if hf_tokenizer.cls_token_id is None:
                raise ConfigError("int_init 'cls' needs a tokenizer with a [CLS] token", key="int_init")
            words = backbone.get_input_embeddings().weight
            with torch.no_grad():
                words[hf_tokenizer.convert_tokens_to_ids(token)] = words[hf_tokenizer.cls_token_id]
        return super().from_backbone_model(backbone, hf_tokenizer, **config)

    @classmethod
    def from_lightning_ir(cls, path: str | os.PathLike, **overrides: Any) -> SetEncoder:
        """A lightning-ir Set-Encoder checkpoint (``config.json`` with ``model_type: set-encoder``,
        the ``webis/set-encoder-*`` layout) scoring as lightning-ir 0.0.6 does.

        The backbone keys carry no prefix and the head is ``linear`` on the final [CLS]; the
        tokenizer's post-processor inserts [INT]; positions are ``0..L-1`` (``"shifted"``);
        ``depth`` / ``sample_missing_docs`` come from the checkpoint. ``overrides`` set other
        options (e.g. ``sample_missing_docs=False``)."""
        return _load_lightning_ir(cls, os.fspath(path), overrides)

    def encode(self, input_ids: Tensor, attention_mask: Tensor, passage_mask: Tensor, token_type_ids: Tensor | None):
        """Final hidden states ``[B * k, L, D]`` of all sequences (training path, autograd)."""
        _, k, length = input_ids.shape
        parts = EncoderParts.of(self.model)
        flat_types = token_type_ids.reshape(-1, length) if token_type_ids is not None else None
        flat_ids = input_ids.reshape(-1, length)
        positions = position_ids_for(self.config.position_ids, flat_ids.shape[0], length, flat_ids.device)
        hidden = parts.embed(flat_ids, flat_types, positions)
        key_mask = inter_passage_key_mask(attention_mask.reshape(-1, length), passage_mask)
        sample = None
        if self.config.sample_missing_docs:
            sample = (passage_mask, self.config.depth)
            missing = (self.config.depth - passage_mask.sum(dim=1)).clamp(min=0)
            extra = torch.arange(int(missing.max()), device=missing.device)[None, :] < missing[:, None]  # [B, m]
            extra = extra[:, None, :].expand(-1, k, -1).reshape(extra.shape[0] * k, extra.shape[1])
            key_mask = torch.cat([key_mask, extra[:, None, None, :]], dim=-1)
        bias = self.int_attention_bias
        # training.gradient_checkpointing: this loop replaces the backbone's own, so it checkpoints
        # each layer itself (non-reentrant, RNG restored: the same gradients as without)
        checkpointed = self.training and self.checkpoints_activations
        for index, layer in enumerate(parts.layers):
            args = (layer, hidden, key_mask, k, parts, sample, bias[index] if bias is not None else None)
            if checkpointed:
                hidden = torch.utils.checkpoint.checkpoint(set_encoder_layer, *args, use_reentrant=False)
            else:
                hidden = set_encoder_layer(*args)
        return hidden

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        passage_mask: Tensor,
        token_type_ids: Tensor | None = None,
        chunk_size: int | None = None,
        **unused: Any,
    ) -> SetEncoderOutput:
        """Scores of all passages. With gradients enabled (training) the whole padded batch runs
        through :func:`set_encoder_layer`; without (``score``, ``torch.no_grad``) the same model
        runs through :func:`encode_bucketed` (length-sorted chunks of ``chunk_size`` sequences,
        default ``config.inference_chunk_size``)."""
        batch, k, _ = input_ids.shape
        parts = EncoderParts.of(self.model)
        if torch.is_grad_enabled():
            first = self.encode(input_ids, attention_mask, passage_mask, token_type_ids)[:, :2]
            rows = None
        else:
            first, rows = encode_bucketed(
                parts, input_ids, attention_mask, passage_mask, token_type_ids,
                chunk_size or self.config.inference_chunk_size, self.config.position_ids,
                self.config.depth if self.config.sample_missing_docs else None, self.int_attention_bias,
            )
        logits = self._head(parts)(first).reshape(-1)
        token = 0 if self.config.duplicate_head_token == "cls" else INT_POSITION
        duplicate = self.duplicate_head(first[:, token]).reshape(-1)
        if rows is None:
            padding = ~passage_mask
            scores = logits.view(batch, k).masked_fill(padding, float("-inf"))
            duplicate_logits = duplicate.view(batch, k).masked_fill(padding, float("-inf"))
        else:
            scores = logits.new_full((batch * k,), float("-inf")).index_copy(0, rows, logits).view(batch, k)
            duplicate_logits = duplicate.new_full((batch * k,), float("-inf")).index_copy(0, rows, duplicate)
            duplicate_logits = duplicate_logits.view(batch, k)
        return SetEncoderOutput(scores=scores, mask=passage_mask, duplicate_logits=duplicate_logits)

    def _score(self, tokenizer: Any, query: str, passages: list[str], batch_size: int) -> list[float]:
        # listwise: one pass over the whole list; batch_size only sizes the length buckets
        out = self(**self._batch_to_device(tokenizer([query], [passages])), chunk_size=batch_size)
        return out.scores[0].float().cpu().tolist()

    def compute_loss(self, output: RerankerOutput, targets: Tensor, loss_fn: nn.Module, **extra: Any) -> Tensor:
        """As the base class; a loss with ``uses_duplicate_logits = True`` (DA-InfoNCE) also gets
        ``duplicate_logits=output.duplicate_logits`` (pass ``duplicate_targets=`` in ``extra``).

        Any other loss gets ``0 * sum(duplicate_logits)`` added, so the duplicate head always takes
        part in the graph (zero gradient): DistributedDataParallel without
        ``find_unused_parameters`` then works with every loss."""
        if getattr(loss_fn, "uses_duplicate_logits", False):
            if "duplicate_logits" not in extra:
                extra = {**extra, "duplicate_logits": output.duplicate_logits}
            return super().compute_loss(output, targets, loss_fn, **extra)
        loss = super().compute_loss(output, targets, loss_fn, **extra)
        if output.duplicate_logits is not None and output.duplicate_logits.requires_grad:
            loss = loss + 0.0 * output.duplicate_logits.masked_fill(~output.mask, 0.0).sum()
        return loss


# lightning-ir config keys that are not the backbone's
_LIGHTNING_IR_KEYS = {
    "query_length", "doc_length", "depth", "add_extra_token", "sample_missing_docs", "pooling_strategy",
    "linear_bias", "scoring_strategy", "tokenizer_pattern", "_bert_pool", "backbone_model_type", "use_adapter",
    "adapter_config", "pretrained_adapter_name_or_path", "architectures", "model_type", "transformers_version",
}


def _load_lightning_ir(cls: type[SetEncoder], path: str, overrides: dict[str, Any]) -> SetEncoder:
    config_file = os.path.join(path, "config.json")
    try:
        with open(config_file, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no readable config.json ({exc})", path=config_file) from exc
    expected = {"model_type": "set-encoder", "add_extra_token": True, "scoring_strategy": "rank",
                "pooling_strategy": "first", "_bert_pool": False, "use_adapter": False}
    for key, value in expected.items():
        if raw.get(key, value) != value:
            raise ConfigError(f"lightning-ir option {key}={raw.get(key)!r} is not supported (only {value!r})",
                              path=config_file, key=key)
    backbone_type = raw.get("backbone_model_type")
    if backbone_type not in ("bert", "electra"):
        raise ConfigError(f"backbone_model_type {backbone_type!r}: only bert and electra", path=config_file,
                          key="backbone_model_type")
    backbone = {k: v for k, v in raw.items() if k not in _LIGHTNING_IR_KEYS}
    backbone["model_type"] = backbone_type
    options = {
        "query_length": raw.get("query_length") or 32,
        "passage_length": raw.get("doc_length") or 512,
        "position_ids": "shifted",
        "score_head": "linear",
        "score_head_bias": bool(raw.get("linear_bias", False)),
        "depth": raw.get("depth") or 100,
        "sample_missing_docs": bool(raw.get("sample_missing_docs", True)),
        "int_attention_bias": None,
        **overrides,
    }
    hf_backbone = sequence_classifier_from_config(backbone)
    model = cls(SetEncoderConfig(backbone_config=hf_backbone.config.to_dict(), **options), backbone=hf_backbone)
    state = _read_state_dict(path)
    prefix = f"model.{hf_backbone.base_model_prefix}."
    mapped = {("score_linear." + key[len("linear."):]) if key.startswith("linear.") else prefix + key: value
              for key, value in state.items()}
    result = model.load_state_dict(mapped, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("duplicate_head.")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"weights do not match a lightning-ir Set-Encoder: missing {missing[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]}", path=path)
    model.attach_tokenizer(_lightning_ir_tokenizer(path))
    model.eval()
    return model


def _read_state_dict(path: str) -> dict[str, Tensor]:
    safetensors_file = os.path.join(path, "model.safetensors")
    if os.path.isfile(safetensors_file):
        from safetensors.torch import load_file

        return load_file(safetensors_file)
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(bin_file):
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise ConfigError("no model.safetensors or pytorch_model.bin", path=path)


def _lightning_ir_tokenizer(path: str) -> Any:
    """lightning-ir saves ``tokenizer_class: SetEncoderTokenizer``, unknown to ``AutoTokenizer``:
    read ``tokenizer.json`` (post-processor with [INT] included) and the special tokens directly."""
    from transformers import PreTrainedTokenizerFast

    tokenizer_file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tokenizer_file):
        raise ConfigError("a lightning-ir checkpoint needs its tokenizer.json", path=tokenizer_file)
    special = {}
    special_file = os.path.join(path, "special_tokens_map.json")
    if os.path.isfile(special_file):
        with open(special_file, encoding="utf-8") as fh:
            for name, value in json.load(fh).items():
                if name.endswith("_token"):
                    special[name] = value["content"] if isinstance(value, dict) else value
    with quiet_transformers():
        return PreTrainedTokenizerFast(
            tokenizer_file=tokenizer_file, model_input_names=["input_ids", "token_type_ids", "attention_mask"], **special
        )
