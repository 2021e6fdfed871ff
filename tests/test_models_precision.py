"""Scores reach every loss in fp32, also in a bf16 run (issue 18, Part 1 item 6): a ColBERT
score near 25 moves in steps of 0.125 in bf16."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from rankdistill.losses import InfoNCE, PairDistillLoss
from rankdistill.models.maxsim import maxsim


class DtypeProbe(torch.nn.Module):
    """A real loss that also records the dtypes it was given."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss, self.seen = loss, []
        self.in_batch = getattr(loss, "in_batch", False)

    def forward(self, scores, targets, mask=None, **extra):
        self.seen.append((scores.dtype, *(v.dtype for v in extra.values() if v.is_floating_point()),
                          torch.is_autocast_enabled("cpu")))
        return self.loss(scores, targets, mask, **extra)


def test_bf16_spacing_near_25_is_what_the_issue_says():
    assert float(torch.tensor(25.0625, dtype=torch.bfloat16)) in (25.0, 25.125)
    assert float(torch.tensor(25.0625, dtype=torch.float32)) == 25.0625


def test_maxsim_sums_half_precision_maxima_in_fp32():
    # 32 query tokens each matching 0.78125 (exact in bf16) plus one matching 0.0078125:
    # fp32 sum 25.0078125; a bf16 sum would round it to 25.0
    q = torch.zeros(1, 33, 33)
    d = torch.zeros(1, 33, 33)
    for i in range(33):
        q[0, i, i] = 1.0
        d[0, i, i] = 0.78125 if i < 32 else 0.0078125
    ones = torch.ones(1, 33, dtype=torch.bool)
    score = maxsim(q.bfloat16(), ones, d.bfloat16(), ones)
    assert score.dtype == torch.float32 and float(score) == 25.0078125
    assert float(maxsim(q.bfloat16(), ones, d.bfloat16(), ones, paired=False)) == 25.0078125
    assert float(maxsim(q, ones, d, ones)) == 25.0078125  # fp32 unchanged


@pytest.mark.parametrize("name", ["bi-encoder", "colbert", "mono"])
def test_scores_reach_the_loss_in_fp32_under_bf16_autocast(name):
    model = tiny_reranker(name).train()
    batch = model.tokenizer([QUERY, "dogs"], [PASSAGES[:3], PASSAGES[2:5]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 0]])
    pairs = torch.full((2, 3, 3), float("nan"))
    pairs[:, 0, 1] = 0.7
    probe = DtypeProbe(PairDistillLoss(in_batch_negatives=name != "mono"))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(**batch)
        loss = model.compute_loss(out, torch.randn(2, 3), probe, labels=labels, pair_targets=pairs)
    # the model computes in bf16 (ColBERT's maxsim sums its maxima in fp32)
    assert out.scores.dtype == (torch.float32 if name == "colbert" else torch.bfloat16)
    assert probe.seen and all(dt == torch.float32 for seen in probe.seen for dt in seen[:-1])
    assert not any(seen[-1] for seen in probe.seen)  # the loss itself runs with autocast off
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # fp32 runs are untouched: the same loss value with and without the cast path
    plain = InfoNCE()
    with torch.no_grad():
        out = model(**batch)
        assert float(model.compute_loss(out, labels, plain)) == pytest.approx(
            float(plain(out.scores, labels, out.mask)), abs=1e-7)
