"""PairDistill losses: hand-computed values on a tiny batch, and equality with a per-query,
per-pair loop written exactly as the paper's equations read (../shared/papers/pairdistill.md)."""

from __future__ import annotations

import math

import pytest
import torch
from rankdistill.losses import InfoNCE, KLDistillation, PairDistillLoss, PairDistillZSLoss, get_loss

NAN = float("nan")


def test_hand_computed_tiny_batch():
    # P = softmax(ln 3, 0) = (.75, .25); P_point = softmax(0, 0) = (.5, .5); P_pair(0 ≻ 1) = .9
    scores = torch.tensor([[math.log(3.0), 0.0]])
    targets = torch.tensor([[0.0, 0.0]])
    pairs = torch.tensor([[[NAN, 0.9], [NAN, NAN]]])
    l_cl = -math.log(0.75)
    l_kd = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    l_pair = 0.9 * math.log(0.9 / 0.75) + 0.1 * math.log(0.1 / 0.25)
    assert (l_cl, l_kd, l_pair) == pytest.approx((0.2876821, 0.1438410, 0.0724603), abs=1e-6)
    full = PairDistillLoss(lambda_kd=1.0, lambda_pair=30.0, in_batch_negatives=False)
    value = full(scores, targets, labels=torch.tensor([0]), pair_targets=pairs)
    assert float(value) == pytest.approx(l_cl + l_kd + 30 * l_pair, abs=1e-5)
    assert full.last_components == pytest.approx({"l_cl": l_cl, "l_kd": l_kd, "l_pair": l_pair}, abs=1e-6)
    zs = PairDistillZSLoss(lambda_kd=2.0, lambda_pair=3.0)
    assert float(zs(scores, targets, pair_targets=pairs)) == pytest.approx(2 * l_kd + 3 * l_pair, abs=1e-5)
    assert "l_cl" not in zs.last_components and not zs.in_batch


def test_in_batch_negatives_hand_computed():
    # B = 2, k = 1: each query's list is only its positive, so without in-batch negatives L_CL = 0;
    # with them, query 0 sees (ln 3 vs 0) -> -log(3/4), query 1 sees (ln 2 vs ln 2) -> log 2
    scores = torch.tensor([[math.log(3.0)], [math.log(2.0)]])
    in_batch = torch.tensor([[math.log(3.0), 0.0], [math.log(2.0), math.log(2.0)]])
    labels = torch.tensor([0, 0])
    assert float(InfoNCE()(scores, labels)) == pytest.approx(0.0, abs=1e-7)
    ib = InfoNCE(in_batch_negatives=True)
    assert ib.in_batch
    expected = (-math.log(3 / 4) + math.log(2)) / 2
    assert float(ib(scores, labels, in_batch_scores=in_batch)) == pytest.approx(expected, abs=1e-6)
    # a padded slot of the other query is not a negative
    mask = torch.tensor([[True, False], [True, True]])
    assert float(ib(scores, labels, in_batch_scores=in_batch, in_batch_mask=mask)) == pytest.approx(
        (0.0 + math.log(2)) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="in_batch_scores"):
        ib(scores, labels)


def test_kd_temperature_applies_to_the_teacher_only_as_in_the_paper():
    # τ = 2: P_point = softmax((0, 2 ln 3) / 2) = (.25, .75); student P = softmax(0, ln 3) = (.25, .75)
    scores = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.tensor([[0.0, 2 * math.log(3.0)]])
    assert float(KLDistillation(2.0, student_temperature=1.0)(scores, teacher)) == pytest.approx(0.0, abs=1e-7)
    loss = PairDistillZSLoss(lambda_kd=1.0, lambda_pair=0.0, temperature=2.0)
    assert float(loss(scores, teacher)) == pytest.approx(0.0, abs=1e-7)
    assert float(KLDistillation(2.0)(scores, teacher)) > 0.01  # Hinton-style τ on both differs


def _paper_loop(scores, teacher, labels, pairs, mask, in_batch, in_batch_mask, lambda_kd, lambda_pair, tau):
    """The paper's equations with plain Python loops (one query, one passage, one pair at a time)."""
    batch, k = len(scores), len(scores[0])
    l_cl = l_kd = l_pair = 0.0
    n_cl = 0
    for b in range(batch):
        real = [i for i in range(k) if mask[b][i]]
        # L_CL = -log exp(s(q, d+)) / sum_{d in D'} exp(s(q, d)); D' = own list + other queries' passages
        pos = [i for i in real if labels[b][i] > 0]
        if pos:
            denominator = sum(math.exp(scores[b][i]) for i in real)
            for c in range(batch):
                if c != b:
                    denominator += sum(math.exp(in_batch[b][c * k + j]) for j in range(k) if in_batch_mask[b][c * k + j])
            l_cl += -math.log(math.exp(scores[b][pos[0]]) / denominator)
            n_cl += 1
        # L_KD: KL(P_point(d|q) || P(d|q)) over the passages with a teacher score
        kd = [i for i in real if not math.isnan(teacher[b][i])]
        z_point = sum(math.exp(teacher[b][i] / tau) for i in kd)
        z = sum(math.exp(scores[b][i]) for i in kd)
        for i in kd:
            p_point = math.exp(teacher[b][i] / tau) / z_point
            p = math.exp(scores[b][i]) / z
            l_kd += p_point * math.log(p_point / p)
        # L_pair: sum over sampled pairs of KL(P_pair(d_i ≻ d_j) || P(d_i ≻ d_j))
        for i in real:
            for j in real:
                if i == j or math.isnan(pairs[b][i][j]):
                    continue
                t = pairs[b][i][j]
                p = math.exp(scores[b][i]) / (math.exp(scores[b][i]) + math.exp(scores[b][j]))
                kl = (t * math.log(t / p) if t > 0 else 0.0) + ((1 - t) * math.log((1 - t) / (1 - p)) if t < 1 else 0.0)
                l_pair += kl
    return l_cl / n_cl + lambda_kd * l_kd / batch + lambda_pair * l_pair / batch


def test_vectorised_loss_equals_the_paper_loop():
    g = torch.Generator().manual_seed(7)
    batch, k = 4, 6
    scores = torch.randn(batch, k, generator=g, dtype=torch.float64) * 2
    mask = torch.ones(batch, k, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 5] = False
    scores = scores.masked_fill(~mask, float("-inf"))
    teacher = torch.randn(batch, k, generator=g, dtype=torch.float64) * 3
    teacher[2, 1] = NAN  # a passage without a teacher score
    labels = torch.zeros(batch, k)
    labels[:, 0] = 1
    in_batch = torch.randn(batch, batch * k, generator=g, dtype=torch.float64)
    in_batch_mask = mask.reshape(1, -1).expand(batch, -1).clone()
    for b in range(batch):  # the own block equals the own scores, as a dense student produces
        in_batch[b, b * k : (b + 1) * k] = scores[b]
    in_batch = in_batch.masked_fill(~in_batch_mask, float("-inf"))
    pairs = torch.full((batch, k, k), NAN, dtype=torch.float64)
    for b in range(batch):  # |i - j| < δ = 3, one entry per unordered pair, incl. 0 and 1
        for i in range(k):
            for j in range(i + 1, min(k, i + 3)):
                pairs[b, i, j] = float(torch.rand((), generator=g, dtype=torch.float64))
    pairs[0, 0, 1], pairs[0, 1, 2] = 1.0, 0.0
    for lambda_kd, lambda_pair, tau in [(1.0, 30.0, 1.0), (0.5, 3.0, 2.0)]:
        loss = PairDistillLoss(lambda_kd=lambda_kd, lambda_pair=lambda_pair, temperature=tau, pair_reduction="queries")
        value = loss(scores, teacher, mask, labels=labels, pair_targets=pairs,
                     in_batch_scores=in_batch, in_batch_mask=in_batch_mask)
        expected = _paper_loop(scores.tolist(), teacher.tolist(), labels.tolist(), pairs.tolist(), mask.tolist(),
                               in_batch.tolist(), in_batch_mask.tolist(), lambda_kd, lambda_pair, tau)
        assert float(value) == pytest.approx(expected, rel=1e-9)


def _official_pair_loss(scores: torch.Tensor, pair_lists: list[list[tuple[int, int, float]]]) -> float:
    """L_pair as the official code computes it (MiuLab/PairDistill ``pair_distill_loss``): for
    each sampled pair a ``KLDivLoss(reduction="batchmean")`` between the target ``[p, 1 - p]``
    and ``log_softmax(scores[b, [i, j]])``, summed, divided by the number of pairs."""
    kl_div = torch.nn.KLDivLoss(reduction="batchmean", log_target=False)
    total, count = 0.0, 0
    for b, pairs in enumerate(pair_lists):
        for i, j, p in pairs:
            student = torch.log_softmax(scores[b, [i, j]], dim=-1).unsqueeze(0)
            total += float(kl_div(student, torch.tensor([[p, 1.0 - p]], dtype=scores.dtype)))
            count += 1
    return total / count


def test_pair_reductions_match_the_official_per_pair_loop():
    # B = 3, k = 8; 7, 5 and 3 sampled pairs (|i - j| < 4), P_pair fixed by hand
    scores = torch.tensor([[2.0, 1.5, 1.0, 0.2, -0.3, -1.0, 0.7, 0.0],
                           [0.5, 0.4, -0.2, 1.1, 0.0, -0.5, -2.0, 0.3],
                           [3.0, -1.0, 0.0, 0.5, 1.0, 2.0, -0.5, 0.1]], dtype=torch.float64)
    pair_lists = [
        [(0, 1, 0.9), (0, 3, 0.7), (1, 2, 0.6), (2, 4, 0.2), (3, 5, 1.0), (4, 6, 0.0), (5, 7, 0.35)],
        [(0, 2, 0.8), (1, 3, 0.3), (2, 5, 0.55), (4, 6, 0.95), (5, 7, 0.1)],
        [(0, 1, 0.99), (3, 4, 0.4), (5, 6, 0.75)],
    ]
    targets = torch.full((3, 8, 8), NAN, dtype=torch.float64)
    for b, pairs in enumerate(pair_lists):
        for i, j, p in pairs:
            targets[b, i, j] = p
    official = _official_pair_loss(scores, pair_lists)  # mean over the 15 pairs
    per_pair_sum = official * 15
    pairs_mean = PairDistillZSLoss(lambda_kd=0.0, lambda_pair=1.0)  # default reduction: pairs
    assert float(pairs_mean(scores, torch.zeros(3, 8), pair_targets=targets)) == pytest.approx(official, abs=1e-6)
    assert pairs_mean.last_components["l_pair"] == pytest.approx(official, abs=1e-6)
    queries = PairDistillZSLoss(lambda_kd=0.0, lambda_pair=1.0, pair_reduction="queries")
    assert float(queries(scores, torch.zeros(3, 8), pair_targets=targets)) == pytest.approx(per_pair_sum / 3, abs=1e-6)
    # |B| counts a query without pairs too (the paper divides by the batch size)
    none = torch.full((1, 8, 8), NAN, dtype=torch.float64)
    padded = torch.cat([scores, torch.zeros(1, 8, dtype=torch.float64)]), torch.cat([targets, none])
    assert float(queries(padded[0], torch.zeros(4, 8), pair_targets=padded[1])) == pytest.approx(
        per_pair_sum / 4, abs=1e-6)
    assert float(pairs_mean(padded[0], torch.zeros(4, 8), pair_targets=padded[1])) == pytest.approx(
        official, abs=1e-6)
    # one pair by hand: KL([.9, .1] || softmax(2, 1.5)) = .9 log(.9/σ(.5)) + .1 log(.1/σ(-.5))
    sig = 1 / (1 + math.exp(-0.5))
    assert _official_pair_loss(scores, [[(0, 1, 0.9)]]) == pytest.approx(
        0.9 * math.log(0.9 / sig) + 0.1 * math.log(0.1 / (1 - sig)), abs=1e-9)
    with pytest.raises(ValueError, match="pair_reduction"):
        PairDistillLoss(pair_reduction="query")


def test_defaults_are_the_official_weights():
    loss = PairDistillLoss()
    assert (loss.lambda_kd, loss.lambda_pair, loss.pair_loss.reduction) == (1.0, 3.0, "pairs")
    assert PairDistillZSLoss().lambda_pair == 3.0


def test_gradients_flow_and_registry():
    scores = torch.randn(2, 3, requires_grad=True)
    loss = get_loss("pairdistill", lambda_pair=3.0, in_batch_negatives=False)
    assert isinstance(loss, PairDistillLoss) and loss.lambda_pair == 3.0
    pairs = torch.full((2, 3, 3), NAN)
    pairs[:, 0, 1] = 0.8
    value = loss(scores, torch.randn(2, 3), labels=torch.tensor([0, 2]), pair_targets=pairs)
    value.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
    assert isinstance(get_loss("pairdistill-zs"), PairDistillZSLoss)
    with pytest.raises(ValueError, match="labels"):
        PairDistillLoss(in_batch_negatives=False)(scores, torch.zeros(2, 3), pair_targets=pairs)
    with pytest.raises(ValueError, match="pair_targets"):
        PairDistillZSLoss()(scores, torch.zeros(2, 3))


def test_dense_student_routes_in_batch_scores_to_the_loss():
    from model_fixtures import PASSAGES, QUERY, tiny_reranker

    model = tiny_reranker("bi-encoder", pooling="mean", similarity="dot")
    batch = model.tokenizer([QUERY, "dogs"], [PASSAGES[:3], PASSAGES[2:4]])
    out = model(**batch)
    labels = torch.tensor([[1, 0, 0], [0, 1, 0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    pairs = torch.full((2, 3, 3), NAN)
    pairs[:, 0, 1] = 0.7
    loss_fn = PairDistillLoss()
    routed = model.compute_loss(out, teacher, loss_fn, labels=labels, pair_targets=pairs)
    direct = loss_fn(out.scores, teacher, out.mask, labels=labels, pair_targets=pairs,
                     in_batch_scores=out.in_batch_scores, in_batch_mask=out.in_batch_mask)
    own_only = PairDistillLoss(in_batch_negatives=False)(out.scores, teacher, out.mask, labels=labels,
                                                         pair_targets=pairs)
    assert float(routed.detach()) == pytest.approx(float(direct.detach()), abs=1e-6)
    assert float(routed.detach()) > float(own_only.detach())  # the in-batch negatives enlarge L_CL's denominator
    routed.backward()
