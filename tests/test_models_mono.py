"""mono cross-encoder: loads plain HF cross-encoder checkpoints; batching does not change scores;
one test on the real all-MiniLM-L6-v2 backbone for every architecture."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, minilm_path, tiny_backbone, tiny_reranker, tokenizer
from rankdistill.models import MonoCrossEncoder, load_reranker


def test_loads_an_auto_model_for_sequence_classification_checkpoint(tmp_path):
    hf = tiny_backbone("bert", seed=7).eval()
    hf.save_pretrained(tmp_path)
    tokenizer().save_pretrained(tmp_path)
    model = MonoCrossEncoder.from_pretrained(tmp_path)
    assert type(model) is MonoCrossEncoder and not model.training
    enc = tokenizer()([QUERY] * 3, PASSAGES[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf(**enc).logits.squeeze(-1)
    assert model.score(QUERY, PASSAGES[:3]) == pytest.approx(expected.tolist(), abs=1e-5)
    assert type(load_reranker(tmp_path)) is MonoCrossEncoder  # registry falls back to mono
    # and it saves as a rankdistill checkpoint that loads back the same
    model.save_pretrained(tmp_path / "student")
    again = MonoCrossEncoder.from_pretrained(tmp_path / "student")
    assert again.score(QUERY, PASSAGES[:3]) == pytest.approx(expected.tolist(), abs=1e-5)


def test_score_is_independent_of_batch_size_and_order():
    model = tiny_reranker("mono", kind="electra")
    one = model.score(QUERY, PASSAGES, batch_size=1)
    many = model.score(QUERY, PASSAGES, batch_size=100)
    assert one == pytest.approx(many, abs=1e-5)
    assert model.score(QUERY, PASSAGES[::-1], batch_size=2) == pytest.approx(many[::-1], abs=1e-5)
    assert model.score(QUERY, []) == []


def test_forward_contract():
    model = tiny_reranker("mono")
    batch = model.tokenizer([QUERY, "dogs"], [PASSAGES[:3], PASSAGES[:1]])
    assert batch["input_ids"].shape[:2] == (2, 3) and batch["passage_mask"].dtype == torch.bool
    assert all(isinstance(v, torch.Tensor) for v in batch.values())
    out = model(**batch)
    assert out.scores.shape == (2, 3) and torch.equal(out.mask, batch["passage_mask"])
    assert torch.isneginf(out.scores[1, 1:]).all() and torch.isfinite(out.scores[0]).all()
    with pytest.raises(ValueError):
        model.tokenizer([QUERY], [PASSAGES, PASSAGES])


def test_real_minilm_backbone_builds_every_architecture():
    """The one test on the real all-MiniLM-L6-v2 weights (~2 s)."""
    from rankdistill.models import build_reranker

    path = minilm_path()
    passages = ["A cat is a small domesticated feline.", "Stock markets fell on Monday."]
    for name in ("mono", "celi", "set-encoder", "listconranker"):
        torch.manual_seed(0)
        model = build_reranker(name, path)
        scores = model.score("what is a cat", passages)
        assert len(scores) == 2 and all(isinstance(s, float) for s in scores), name
        if name == "listconranker":
            assert model.config.pooling == "mean"  # read from the sentence-transformers config
        if name == "set-encoder":
            assert model.model.config.vocab_size == len(model.tokenizer) == 30523
