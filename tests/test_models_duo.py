"""duo cross-encoder: [CLS] q [SEP] a [SEP] b [SEP] layout, P(a ≻ b), aggregations."""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from rankdistill.errors import ConfigError
from rankdistill.models import aggregate_pairs


def test_pair_layout_and_token_types():
    model = tiny_reranker("duo")
    tok = model.tokenizer.tokenizer
    batch = model.tokenizer([QUERY], [[("cats purr", "dogs bark")]])
    q = tok(QUERY, add_special_tokens=False)["input_ids"]
    a = tok("cats purr", add_special_tokens=False)["input_ids"]
    b = tok("dogs bark", add_special_tokens=False)["input_ids"]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert batch["input_ids"][0, 0].tolist() == [cls, *q, sep, *a, sep, *b, sep]
    assert batch["token_type_ids"][0, 0].tolist() == [0] * (len(q) + 2) + [1] * (len(a) + len(b) + 2)
    assert batch["pair_mask"].tolist() == [[True]]


def test_pair_probabilities_are_sigmoid_of_the_classifier():
    model = tiny_reranker("duo")
    pairs = [(PASSAGES[0], PASSAGES[1]), (PASSAGES[1], PASSAGES[0]), (PASSAGES[2], PASSAGES[3])]
    probs = model.pair_probabilities(QUERY, pairs, batch_size=2)
    batch = model.tokenizer([QUERY], [pairs])
    with torch.no_grad():
        logits = model.model(
            input_ids=batch["input_ids"][0], attention_mask=batch["attention_mask"][0],
            token_type_ids=batch["token_type_ids"][0],
        ).logits.squeeze(-1)
    assert probs == pytest.approx(torch.sigmoid(logits).tolist(), abs=1e-6)
    assert all(0 < p < 1 for p in probs)
    assert probs[0] != pytest.approx(probs[1])  # order of (a, b) matters


def test_pair_probabilities_stay_fp32_when_the_model_runs_in_bf16():
    """A bf16 model's pair probabilities are the fp32 sigmoid of its bf16 logits: a bf16 sigmoid
    near 0.5 only takes values k / 256, which made a weak duo's served scores tie."""
    model = tiny_reranker("duo").to(torch.bfloat16)
    pairs = [(PASSAGES[0], PASSAGES[1]), (PASSAGES[1], PASSAGES[0]), (PASSAGES[2], PASSAGES[3])]
    batch = model.tokenizer([QUERY], [pairs])
    with torch.no_grad():
        out = model(**batch)
    assert out.scores.dtype == torch.bfloat16 and out.probabilities.dtype == torch.float32
    expected = [1 / (1 + math.exp(-float(x))) for x in out.scores[0].float()]
    assert out.probabilities[0].tolist() == pytest.approx(expected, abs=1e-6)
    off_grid = [p for p in out.probabilities[0].tolist() if abs(p * 256 - round(p * 256)) > 1e-3]
    assert off_grid  # not on bf16's 1/256 grid


def test_aggregations_by_hand():
    prob = torch.tensor([[0.0, 0.9, 0.6], [0.2, 0.0, 0.4], [0.3, 0.7, 0.0]])  # prob[i, j] = P(i ≻ j)
    assert aggregate_pairs(prob, "sum").tolist() == pytest.approx([1.5, 0.6, 1.0])
    # sym_sum: sum_j P(i≻j) + (1 - P(j≻i)):  i=0: 1.5 + (0.8 + 0.7) ; i=1: 0.6 + (0.1 + 0.3) ; i=2: 1.0 + (0.4 + 0.6)
    assert aggregate_pairs(prob, "sym_sum").tolist() == pytest.approx([3.0, 1.0, 2.0])
    assert aggregate_pairs(prob, "binary").tolist() == [2.0, 0.0, 1.0]
    assert aggregate_pairs(prob, "min").tolist() == pytest.approx([0.6, 0.2, 0.3])
    assert aggregate_pairs(prob, "max").tolist() == pytest.approx([0.9, 0.4, 0.7])


def test_score_aggregates_all_ordered_pairs():
    model = tiny_reranker("duo", aggregation="sym_sum")
    passages = PASSAGES[:3]
    scores = model.score(QUERY, passages)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    values = model.pair_probabilities(QUERY, [(passages[i], passages[j]) for i, j in pairs])
    prob = torch.zeros(3, 3)
    for (i, j), p in zip(pairs, values):
        prob[i, j] = p
    assert scores == pytest.approx(aggregate_pairs(prob, "sym_sum").tolist(), abs=1e-6)
    assert model.score(QUERY, [PASSAGES[0]]) == [0.0]


def test_bad_aggregation_is_a_config_error():
    with pytest.raises(ConfigError, match="aggregation"):
        tiny_reranker("duo", aggregation="mean")


def test_pair_rows_train_a_duo_with_bce_on_its_pair_logits():
    from rankdistill.losses import BCE
    from rankdistill.training.examples import pair_rows
    from rankdistill.training.loop import collate

    model = tiny_reranker("duo")
    row = {"qid": "q", "query": QUERY, "docids": ["a", "b", "c"], "texts": PASSAGES[:3], "targets": [1.0, 0.0, 0.0]}
    rows = pair_rows([row])
    batch, targets, _ = collate(model, rows, (), "cpu")
    assert batch["pair_mask"].shape == (1, 4) and targets.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    output = model(**batch)
    loss = model.compute_loss(output, targets, BCE())
    probs = [model.pair_probabilities(QUERY, [tuple(t)])[0] for t in rows[0]["texts"]]
    expected = -sum(math.log(p) if y else math.log(1 - p) for p, y in zip(probs, [1, 0, 1, 0])) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)
