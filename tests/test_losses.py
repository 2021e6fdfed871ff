"""Every loss against a value worked out by hand on a tiny tensor, plus masking and the registry."""

from __future__ import annotations

import math

import pytest
import torch
from rankdistill.errors import ConfigError
from rankdistill.losses import (
    BCE,
    LOSSES,
    CircleLoss,
    DuplicateAwareInfoNCE,
    InfoNCE,
    KLDistillation,
    MarginMSE,
    NoveltyAwareRankNet,
    PairwiseKL,
    RankNet,
    get_loss,
    novelty_adjusted_relevance,
    pair_targets,
)
from rankdistill.training.augment import jaccard_distances, novelty_clusters


def sp(x: float) -> float:
    """softplus(x) = log(1 + e^x)"""
    return math.log1p(math.exp(x))


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def approx(value: torch.Tensor, expected: float, tol: float = 1e-5):
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, abs=tol)


# ---------------------------------------------------------------------------------------------
# InfoNCE / LCE
# ---------------------------------------------------------------------------------------------


def test_infonce_by_hand():
    # -log(e^2 / (e^2 + e^1 + e^0)) = log(1 + e^-1 + e^-2) = 0.40760596
    approx(InfoNCE()(t([2.0, 1.0, 0.0]), torch.tensor([0])), math.log(1 + math.exp(-1) + math.exp(-2)))
    approx(InfoNCE()(t([2.0, 1.0, 0.0]), t([1, 0, 0])), 0.40760596)
    # temperature 2: scores become (1, 0.5, 0): log(1 + e^-0.5 + e^-1)
    approx(InfoNCE(temperature=2.0)(t([2.0, 1.0, 0.0]), torch.tensor([0])), math.log(1 + math.exp(-0.5) + math.exp(-1)))
    # two positives share the numerator: -log((e^2 + e^1) / (e^2 + e^1 + e^0))
    approx(InfoNCE()(t([2.0, 1.0, 0.0]), t([1, 1, 0])), -math.log((math.e**2 + math.e) / (math.e**2 + math.e + 1)))


def test_infonce_mask_and_batch_mean():
    scores = t([2.0, 1.0, float("-inf")], [0.0, 3.0, 1.0])
    targets = t([1, 0, 0], [0, 0, 0])  # second query has no positive: left out
    approx(InfoNCE()(scores, targets), math.log(1 + math.exp(-1)))
    scores = t([2.0, 1.0, 5.0], [0.0, 0.0, 0.0])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # query 1: log(1 + e^-1); query 2: -log(1/3) = log 3
    approx(InfoNCE()(scores, t([1, 0, 0], [0, 1, 0]), mask), (math.log(1 + math.exp(-1)) + math.log(3)) / 2)


# ---------------------------------------------------------------------------------------------
# BCE
# ---------------------------------------------------------------------------------------------


def test_bce_by_hand():
    # -log σ(0) = log 2 = 0.693147 ; -log(1 - σ(2)) = softplus(2) = 2.126928 ; mean 1.410038
    approx(BCE()(t([0.0, 2.0]), t([1.0, 0.0])), (math.log(2) + sp(2)) / 2)
    # soft target 0.25 on logit 0: log 2 whatever the target
    approx(BCE()(t([0.0]), t([0.25])), math.log(2))
    # probabilities: -(log 0.8 + log(1 - 0.4)) / 2
    approx(BCE(from_probabilities=True)(t([0.8, 0.4]), t([1.0, 0.0])), -(math.log(0.8) + math.log(0.6)) / 2)
    # masked entry ignored even when it is -inf
    approx(BCE()(t([0.0, float("-inf")]), t([1.0, 1.0])), math.log(2))


# ---------------------------------------------------------------------------------------------
# RankNet
# ---------------------------------------------------------------------------------------------


def test_ranknet_from_teacher_ranks_by_hand():
    scores, ranks = t([3.0, 1.0, 2.0]), t([1, 2, 3])
    # pairs (better, worse): (0,1): sp(1-3)  (0,2): sp(2-3)  (1,2): sp(2-1)
    expected = sp(-2) + sp(-1) + sp(1)  # 0.126928 + 0.313262 + 1.313262 = 1.753452
    approx(RankNet()(scores, ranks), expected)
    approx(RankNet(reduction="mean")(scores, ranks), expected / 3)
    # relevance grades (larger = better) mean the opposite order
    approx(RankNet(targets_are_ranks=False)(scores, t([3, 2, 1])), expected)
    # ties are skipped; padding is ignored
    approx(RankNet()(t([3.0, 1.0, 2.0]), t([1, 1, 2])), sp(2 - 3) + sp(2 - 1))
    approx(RankNet()(t([3.0, 1.0, float("-inf")]), t([1, 2, 3])), sp(-2))


# ---------------------------------------------------------------------------------------------
# MarginMSE
# ---------------------------------------------------------------------------------------------


def test_margin_mse_by_hand():
    scores, teacher = t([3.0, 1.0, 2.0]), t([5.0, 4.0, 1.0])
    # first vs others: student (2, 1), teacher (1, 4): ((2-1)^2 + (1-4)^2) / 2 = 5
    approx(MarginMSE()(scores, teacher), 5.0)
    # all pairs i<j: (0,1): (2-1)^2=1  (0,2): (1-4)^2=9  (1,2): (-1-3)^2=16  -> 26/3
    approx(MarginMSE(pairs="all")(scores, teacher), 26 / 3)
    # padding: only the (0,1) margin remains
    approx(MarginMSE()(t([3.0, 1.0, float("-inf")]), teacher), 1.0)


# ---------------------------------------------------------------------------------------------
# listwise KL
# ---------------------------------------------------------------------------------------------


def test_listwise_kl_by_hand():
    # teacher uniform p = (.5, .5); student q = softmax(ln 3, 0) = (.75, .25)
    # KL = .5 ln(.5/.75) + .5 ln(.5/.25) = 0.14384104
    approx(KLDistillation()(t([math.log(3.0), 0.0]), t([0.0, 0.0])), 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2))
    # temperature 2 on teacher (0, 2 ln 3) and student (0, 0): p = (1/4, 3/4), q = (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    approx(KLDistillation(temperature=2.0)(t([0.0, 0.0]), t([0.0, 2 * math.log(3.0)])), expected)
    # identical distributions: 0, padding ignored
    approx(KLDistillation()(t([1.0, 2.0, float("-inf")]), t([1.0, 2.0, 9.0])), 0.0)


# ---------------------------------------------------------------------------------------------
# pairwise KL (PairDistill L_pair)
# ---------------------------------------------------------------------------------------------


def test_pairwise_kl_by_hand():
    q = 1 / (1 + math.exp(-1.0))  # student P(0 ≻ 1) = σ(1 - 0) = 0.7310586
    expected = 0.9 * math.log(0.9 / q) + 0.1 * math.log(0.1 / (1 - q))  # 0.0881837
    targets = pair_targets(2, [(0, 1)], [0.9])[None]
    approx(PairwiseKL()(t([1.0, 0.0]), targets), expected)
    # the same pair labelled the other way round: P(1 ≻ 0) = 0.1 gives the same KL
    approx(PairwiseKL()(t([1.0, 0.0]), pair_targets(2, [(1, 0)], [0.1])[None]), expected)
    # two pairs: + KL(1.0 || σ(0 - 2)) = -log σ(-2) = softplus(2); mean over the pairs (official
    # code, default) or summed over the pairs of the one query (|B| = 1, the paper's equation)
    targets = pair_targets(3, [(0, 1), (1, 2)], [0.9, 1.0])[None]
    approx(PairwiseKL()(t([1.0, 0.0, 2.0]), targets), (expected + sp(2.0)) / 2)
    approx(PairwiseKL("queries")(t([1.0, 0.0, 2.0]), targets), expected + sp(2.0))
    # pairs touching a padded passage are dropped
    approx(PairwiseKL()(t([1.0, 0.0, float("-inf")]), targets), expected)
    with pytest.raises(ValueError):
        pair_targets(2, [(1, 1)], [0.5])


# ---------------------------------------------------------------------------------------------
# DA-InfoNCE
# ---------------------------------------------------------------------------------------------


def test_duplicate_aware_infonce_by_hand():
    loss = DuplicateAwareInfoNCE()
    scores, targets = t([2.0, 1.0, 0.0]), torch.tensor([0])
    # InfoNCE 0.40760596 + sum_i BCE(logit 0) = 3 log 2
    value = loss(scores, targets, duplicate_logits=t([0.0, 0.0, 0.0]), duplicate_targets=t([0, 1, 1]))
    approx(value, 0.40760596 + 3 * math.log(2))
    # duplicate logits (-2, 3, 3): -log(1 - σ(-2)) - 2 log σ(3) = sp(-2) + 2 sp(-3)
    value = loss(scores, targets, duplicate_logits=t([-2.0, 3.0, 3.0]), duplicate_targets=t([0, 1, 1]))
    approx(value, 0.40760596 + sp(-2) + 2 * sp(-3))
    mean = DuplicateAwareInfoNCE(duplicate_reduction="mean", duplicate_weight=2.0)
    value = mean(scores, targets, duplicate_logits=t([-2.0, 3.0, 3.0]), duplicate_targets=t([0, 1, 1]))
    approx(value, 0.40760596 + 2 * (sp(-2) + 2 * sp(-3)) / 3)


# ---------------------------------------------------------------------------------------------
# NA-RankNet
# ---------------------------------------------------------------------------------------------


def test_novelty_aware_ranknet_by_hand():
    scores, ranks, clusters = t([3.0, 2.0, 1.0]), t([1, 2, 3]), torch.tensor([[0, 0, 1]])
    # relevance from ranks: (3, 2, 1). Passage 1 shares cluster 0 with passage 0, which the model
    # scores higher -> r̄ = (3, 0, 1). Pairs 1[r̄_i < r̄_j] log(1 + e^{s_i - s_j}):
    #   (i=1, j=0): sp(2-3)   (i=1, j=2): sp(2-1)   (i=2, j=0): sp(1-3)
    approx(NoveltyAwareRankNet()(scores, ranks, clusters=clusters), sp(-1) + sp(1) + sp(-2))
    # without near-duplicates it is plain RankNet
    singletons = torch.tensor([[0, 1, 2]])
    approx(NoveltyAwareRankNet()(scores, ranks, clusters=singletons), RankNet()(scores, ranks).item())
    approx(NoveltyAwareRankNet()(scores, ranks, clusters=-torch.ones(1, 3, dtype=torch.long)),
           RankNet()(scores, ranks).item())


def test_novelty_adjusted_relevance_by_hand():
    scores = t([1.0, 5.0, 3.0, 2.0])
    relevance = t([4.0, 3.0, 2.0, 1.0])
    clusters = torch.tensor([[7, 7, 7, 2]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    # cluster 7 = {0, 1, 2}: 1 is its top-scored member; 0 and 2 are beaten by 1 -> zeroed
    assert novelty_adjusted_relevance(scores, relevance, clusters, mask).tolist() == [[0.0, 3.0, 0.0, 1.0]]
    # a padded near-duplicate does not count
    mask = torch.tensor([[True, False, True, True]])
    assert novelty_adjusted_relevance(scores, relevance, clusters, mask).tolist() == [[0.0, 3.0, 2.0, 1.0]]


def test_novelty_clusters_by_word_jaccard():
    passages = [
        "the cat sat on the mat",       # words {the, cat, sat, on, mat}
        "the cat sat on a mat",         # {the, cat, sat, on, a, mat}: J = 5/6 with 0
        "dogs bark at night",
        "dogs bark at noon",            # J = 3/5 = 0.6 > 0.5 with 2
        "dogs bark",                    # J = 2/4 with 2 and 3 -> not > 0.5: alone
    ]
    assert novelty_clusters(passages) == [0, 0, 1, 1, 2]
    d = jaccard_distances(passages)
    assert d[0][1] == pytest.approx(1 - 5 / 6) and d[2][4] == pytest.approx(0.5)
    assert novelty_clusters([]) == []


def test_novelty_clusters_match_scikit_learn():
    sklearn = pytest.importorskip("sklearn.cluster")
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(12)]
    passages = [" ".join(rng.sample(vocab, rng.randint(3, 8))) for _ in range(25)]
    ours = novelty_clusters(passages)
    ref = sklearn.AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="complete", distance_threshold=0.5
    ).fit_predict(jaccard_distances(passages))
    same = lambda labels: {(i, j) for i in range(25) for j in range(25) if labels[i] == labels[j]}
    assert same(ours) == same(list(ref))


# ---------------------------------------------------------------------------------------------
# circle loss
# ---------------------------------------------------------------------------------------------


def test_circle_loss_by_hand():
    # γ = 10, m = 0.25: Δp = .75, Δn = .25, Op = 1.25, On = -.25
    # α_p = 1.25 - .8 = .45 ; α_n = (.3 + .25, .6 + .25) = (.55, .85)
    # r_pos = exp(-10 * .45 * (.8 - .75)) = e^-0.225
    # r_neg = exp(10 * .55 * (.3 - .25)) + exp(10 * .85 * (.6 - .25)) = e^0.275 + e^2.975
    # L = log(1 + r_neg r_pos) = log(1 + e^0.05 + e^2.75) = 2.87322
    loss = CircleLoss(gamma=10, margin=0.25)
    approx(loss(t([0.8, 0.3, 0.6]), t([1, 0, 0])), math.log(1 + math.exp(0.05) + math.exp(2.75)))
    # paper defaults γ = 10, m = 0.1 on one pair: α_p = 1.1 - .9 = .2, α_n = .2 + .1 = .3
    # L = log(1 + exp(10 * .3 * (.2 - .1)) * exp(-10 * .2 * (.9 - .9))) = log(1 + e^0.3)
    approx(CircleLoss()(t([0.9, 0.2]), t([1, 0])), sp(0.3))
    # a positive beyond O_pos and a negative below O_neg give weight 0: loss log 2
    approx(CircleLoss(margin=0.1)(t([1.2, -0.2]), t([1, 0])), math.log(2))
    # no negative (or padding only): nothing to contrast
    approx(CircleLoss()(t([0.9, float("-inf")]), t([1, 0])), 0.0)


def test_circle_loss_weights_are_detached_by_default():
    scores = t([0.8, 0.3, 0.6]).requires_grad_()
    CircleLoss(gamma=10, margin=0.25)(scores, t([1, 0, 0])).backward()
    # d/ds_p with α_p constant: -γ α_p * r_pos r_neg / (1 + r_pos r_neg)
    total = math.exp(0.05) + math.exp(2.75)
    assert scores.grad[0, 0].item() == pytest.approx(-10 * 0.45 * total / (1 + total), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# common behaviour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_with_padding_and_has_gradients(name):
    torch.manual_seed(0)
    scores = torch.randn(3, 5).masked_fill(torch.tensor([[0, 0, 0, 1, 1]] * 3, dtype=torch.bool), float("-inf"))
    scores = scores.clone().requires_grad_()
    mask = torch.isfinite(scores.detach())
    loss = get_loss(name)
    kwargs = {}
    if name in ("ranknet", "na_ranknet"):
        targets = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]] * 3)
    elif name in ("margin_mse", "kl", "pairdistill", "pairdistill_zs", "window_kl"):
        targets = torch.randn(3, 5)
    elif name == "pairwise_kl":
        targets = pair_targets(5, [(0, 1), (1, 2), (0, 3)], [0.8, 0.3, 0.9])[None].repeat(3, 1, 1)
    elif name == "circle":
        targets = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]] * 3)
    else:
        targets = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]] * 3)
    if name == "da_infonce":
        kwargs = {"duplicate_logits": torch.randn(3, 5), "duplicate_targets": torch.tensor([[0, 1, 1, 0, 0]] * 3)}
    if name == "na_ranknet":
        kwargs = {"clusters": torch.tensor([[0, 0, 1, 2, 3]] * 3)}
    if name.startswith("pairdistill"):
        kwargs = {"pair_targets": pair_targets(5, [(0, 1), (1, 2), (0, 3)], [0.8, 0.3, 0.9])[None].repeat(3, 1, 1)}
        if name == "pairdistill":  # labels for L_CL, and in-batch scores as a dense student gives them
            kwargs |= {"labels": torch.tensor([0, 1, 2]), "in_batch_scores": scores.reshape(1, 15).expand(3, 15)}
    value = loss(scores, targets, mask, **kwargs) if name != "pairwise_kl" else loss(scores, targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[:, 3:].abs().sum() == 0  # padding gets no gradient
    assert scores.grad[:, :3].abs().sum() > 0


def test_registry_and_errors():
    assert get_loss("LCE").__class__ is InfoNCE
    assert get_loss("margin-mse").pairs == "first"
    assert get_loss("circle", gamma=5).gamma == 5
    with pytest.raises(ConfigError, match="unknown loss"):
        get_loss("listmle")
    with pytest.raises(ConfigError, match="bad options"):
        get_loss("ranknet", temperature=2)
    with pytest.raises(ValueError):
        RankNet()(t([1.0, 2.0]), t([1.0, 2.0, 3.0]))
    # nothing to learn from: a differentiable zero
    zero = InfoNCE()(t([1.0, 2.0]).requires_grad_(), t([0.0, 0.0]))
    assert zero.item() == 0.0 and zero.requires_grad
