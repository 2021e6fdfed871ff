"""A memory model of one training step per GPU: measured activations + model states per ZeRO stage.

Activations are *measured*, not guessed: :func:`saved_bytes` runs a forward pass under
``torch.autograd.graph.saved_tensors_hooks`` and adds up the distinct storages autograd keeps for
the backward pass (parameters excluded: they are model states). :func:`colbert_activation_profile`
does that for a BERT-base-shaped ColBERT student (random weights, the backbone's default
attention; no weights are downloaded) in bf16, as DeepSpeed's bf16 mode runs it, with 1 and 0
layers: the difference is one layer, the rest is the embeddings, the projection, the in-batch
MaxSim and PairDistillLoss. Scaled to the real layer count and micro-batch, that is the step's
activation peak; with activation checkpointing each layer keeps only what the checkpointed
forward saves (measured the same way) and one layer's full activations are alive again while
it is recomputed.

Model states follow the ZeRO paper's mixed-precision accounting (Rajbhandari et al. 2020, §3.1)
for AdamW with ``N`` data-parallel GPUs: bf16 weights (2 bytes per parameter; ZeRO-3 splits them
over N), bf16 gradients (2; ZeRO-2/3 keep the reduced partition, 2/N, but a micro-step's full
bf16 gradients exist until they are reduced, so ZeRO-2 counts 2 + 2/N), the fp32 master weights,
Adam's two moments and the fp32 gradient accumulation of DeepSpeed's bf16 optimizer (4 + 8 + 4,
split over N from ZeRO-1 on). ``CUDA_OVERHEAD`` (the CUDA context and cuBLAS workspaces, which
``torch.cuda.max_memory_allocated`` does not see) is added before comparing with a card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GIB = 2**30
#: usable memory of each card (``torch.cuda.get_device_properties(0).total_memory``)
CARDS = {"A10G 24 GB": 23028 * 2**20, "H100 80 GB": 81559 * 2**20}
CUDA_OVERHEAD = 1.0 * GIB  # context + cuBLAS / allocator workspace, outside max_memory_allocated
MARGIN = 0.20  # a config must leave this fraction of the card free


def saved_bytes(run: Callable[[], Any], parameters: Any = ()) -> int:
    """Bytes of the distinct tensor storages autograd saves for backward while ``run()`` executes
    (the forward pass's activations), ``parameters``' storages excluded."""
    import torch

    skip = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr != 0:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def bert_base_config(layers: int, vocab_size: int = 30522, **overrides: Any):
    """colbertv2.0's backbone shape (bert-base-uncased): hidden 768, 12 heads, FFN 3072."""
    from transformers import BertConfig

    values = {"vocab_size": vocab_size, "hidden_size": 768, "num_hidden_layers": layers, "num_attention_heads": 12,
                  "intermediate_size": 3072, "max_position_embeddings": 512}
    values.update(overrides)
    return BertConfig(**values)


def colbert_student(layers: int, dim: int = 128, seed: int = 0, **overrides: Any):
    """A random ColBERT student on a BERT-base-shaped backbone of ``layers`` layers (no tokenizer:
    :func:`colbert_batch` makes the token ids)."""
    import torch
    from transformers import AutoModel

    from rankdistill.models.colbert import ColBERT, ColBERTConfig

    torch.manual_seed(seed)
    backbone = AutoModel.from_config(bert_base_config(layers, **overrides), add_pooling_layer=False)
    return ColBERT(ColBERTConfig(backbone_config=backbone.config.to_dict(), dim=dim, new_projection=True),
                   backbone=backbone)


def colbert_batch(queries: int, passages: int, query_tokens: int, passage_tokens: int, vocab: int = 30522,
                  pairs_per_query: int = 50, device: str = "cpu", seed: int = 0) -> tuple[dict, Any, dict]:
    """Random full-length token ids of the given shape, with PairDistillLoss's targets: ``(batch,
    targets, extras)`` as :func:`rankdistill.training.loop.collate` gives them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, k = queries, passages
    batch = {
        "query_input_ids": torch.randint(1000, vocab, (b, query_tokens), generator=g),
        "query_attention_mask": torch.ones(b, query_tokens, dtype=torch.long),
        "passage_input_ids": torch.randint(1000, vocab, (b, k, passage_tokens), generator=g),
        "passage_attention_mask": torch.ones(b, k, passage_tokens, dtype=torch.long),
        "passage_token_mask": torch.ones(b, k, passage_tokens, dtype=torch.bool),
        "passage_mask": torch.ones(b, k, dtype=torch.bool),
    }
    targets = torch.randn(b, k, generator=g)
    labels = torch.zeros(b, k, dtype=torch.long)
    labels[:, 0] = 1
    pair_targets = torch.full((b, k, k), float("nan"))
    for q in range(b):
        i = torch.randint(0, k, (pairs_per_query,), generator=g)
        j = (i + 1 + torch.randint(0, k - 1, (pairs_per_query,), generator=g)) % k
        pair_targets[q, i, j] = torch.rand(pairs_per_query, generator=g)
    extras = {"labels": labels, "pair_targets": pair_targets, "pair_mask": ~torch.isnan(pair_targets)}
    move = {key: value.to(device) for key, value in batch.items()}
    return move, targets.to(device), {key: value.to(device) for key, value in extras.items()}


def pairdistill_loss():
    from rankdistill.losses import PairDistillLoss

    return PairDistillLoss(lambda_kd=1.0, lambda_pair=3.0, in_batch_negatives=True)


def colbert_step_loss(model, batch: dict, targets, extras: dict):
    """The training step's forward: the student and PairDistillLoss (in-batch negatives on)."""
    out = model(**batch)
    return model.compute_loss(out, targets, pairdistill_loss(), **extras)


@dataclass
class ActivationProfile:
    """Measured activation bytes of one micro-batch (``queries`` x ``passages``), bf16."""

    queries: int
    passages: int
    per_layer: int  # one encoder layer, plain
    per_layer_checkpointed: int  # one encoder layer with activation checkpointing (its input)
    rest: int  # embeddings, projection, MaxSim, loss (plain and checkpointed alike)

    def total(self, layers: int, checkpointed: bool) -> int:
        if not checkpointed:
            return self.rest + layers * self.per_layer
        # every layer's saved input, plus one layer's full activations while it is recomputed
        return self.rest + layers * self.per_layer_checkpointed + self.per_layer



def _colbert_saved(layers: int, checkpointed: bool, queries: int, passages: int, query_tokens: int,
                   passage_tokens: int, device: str, dtype: Any) -> int:
    batch, targets, extras = colbert_batch(queries, passages, query_tokens, passage_tokens, device=device)
    model = colbert_student(layers, hidden_dropout_prob=0.1).to(device=device, dtype=dtype).train()
    if checkpointed:
        model.enable_gradient_checkpointing()
    return saved_bytes(lambda: colbert_step_loss(model, batch, targets, extras), list(model.parameters()))


def colbert_layer_bytes(passages: int, query_tokens: int, passage_tokens: int, device: str = "cpu",
                        dtype: Any = None) -> tuple[int, int]:
    """One encoder layer's saved bytes for ONE query and its ``passages`` (1 layer minus 0
    layers), plain and checkpointed. A layer's activations are per sequence: B queries cost B
    times this."""
    import torch

    dtype = dtype or torch.bfloat16
    shape = (1, passages, query_tokens, passage_tokens, device, dtype)
    empty = _colbert_saved(0, False, *shape)
    return _colbert_saved(1, False, *shape) - empty, _colbert_saved(1, True, *shape) - empty


def colbert_activation_profile(queries: int, passages: int, query_tokens: int, passage_tokens: int,
                               device: str = "cpu", dtype: Any = None,
                               layer_bytes: tuple[int, int] | None = None) -> ActivationProfile:
    """Measure :class:`ActivationProfile` for a micro-batch of ``queries`` x ``passages``: the
    layers from :func:`colbert_layer_bytes` (or ``layer_bytes``, measured before) x ``queries``;
    the rest (embeddings, projection, the [B, B*k] in-batch MaxSim, the loss: the in-batch part
    grows with the square of ``queries``) measured at the full shape with 0 layers."""
    import torch

    dtype = dtype or torch.bfloat16
    plain, checkpointed = layer_bytes or colbert_layer_bytes(passages, query_tokens, passage_tokens, device, dtype)
    rest = _colbert_saved(0, False, queries, passages, query_tokens, passage_tokens, device, dtype)
    return ActivationProfile(queries, passages, plain * queries, checkpointed * queries, rest)


def model_state_bytes(parameters: int, zero_stage: int, gpus: int) -> int:
    """Per-GPU bytes of weights, gradients and AdamW state in DeepSpeed bf16 (module doc)."""
    p, n = parameters, max(1, gpus)
    weights = 2 * p / (n if zero_stage >= 3 else 1)
    grads = 2 * p / n if zero_stage >= 3 else (2 * p + 2 * p / n if zero_stage == 2 else 2 * p)
    optimizer = (4 + 8 + 4) * p / (n if zero_stage >= 1 else 1)  # fp32 master, Adam m and v, fp32 grad accumulation
    return int(weights + grads + optimizer)


def verdict(peak: int, card: str) -> str:
    """``fits (N% free)`` when ``peak`` + the CUDA overhead leaves at least :data:`MARGIN` of the
    card free, ``fits, under 20% margin (N% free)`` when it fits at all, else ``does not fit``."""
    capacity = CARDS[card]
    free = 1.0 - (peak + CUDA_OVERHEAD) / capacity
    if free >= MARGIN:
        return f"fits ({free:.0%} free)"
    if free >= 0:
        return f"fits, under {MARGIN:.0%} margin ({free:.0%} free)"
    return "does not fit"
