"""benchmarks/scale_model.py's measured units against hand-computed values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("scale_model", REPO / "benchmarks" / "scale_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_flops_per_passage_match_the_transformer_formula():
    """Per layer: 24 T H^2 (QKV, output and 4H feed-forward matmuls) + 4 T^2 H (scores and values)."""
    scale = _module()
    model = scale.colbert_base().eval()
    tokens, hidden, layers = 83, 768, 12
    ids = torch.randint(1000, 30000, (2, tokens))

    def encode():
        with torch.inference_mode():
            model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids))

    expected = layers * (24 * tokens * hidden**2 + 4 * tokens**2 * hidden)
    assert scale.flops(encode) / 2 == pytest.approx(expected, rel=1e-3)


def test_label_store_bytes_per_label_are_a_compressed_row():
    labels = _module().label_bytes(rows_per_kind=2000)
    # pointwise rows: 3 ids + 3 doubles + an int; pairwise: 4 ids + 6 doubles + 2 ints + a seed
    assert 5 < labels["pointwise"] < 60 and labels["pointwise"] < labels["pairwise"] < 120
