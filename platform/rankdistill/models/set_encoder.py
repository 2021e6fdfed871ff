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

Scores: the backbone's classification head on the final ``[CLS]``. Duplicate detection (§3.4):
``duplicate_head`` (linear) on the final ``[CLS]`` (default) or ``[INT]`` gives
``duplicate_logits`` — train with ``rankdistill.losses.DuplicateAwareInfoNCE`` on lists built by
:func:`rankdistill.training.augment.add_duplicate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rankdistill.errors import ConfigError
from rankdistill.models.backbone import EncoderParts, quiet_transformers, sequence_classifier_from_config
from rankdistill.models.base import CrossEncoderTokenizer, Reranker, RerankerConfig, RerankerOutput

#: index of the [INT] token in every sequence ([CLS] [INT] q ...)
INT_POSITION = 1


class SetEncoderConfig(RerankerConfig):
    """Options of :class:`SetEncoder`.

    Args:
        interaction_token: the added special token (paper: ``[INT]``).
        duplicate_head_token: which final token the duplicate head reads, ``"cls"`` (default) or
            ``"int"`` (§3.4 only says "a binary classification head").
        inference_chunk_size: sequences per length bucket in the no-grad inference path (speed
            and memory only; results do not depend on it). ``score(batch_size=...)`` overrides it.
    """

    model_type = "rankdistill-set-encoder"

    interaction_token: str = "[INT]"
    duplicate_head_token: str = "cls"
    inference_chunk_size: int = 32

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
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
    layer: nn.Module, hidden: Tensor, key_mask: Tensor, num_passages: int, parts: EncoderParts
) -> Tensor:
    """One BERT/ELECTRA layer with inter-passage attention on ``[N, L, D]`` (training path).

    Reuses ``layer``'s modules: ``attention.self.{query,key,value}``, ``attention.output`` (dense,
    dropout, residual LayerNorm), ``intermediate`` and ``output``; ``key_mask`` comes from
    :func:`inter_passage_key_mask`.
    """
    n, length, _ = hidden.shape
    heads, head_dim = parts.num_heads, parts.head_dim
    sa = layer.attention.self

    def split(t: Tensor) -> Tensor:
        return t.view(n, t.shape[1], heads, head_dim).transpose(1, 2)

    def extend(t: Tensor) -> Tensor:  # [N, L, D] -> [N, L + k, D]: own tokens, then the k [INT]s
        ints = t[:, INT_POSITION].reshape(n // num_passages, 1, num_passages, t.shape[-1])
        ints = ints.expand(-1, num_passages, -1, -1).reshape(n, num_passages, t.shape[-1])
        return torch.cat([t, ints], dim=1)

    context = F.scaled_dot_product_attention(
        split(sa.query(hidden)),
        split(extend(sa.key(hidden))),
        split(extend(sa.value(hidden))),
        attn_mask=key_mask,
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
        hidden = parts.embed(flat_ids[r, :width], flat_types[r, :width] if flat_types is not None else None)
        mask = torch.cat([flat_attention[r, :width].bool(), other_ints[idx]], dim=1)[:, None, None, :]
        chunks.append([idx, width, hidden, mask])

    dim = chunks[0][2].shape[-1]
    for layer in parts.layers:
        sa = layer.attention.self
        # pass 1: the layer's [INT] keys/values of every passage (n rows: cheap)
        ints = chunks[0][2].new_zeros(batch * k, dim)  # zeros, not garbage: padded slots are masked but still multiplied
        for idx, _, hidden, _ in chunks:
            ints.index_copy_(0, rows[idx], hidden[:, INT_POSITION])
        ints = ints.view(batch, k, dim)
        int_keys, int_values = sa.key(ints), sa.value(ints)
        # pass 2: one chunk at a time through the whole layer (its working set stays in cache)
        for chunk in chunks:
            idx, width, hidden, mask = chunk
            n = hidden.shape[0]
            if batch == 1:  # the usual inference case: every row shares the one list's [INT]s
                other_keys, other_values = int_keys[0].expand(n, k, dim), int_values[0].expand(n, k, dim)
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
        self.post_init()

    def _make_tokenizer(self, hf_tokenizer: Any) -> CrossEncoderTokenizer:
        return CrossEncoderTokenizer(
            hf_tokenizer, interaction_token=self.config.interaction_token, **self.config.tokenizer_kwargs()
        )

    def max_sequence_tokens(self) -> int:
        return super().max_sequence_tokens() + 1  # [INT]

    @classmethod
    def from_backbone_model(cls, backbone: nn.Module, hf_tokenizer: Any, **config: Any) -> SetEncoder:
        """Adds ``[INT]`` to the tokenizer and a row to the embedding matrix (HF mean-resizing init)."""
        EncoderParts.of(backbone)
        token = config.get("interaction_token", SetEncoderConfig.interaction_token)
        if token not in hf_tokenizer.get_vocab():
            hf_tokenizer.add_special_tokens({"additional_special_tokens": [token]})
        if len(hf_tokenizer) > backbone.config.vocab_size:
            with quiet_transformers():
                backbone.resize_token_embeddings(len(hf_tokenizer))
        return super().from_backbone_model(backbone, hf_tokenizer, **config)

    def encode(self, input_ids: Tensor, attention_mask: Tensor, passage_mask: Tensor, token_type_ids: Tensor | None):
        """Final hidden states ``[B * k, L, D]`` of all sequences (training path, autograd)."""
        _, k, length = input_ids.shape
        parts = EncoderParts.of(self.model)
        flat_types = token_type_ids.reshape(-1, length) if token_type_ids is not None else None
        hidden = parts.embed(input_ids.reshape(-1, length), flat_types)
        key_mask = inter_passage_key_mask(attention_mask.reshape(-1, length), passage_mask)
        for layer in parts.layers:
            hidden = set_encoder_layer(layer, hidden, key_mask, k, parts)
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
                chunk_size or self.config.inference_chunk_size,
            )
        logits = parts.head(first).reshape(-1)
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
