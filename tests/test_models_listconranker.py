"""ListConRanker: ListAttention (query row ignores passages), sigmoid scores, freezing,
Algorithm 1 (iterative inference)."""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, scramble, tiny_reranker
from rankdistill.errors import ConfigError
from rankdistill.losses import CircleLoss
from rankdistill.models import list_attention_mask
from rankdistill.models.listconranker import iterative_round_sizes


def test_list_attention_mask_by_hand():
    mask = list_attention_mask(torch.tensor([[True, True, False]]))
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0].int().tolist() == [
        [1, 0, 0, 0],  # the query attends only to itself
        [1, 1, 1, 0],  # passages attend to the query and every real passage
        [1, 1, 1, 0],
        [1, 1, 1, 0],  # (padded passage's row: ignored downstream)
    ]


def _model(**options):
    return scramble(tiny_reranker("listconranker", **options), seed=1, std=0.2).eval()


def test_query_row_ignores_the_passages():
    model = _model()
    with torch.no_grad():
        a = model(**model.tokenizer([QUERY], [PASSAGES[:3]]))
        b = model(**model.tokenizer([QUERY], [["completely different text", "another one"]]))
        c = model(**model.tokenizer([QUERY], [PASSAGES]))
    assert torch.allclose(a.query_features, b.query_features, atol=1e-6)
    assert torch.allclose(a.query_features, c.query_features, atol=1e-6)
    # ... while a passage's listwise feature depends on the other passages
    assert (a.passage_features[0, 0] - c.passage_features[0, 0]).abs().max() > 1e-4


def test_query_row_ignores_passages_with_bidirectional_layers_it_would_not():
    """Control: with a plain all-to-all mask the query row does change (so the test above can fail)."""
    model = _model()
    h_q = torch.randn(1, 32)
    h_p1, h_p2 = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    full = torch.ones(1, 1, 4, 4, dtype=torch.bool)

    def run(h_p, mask):
        z = torch.cat([(h_q + model.query_type_embedding)[:, None], h_p + model.passage_type_embedding], dim=1)
        for layer in model.list_transformer:
            z = layer(z, mask)
        return z[:, 0]

    with torch.no_grad():
        list_mask = list_attention_mask(torch.ones(1, 3, dtype=torch.bool))
        assert torch.allclose(run(h_p1, list_mask), run(h_p2, list_mask), atol=1e-6)
        assert (run(h_p1, full) - run(h_p2, full)).abs().max() > 1e-4


def test_scores_are_sigmoid_of_fused_mlp_and_padding_is_masked():
    model = _model()
    batch = model.tokenizer([QUERY, "dogs"], [PASSAGES[:3], PASSAGES[:1]])
    assert set(batch) == {"query_input_ids", "query_attention_mask", "passage_input_ids",
                          "passage_attention_mask", "passage_mask"}
    with torch.no_grad():
        out = model(**batch)
    valid = out.mask
    assert ((out.scores[valid] > 0) & (out.scores[valid] < 1)).all()
    assert torch.allclose(out.scores[valid], torch.sigmoid(out.logits[valid]))
    assert torch.isinf(out.scores[~valid]).all()
    # the second query's single passage scores as if alone
    with torch.no_grad():
        alone = model(**model.tokenizer(["dogs"], [PASSAGES[:1]])).scores
    assert torch.allclose(out.scores[1, :1], alone[0], atol=1e-5)


@pytest.mark.parametrize("pair_features", ["concat", "interaction"])
def test_logit_is_the_fused_linear_of_the_two_pair_mlps_by_hand(pair_features):
    """s_i = sigmoid(w_f . [ReLU(W_o f(h_q, h_i) + b_o); ReLU(W_l f(z_q, z_i) + b_l)] + b_f)."""
    model = _model(pair_features=pair_features)
    torch.manual_seed(3)
    h_q, h_p = torch.randn(1, 32), torch.randn(1, 3, 32)
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        logits, z = model.list_scores(h_q, h_p, mask)

    def features(a, b):
        parts = [a, b] + ([a * b, (a - b).abs()] if pair_features == "interaction" else [])
        return torch.cat(parts)

    def pair_mlp(mlp, a, b):
        return torch.relu(mlp.linear.weight @ features(a, b) + mlp.linear.bias)

    fused = model.mlp_fused
    for i in range(3):
        origin = pair_mlp(model.mlp_ori, h_q[0], h_p[0, i])
        listwise = pair_mlp(model.mlp_list, z[0, 0], z[0, 1 + i])
        expected = fused.weight[0] @ torch.cat([origin, listwise]) + fused.bias[0]
        assert logits[0, i].item() == pytest.approx(expected.item(), abs=1e-5)
    assert model.mlp_ori.linear.in_features == (2 if pair_features == "concat" else 4) * 32


def test_unknown_pair_features_is_a_config_error():
    with pytest.raises(ConfigError, match="pair_features"):
        tiny_reranker("listconranker", pair_features="product")


def test_freeze_embedding_model_for_the_first_stage():
    model = _model()
    model.freeze_embedding_model()
    assert model.config.freeze_embedding_model is True
    assert not any(p.requires_grad for p in model.embedder.parameters())
    model.train()
    out = model(**model.tokenizer([QUERY], [PASSAGES[:4]]))
    loss = model.compute_loss(out, torch.tensor([[1, 0, 1, 0]]), CircleLoss())
    loss.backward()
    assert all(p.grad is None for p in model.embedder.parameters())
    assert model.list_transformer[0].query.weight.grad.abs().sum() > 0
    assert model.query_type_embedding.grad is not None
    model.freeze_embedding_model(False)
    assert all(p.requires_grad for p in model.embedder.parameters())
    frozen_at_start = tiny_reranker("listconranker", freeze_embedding_model=True)
    assert not any(p.requires_grad for p in frozen_at_start.embedder.parameters())


def test_round_sizes_follow_algorithm_1():
    assert iterative_round_sizes(100, 0.2, 20) == [100, 80, 64, 51, 40, 32, 25, 20]
    assert iterative_round_sizes(20, 0.2, 20) == [20]
    assert iterative_round_sizes(21, 0.2, 20) == [21, 16]


def _algorithm_1(model, h_q, h_p, beta, theta):
    """Straight transcription of the paper's Algorithm 1: returns the final ranking (best first)."""
    remaining = list(range(h_p.shape[0]))
    tail = []  # filled from the bottom
    while len(remaining) > theta:
        logits, _ = model.list_scores(h_q[None], h_p[remaining][None], torch.ones(1, len(remaining), dtype=torch.bool))
        scores = logits[0].tolist()
        order = sorted(range(len(remaining)), key=lambda i: scores[i], reverse=True)
        nums = math.ceil(len(remaining) * beta)
        for i in range(1, nums + 1):
            tail.insert(0, remaining[order[-i]])
        remaining = [remaining[i] for i in order[:-nums]]
    logits, _ = model.list_scores(h_q[None], h_p[remaining][None], torch.ones(1, len(remaining), dtype=torch.bool))
    scores = logits[0].tolist()
    head = [remaining[i] for i in sorted(range(len(remaining)), key=lambda i: scores[i], reverse=True)]
    return head + tail


def test_iterative_scores_reproduce_algorithm_1_ranking():
    model = _model(stop_size=5, drop_rate=0.3)
    torch.manual_seed(0)
    h_q, h_p = torch.randn(32), torch.randn(17, 32)
    with torch.no_grad():
        scores = model.iterative_scores(h_q, h_p)
        expected = _algorithm_1(model, h_q, h_p, 0.3, 5)
    ranking = sorted(range(17), key=lambda i: scores[i], reverse=True)
    assert ranking == expected
    # integer part = rounds survived: 17 -> 11 -> 7 -> 4 (sizes), so 6, 4, 3 dropped, 4 kept
    rounds = [int(s) for s in scores]
    assert sorted(rounds) == [0] * 6 + [1] * 4 + [2] * 3 + [3] * 4


def test_score_without_iterations_is_the_one_shot_forward():
    model = _model(iterative_inference=False)
    passages = PASSAGES * 6  # 30 > θ: would iterate if enabled
    with torch.no_grad():
        one_shot = model(**model.tokenizer([QUERY], [passages])).scores[0]
    assert model.score(QUERY, passages, batch_size=7) == pytest.approx(one_shot.tolist(), abs=1e-5)
    iterative = _model().score(QUERY, passages)
    assert max(iterative) > 1.0  # survivors carry their round count


def test_config_validation():
    with pytest.raises(ConfigError, match="drop_rate"):
        tiny_reranker("listconranker", drop_rate=1.0)
    with pytest.raises(ConfigError, match="pooling"):
        tiny_reranker("listconranker", pooling="max")
    model = tiny_reranker("listconranker", list_layers=3, list_heads=4)
    assert len(model.list_transformer) == 3 and model.list_transformer[0].heads == 4
