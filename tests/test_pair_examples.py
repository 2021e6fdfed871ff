"""PairDistill examples from the label store: pointwise [B, k] and pairwise [B, k, k] targets,
listwise permutations as pairs, the Ray Data path equal to the driver path, collate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from rankdistill.data.records import Document, Query
from rankdistill.errors import ConfigError
from rankdistill.training.examples import ExamplesConfig, examples_from_labels
from rankdistill.training.loop import collate
from rankdistill.training.pair_examples import (
    EXTRA_FIELDS,
    PairExamplesConfig,
    build_pair_example,
    pair_example_dataset,
    pair_examples_from_store,
)

CORPUS = {d: Document(d, f"text of {d}") for d in ["a", "b", "c", "d", "e", "pos"]}
TEXTS = {d: doc.contents for d, doc in CORPUS.items()}
QUERIES = {"q1": Query("q1", "first query"), "q2": Query("q2", "second query"), "q3": Query("q3", "third")}


def pointwise_row(qid, docid, score, rank=1):
    """``score`` = log P(yes | {yes, no}) < 0; the raw log-probabilities consistent with it."""
    return {"teacher": "mono", "template_id": "yn", "template_hash": "h1", "qid": qid, "docid": docid,
            "rank": rank, "score": score, "logprob_yes": score - 0.5, "logprob_no": math.log1p(-math.exp(score)) - 0.5}


def logit(log_p: float) -> float:
    """log p − log(1 − p): the log-odds a yes/no teacher's KD target is."""
    return log_p - math.log1p(-math.exp(log_p))


def pairwise_row(qid, a, b, p):
    return {"teacher": "duo", "template_id": "ab", "template_hash": "h2", "qid": qid, "docid_a": a, "docid_b": b,
            "rank_a": 1, "rank_b": 2, "logprob_a_wins": math.log(p), "p_a_wins": p, "seed": 0}


def listwise_row(qid, ranking, window=0):
    return {"teacher": "llm", "template_id": "rz", "template_hash": "h3", "qid": qid, "list_key": "k",
            "pass_index": 0, "window_index": window, "start": 0, "end": len(ranking), "window_size": 20,
            "stride": 10, "docids_in": ranking, "ranking_out": ranking, "response": "", "repair": "ok",
            "n_out_of_range": 0, "n_repeats": 0, "n_missing": 0, "ranking_after": ranking}


def test_build_example_order_targets_and_pairs_by_hand():
    config = PairExamplesConfig(label_store="unused", pairwise_teacher="duo", passages_per_query=4)
    row = build_pair_example(
        "q1", "first query", TEXTS, config,
        pointwise=[("c", -0.5), ("a", -2.0), ("b", -0.1), ("missing", 5.0)],
        pairwise=[("a", "b", 0.2), ("b", "a", 0.6), ("c", "d", 0.9), ("a", "e", 0.7)],
        judged={"c": 1},
    )
    # pointwise-reranked order b (-0.1), c (-0.5), a (-2.0); then d, e from the pairs; cut to k = 4
    assert row["docids"] == ["b", "c", "a", "d"]
    assert row["targets"][:3] == [-0.1, -0.5, -2.0] and math.isnan(row["targets"][3])
    assert row["labels"] == [0, 1, 0, 0]
    # (a, b) at positions (2, 0): P(b ≻ a) = 1 - .2 = .8 and, from (b, a), .6 -> mean .7 at (0, 2);
    # (c, d) -> (1, 3) .9; (a, e) dropped: e was cut
    assert list(zip(row["pair_i"], row["pair_j"])) == [(0, 2), (1, 3)]
    assert row["pair_p"] == pytest.approx([0.7, 0.9])


def test_listwise_permutation_becomes_pairs_within_delta_and_positive_is_added():
    config = PairExamplesConfig(label_store="unused", listwise_teacher="llm", passages_per_query=4, listwise_delta=2)
    row = build_pair_example("q1", "first query", TEXTS, config, ranking=["c", "a", "b", "d"],
                             judged={"pos": 2, "a": 0})
    # δ = 2: only neighbours in the teacher ranking; the positive replaces the last slot (d)
    assert row["docids"] == ["c", "a", "b", "pos"] and row["labels"] == [0, 0, 0, 2]
    assert all(math.isnan(t) for t in row["targets"])
    assert list(zip(row["pair_i"], row["pair_j"], row["pair_p"])) == [(0, 1, 1.0), (1, 2, 1.0)]
    everything = build_pair_example("q1", "q", TEXTS, PairExamplesConfig(label_store="x", listwise_teacher="llm"),
                                    ranking=["b", "a", "c"])
    # all pairs; position order b, a, c (the ranking's); the better one always first here
    assert list(zip(everything["pair_i"], everything["pair_j"], everything["pair_p"])) == [
        (0, 1, 1.0), (0, 2, 1.0), (1, 2, 1.0)]
    assert build_pair_example("q1", "q", TEXTS, config, ranking=["a"]) is None
    with pytest.raises(ConfigError, match="pairwise_teacher"):
        PairExamplesConfig(label_store="x")


def _store(tmp_path: Path):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp_path / "labels")
    store.write("pointwise", [pointwise_row("q1", d, s) for d, s in [("a", -1.0), ("b", -0.2), ("c", -3.0)]]
                + [pointwise_row("q2", d, s) for d, s in [("d", -0.3), ("e", -0.4)]]
                + [pointwise_row("q1", "a", -0.05, rank=2)] * 0)
    store.write("pairwise", [pairwise_row("q1", "b", "a", 0.8), pairwise_row("q1", "a", "c", 0.65),
                             pairwise_row("q2", "d", "e", 0.3)])
    store.write("pairwise", [pairwise_row("q1", "b", "a", 0.1)])  # a later duplicate: the first one wins
    store.write("pointwise", [pointwise_row("q9", "a", -0.1), pointwise_row("q9", "b", -0.5)])  # unknown query
    return store


def test_examples_from_the_store_and_through_examples_from_labels(tmp_path: Path):
    _store(tmp_path)
    config = PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="mono",
                                pairwise_teacher="duo", pairwise_template="ab", passages_per_query=8)
    rows = pair_examples_from_store(QUERIES, CORPUS, config, qrels={"q1": {"a": 1}})
    assert [r["qid"] for r in rows] == ["q1", "q2"]
    q1 = rows[0]
    assert q1["docids"] == ["b", "a", "c"] and q1["labels"] == [0, 1, 0]
    # the KD target is the raw teacher score logprob_yes − logprob_no (the log-odds), not log P(yes)
    assert q1["targets"] == pytest.approx([logit(-0.2), logit(-1.0), logit(-3.0)], abs=1e-9)
    assert q1["targets"] == pytest.approx([1.5078, -0.5413, -2.9489], abs=1e-4)
    old = pair_examples_from_store(QUERIES, CORPUS, PairExamplesConfig(
        label_store=str(tmp_path / "labels"), pointwise_teacher="mono", pairwise_teacher="duo",
        passages_per_query=8, kd_target="log_p_yes"))
    assert old[0]["targets"] == [-0.2, -1.0, -3.0]
    assert list(zip(q1["pair_i"], q1["pair_j"])) == [(0, 1), (1, 2)] and q1["pair_p"] == pytest.approx([0.8, 0.65])
    via = examples_from_labels(QUERIES, CORPUS, ExamplesConfig(
        source="labels", label_store=str(tmp_path / "labels"), label_kind="pairwise", teacher="duo",
        pointwise_teacher="mono", passages_per_query=8))
    assert sorted((r["qid"], r["docids"], r["pair_p"]) for r in via) == sorted(
        (r["qid"], r["docids"], r["pair_p"]) for r in pair_examples_from_store(
            QUERIES, CORPUS, PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="mono",
                                                pairwise_teacher="duo", passages_per_query=8)))


@pytest.mark.slow
def test_ray_data_examples_equal_the_driver_examples(tmp_path: Path, local_ray):
    store = _store(tmp_path)
    store.write("listwise", [listwise_row("q3", ["e", "d", "c"], 0), listwise_row("q3", ["c", "e", "d"], 1)])
    config = PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="mono",
                                pairwise_teacher="duo", listwise_teacher="llm", passages_per_query=8)
    qrels = {"q1": {"a": 1}, "q2": {"pos": 1}}
    expected = pair_examples_from_store(QUERIES, CORPUS, config, qrels)
    ds = pair_example_dataset(QUERIES, CORPUS, config, qrels, queries_per_task=2)  # two Ray tasks
    got = sorted(ds.materialize().take_all(), key=lambda r: r["qid"])
    assert [r["qid"] for r in got] == ["q1", "q2", "q3"]
    q3 = got[2]
    assert list(q3["docids"]) == ["c", "e", "d"]  # the last window's ranking
    for ours, theirs in zip(got, expected, strict=True):
        for key, value in theirs.items():
            if key == "targets":
                assert [None if math.isnan(v) else v for v in ours[key]] == [None if math.isnan(v) else v for v in value]
            else:
                assert list(ours[key]) == list(value), key


def test_collate_builds_pair_targets_and_the_pairdistill_loss_trains_a_bi_encoder():
    from model_fixtures import tiny_reranker
    from rankdistill.losses import PairDistillLoss

    config = PairExamplesConfig(label_store="unused", pointwise_teacher="mono", pairwise_teacher="duo")
    rows = [
        build_pair_example("q1", "first", TEXTS, config, pointwise=[("a", 1.0), ("b", 0.0), ("c", -1.0)],
                           pairwise=[("a", "b", 0.9), ("c", "b", 0.3)], judged={"a": 1}),
        build_pair_example("q2", "second", TEXTS, config, pointwise=[("d", 0.5), ("e", 0.0)],
                           pairwise=[("e", "d", 0.25)], judged={"e": 1}),
    ]
    model = tiny_reranker("bi-encoder", pooling="mean", similarity="dot")
    batch, targets, extras = collate(model, rows, EXTRA_FIELDS, torch.device("cpu"))
    assert targets.shape == (2, 3) and targets[1, :2].tolist() == [0.5, 0.0]
    assert extras["labels"].tolist() == [[1, 0, 0], [0, 1, -1]]
    pt, pm = extras["pair_targets"], extras["pair_mask"]
    assert pt.shape == pm.shape == (2, 3, 3)
    assert pm.sum().item() == 3 and pm[0, 0, 1] and pm[0, 1, 2] and pm[1, 0, 1]
    assert pt[0, 0, 1].item() == pytest.approx(0.9) and pt[0, 1, 2].item() == pytest.approx(0.7)
    assert pt[1, 0, 1].item() == pytest.approx(0.75) and torch.isnan(pt[~pm]).all()
    model.train()
    loss = model.compute_loss(model(**batch), targets, PairDistillLoss(), **extras)
    assert torch.isfinite(loss)
    loss.backward()


def _entropy(values: list[float]) -> float:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    z = sum(weights)
    return -sum(w / z * math.log(w / z) for w in weights)


def test_kd_target_is_the_raw_reranker_logit_not_a_flattened_log_sigmoid(tmp_path: Path):
    """A reranker teacher stores log σ(s) (yes) and log σ(−s) (no); softmax(log σ(s)) ∝ σ(s) is
    nearly uniform for MiniLM-like logits, softmax(s) is not. The KD target must be s."""
    from rankdistill.teachers.store import LabelStore

    logits = [10.0] + [3.0 - 8.0 * n / 62 for n in range(63)]  # one clear hit, the rest 3 .. -5; k = 64
    log_sig = [-math.log1p(math.exp(-s)) for s in logits]  # log σ(s): what the store keeps as score
    corpus = {f"p{n}": Document(f"p{n}", f"passage {n}") for n in range(64)}
    store = LabelStore(tmp_path / "labels")
    store.write("pointwise", [
        {"teacher": "mini", "template_id": "yn", "template_hash": "h1", "qid": "q1", "docid": f"p{n}", "rank": n,
         "score": log_sig[n], "logprob_yes": log_sig[n], "logprob_no": -math.log1p(math.exp(s))}
        for n, s in enumerate(logits)])
    config = PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="mini", passages_per_query=64)
    row = pair_examples_from_store({"q1": Query("q1", "q")}, corpus, config)[0]
    assert row["docids"][0] == "p0" and len(row["targets"]) == 64
    by_doc = dict(zip(row["docids"], row["targets"], strict=True))
    assert [by_doc[f"p{n}"] for n in range(64)] == pytest.approx(logits, abs=1e-9)
    # entropy of the KD distribution: softmax(s) by hand 0.0668 nats; the old form softmax(log σ(s))
    # 3.70 of ln 64 = 4.16 (nearly uniform)
    assert _entropy(row["targets"]) == pytest.approx(0.0668, abs=1e-4)
    old = pair_examples_from_store({"q1": Query("q1", "q")}, corpus,
                                   PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="mini",
                                                      passages_per_query=64, kd_target="log_p_yes"))[0]
    assert _entropy(old["targets"]) == pytest.approx(3.7041, abs=1e-4) and math.log(64) == pytest.approx(4.1589, abs=1e-4)
    with pytest.raises(ConfigError, match="kd_target"):
        PairExamplesConfig(label_store="x", pointwise_teacher="mini", kd_target="probability")


def test_every_sampled_pair_whose_passages_fit_reaches_pair_targets():
    """Pairs are sampled over the pointwise top_k but the list holds k < top_k passages: the pairs'
    passages go in first (as the official conv_pair), then the list is filled in pointwise order."""
    from rankdistill.teachers.pairwise import PairwiseConfig, sample_pairs

    texts = {f"p{n:02d}": f"passage {n}" for n in range(30)}
    pointwise = [(f"p{n:02d}", -0.1 * n) for n in range(30)]  # p00 best ... p29 worst
    by_pos = [f"p{n:02d}" for n in range(30)]
    positions = [(0, 5), (3, 12), (10, 18), (15, 22), (20, 27)]  # 10 distinct passages
    pairwise = [(by_pos[i], by_pos[j], 0.8) for i, j in positions]

    def listed_pairs(row):
        return {(row["docids"][i], row["docids"][j]) for i, j in zip(row["pair_i"], row["pair_j"], strict=True)}

    config = PairExamplesConfig(label_store="unused", pointwise_teacher="m", pairwise_teacher="d", passages_per_query=12)
    row = build_pair_example("q", "query", texts, config, pointwise=pointwise, pairwise=pairwise)
    assert listed_pairs(row) == {(a, b) for a, b, _ in pairwise}  # all 5 (the top 12 alone hold only (0, 5))
    assert row["docids"] == ["p00", "p01", "p02", "p03", "p05", "p10", "p12", "p15", "p18", "p20", "p22", "p27"]
    assert row["targets"] == pytest.approx([-0.1 * int(d[1:]) for d in row["docids"]])
    # k = 8: pairs nearest the top first while both passages fit: 4 pairs (8 passages), (20, 27) does not fit
    row = build_pair_example("q", "query", texts, PairExamplesConfig(
        label_store="unused", pointwise_teacher="m", pairwise_teacher="d", passages_per_query=8),
        pointwise=pointwise, pairwise=pairwise)
    assert listed_pairs(row) == {(by_pos[i], by_pos[j]) for i, j in positions[:4]}
    assert len(row["docids"]) == 8
    # a positive added to a full list takes the lowest filled passage's slot, not a pair passage's
    row = build_pair_example("q", "query", texts, config, pointwise=pointwise, pairwise=pairwise, judged={"p29": 1})
    assert listed_pairs(row) == {(a, b) for a, b, _ in pairwise} and "p02" not in row["docids"]
    assert row["docids"][-1] == "p29" and len(row["docids"]) == 12 and row["labels"][-1] == 1
    # pairs as the labeller samples them (top_k 30, δ 10, m 6) into k = 12: all of them reach the loss
    for qid in ("q1", "q2", "q3"):
        sampled = sample_pairs(qid, 30, PairwiseConfig(top_k=30, delta=10, pairs_per_query=6, seed=0))
        pairs = [(by_pos[i], by_pos[j], 0.7) for i, j in sampled]
        row = build_pair_example(qid, "query", texts, config, pointwise=pointwise, pairwise=pairs)
        assert listed_pairs(row) == {(a, b) for a, b, _ in pairs} and len(row["docids"]) == 12
