"""What every reranker shares: save/load round trip, registry, the score() contract, training step."""

from __future__ import annotations

import os

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, scramble, tiny_reranker
from rankdistill.errors import ConfigError
from rankdistill.losses import BCE, InfoNCE
from rankdistill.models import RERANKERS, get_reranker_class, load_reranker

NAMES = ["mono", "celi", "set-encoder", "listconranker", "duo", "bi-encoder", "colbert"]
OPTIONS = {
    "mono": {"query_length": 16},
    "celi": {"token_dim": 8},
    "set-encoder": {"duplicate_head_token": "int"},
    "listconranker": {"stop_size": 3, "list_layers": 1},
    "duo": {"aggregation": "min"},
    "bi-encoder": {"pooling": "mean", "similarity": "dot", "shared_encoder": False},
    "colbert": {"dim": 16},
}


@pytest.mark.parametrize("name", NAMES)
def test_save_pretrained_from_pretrained_round_trip(name, tmp_path):
    model = scramble(tiny_reranker(name, **OPTIONS[name]), seed=3).eval()
    before = model.score(QUERY, PASSAGES)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    loaded = load_reranker(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    for key, value in OPTIONS[name].items():
        assert getattr(loaded.config, key) == value
    after = loaded.score(QUERY, PASSAGES)
    assert after == pytest.approx(before, abs=1e-5)
    assert len({round(s, 4) for s in before}) > 1  # non-trivial scores
    same_class = type(model).from_pretrained(tmp_path)
    assert same_class.score(QUERY, PASSAGES) == pytest.approx(before, abs=1e-5)


def test_registry():
    assert set(RERANKERS) == set(NAMES)
    assert get_reranker_class("set_encoder") is get_reranker_class("set-encoder")
    with pytest.raises(ConfigError, match="unknown reranker"):
        get_reranker_class("splade")
    with pytest.raises(ConfigError, match="unknown option"):
        tiny_reranker("mono", token_dim=3)


@pytest.mark.parametrize("name", ["mono", "celi", "set-encoder", "listconranker", "bi-encoder", "colbert"])
def test_score_contract_and_a_training_step(name):
    model = tiny_reranker(name)
    scores = model.score(QUERY, PASSAGES, batch_size=2)
    assert isinstance(scores, list) and len(scores) == len(PASSAGES) and all(isinstance(s, float) for s in scores)
    assert not model.training
    model.train()
    batch = model.tokenizer([QUERY, "dogs"], [PASSAGES[:4], PASSAGES[1:3]])
    out = model(**batch)
    assert out.scores.shape == (2, 4) and torch.isneginf(out.scores[1, 2:]).all()
    targets = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]])
    loss_fn = BCE(from_probabilities=True) if name == "listconranker" else InfoNCE()
    loss = model.compute_loss(out, targets, loss_fn)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    # every trainable parameter takes part (DDP without find_unused_parameters needs that)
    assert [n for n, g in grads.items() if g is None] == []
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert model.training  # score() restored the mode it found


def test_lengths_must_fit_the_backbone_positions():
    with pytest.raises(ConfigError, match="passage_length"):
        tiny_reranker("mono", passage_length=500)
    with pytest.raises(ConfigError, match="passage_length"):
        tiny_reranker("duo", passage_length=256)  # 32 + 2 x 256 + 4 > 512
    assert tiny_reranker("listconranker", passage_length=510).max_sequence_tokens() == 512


def test_mono_refuses_another_students_checkpoint(tmp_path):
    from rankdistill.models import MonoCrossEncoder

    tiny_reranker("celi").save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="load_reranker"):
        MonoCrossEncoder.from_pretrained(tmp_path)
