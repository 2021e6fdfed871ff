"""ir-measures core against hand-computed values and published numbers."""

from __future__ import annotations

import math

import pytest
from conftest import shared_dataset
from rankdistill.data.records import Qrels, Run
from rankdistill.data.trec import read_trec_run
from rankdistill.evaluation import evaluate


def test_hand_computed_ndcg_rr_recall_ap():
    qrels = Qrels({"q1": {"a": 2, "b": 1, "c": 0, "z": 1}, "q2": {"x": 1}})
    run = Run({"q1": {"c": 3.0, "a": 2.0, "b": 1.0}})  # q2 unanswered: scores 0
    result = evaluate(run, qrels, ["nDCG@10", "RR@10", "R@100", "AP"])
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    per_q1 = result.per_query["q1"]
    assert per_q1["nDCG@10"] == pytest.approx(dcg / idcg)
    assert per_q1["RR@10"] == pytest.approx(1 / 2)
    assert per_q1["R@100"] == pytest.approx(2 / 3)
    assert per_q1["AP"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert result.per_query["q2"]["nDCG@10"] == 0.0
    assert result.aggregate["nDCG@10"] == pytest.approx(dcg / idcg / 2)
    assert result.num_queries == 2


def test_relevance_threshold_applies_to_binary_measures_only():
    qrels = Qrels({"q": {"a": 1, "b": 2}})
    run = Run({"q": {"a": 2.0, "b": 1.0}})
    result = evaluate(run, qrels, ["nDCG@10", "RR@10"], relevance_threshold=2)
    assert result.aggregate["RR(rel=2)@10"] == pytest.approx(0.5)
    assert "nDCG@10" in result.aggregate  # graded, untouched
    assert evaluate(run, qrels, ["RR@10"]).aggregate["RR@10"] == 1.0


def test_tied_scores_are_evaluated_by_trec_evals_rule_not_the_files_ranks(tmp_path):
    # file ranks put a before b; trec_eval breaks the tie by docid descending: b, a, c
    (tmp_path / "tied.trec").write_text("q Q0 a 1 2.0 t\nq Q0 b 2 2.0 t\nq Q0 c 3 1.0 t\n")
    run = read_trec_run(tmp_path / "tied.trec")
    assert [d for d, _ in run.ranked("q")] == ["a", "b", "c"]
    result = evaluate(run, Qrels({"q": {"a": 1, "c": 0}}), ["nDCG@10", "RR@10", "AP", "P@1"])
    per_q = result.per_query["q"]
    assert per_q["RR@10"] == pytest.approx(1 / 2)  # the MS MARCO provider alone would say 1
    assert per_q["nDCG@10"] == pytest.approx(1 / math.log2(3))
    assert per_q["AP"] == pytest.approx(1 / 2)
    assert per_q["P@1"] == 0.0


@pytest.mark.shared_data
def test_a_run_full_of_ties_is_evaluated_as_trec_eval_itself_does(tmp_path):
    """DL19 BM25 with scores floored to integers (4,274 of 4,300 lines tie), written in reverse:
    every per-query nDCG@10, AP and RR@10 equals pytrec_eval's (trec_eval's own code)."""
    import pytrec_eval

    _, folder = shared_dataset("trec-dl-2019-passage")
    lines = (folder.root / "runs" / "bm25.trec").read_text().splitlines()
    floored = [" ".join(p[:4] + [str(math.floor(float(p[4]))), p[5]]) for p in (line.split() for line in lines)]
    (tmp_path / "tied.trec").write_text("\n".join(reversed(floored)) + "\n")
    run = read_trec_run(tmp_path / "tied.trec")
    qrels = folder.qrels("test")
    ours = evaluate(run, qrels, ["nDCG@10", "AP", "RR@10"], relevance_threshold=2).per_query
    graded = pytrec_eval.RelevanceEvaluator(dict(qrels), {"ndcg_cut_10"}).evaluate(dict(run))
    binary = pytrec_eval.RelevanceEvaluator(dict(qrels), {"map", "recip_rank"}, relevance_level=2).evaluate(dict(run))
    rr_changed = 0
    for qid in graded:
        assert ours[qid]["nDCG@10"] == pytest.approx(graded[qid]["ndcg_cut_10"]), qid
        assert ours[qid]["AP(rel=2)"] == pytest.approx(binary[qid]["map"]), qid
        rr = binary[qid]["recip_rank"]
        assert ours[qid]["RR(rel=2)@10"] == pytest.approx(rr if rr >= 0.1 else 0.0), qid
        ranked = [d for d, _ in run.ranked(qid)]
        first = next((i for i, d in enumerate(ranked) if qrels[qid].get(d, 0) >= 2), None)
        rr_changed += first is not None and first < 10 and abs(1 / (first + 1) - rr) > 1e-9
    assert rr_changed > 0  # the file's order would give other RR values: the ties matter here


@pytest.mark.shared_data
@pytest.mark.parametrize("run_name,ndcg,rr", [("bm25.trec", 0.5058, 0.7024), ("bm25.rankvicuna-7b.trec", 0.6682, 0.8486)])
def test_trec_dl_2019_published_numbers(run_name, ndcg, rr):
    spec, folder = shared_dataset("trec-dl-2019-passage")
    result = evaluate(read_trec_run(folder.root / "runs" / run_name), folder.qrels("test"),
                      relevance_threshold=spec.relevance_threshold)
    assert round(result.aggregate["nDCG@10"], 4) == ndcg
    assert round(result.aggregate["RR(rel=2)@10"], 4) == rr


@pytest.mark.shared_data
def test_nfcorpus_bm25_counts_unanswered_queries_as_zero():
    _, folder = shared_dataset("nfcorpus")
    result = evaluate(read_trec_run(folder.root / "runs" / "bm25.test.trec"), folder.qrels("test"))
    assert result.num_queries == 323  # 15 judged queries have no BM25 hit and count as 0
    assert round(result.aggregate["nDCG@10"], 4) == 0.3175
