"""Training examples from qrels + hard negatives and from teacher labels in the label store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rankdistill.data.records import Document, Qrels, Query, Run
from rankdistill.errors import DataFormatError
from rankdistill.training.examples import ExamplesConfig, examples_from_labels, examples_from_qrels, pair_rows

CORPUS = {d: Document(d, f"text of {d}") for d in ["p1", "p2", "n1", "n2", "n3", "n4", "j0"]}
QUERIES = {"q1": Query("q1", "a query"), "q2": Query("q2", "no positives")}


def test_qrels_examples_one_positive_and_hard_negatives_from_the_run():
    qrels = Qrels({"q1": {"p1": 2, "p2": 1, "j0": 0}, "q2": {"n1": 0}})
    run = Run({"q1": {"p1": 9.0, "n1": 8.0, "j0": 7.0, "n2": 6.0, "n3": 5.0, "n4": 1.0}})
    config = ExamplesConfig(passages_per_query=4, negatives_depth=4, seed=3)
    (row,) = examples_from_qrels(QUERIES, CORPUS, qrels, run, config)  # q2 has no positive
    assert row["qid"] == "q1" and row["docids"][0] in {"p1", "p2"}
    negatives = row["docids"][1:]
    assert set(negatives) == {"n1", "j0", "n2"}  # top-4 of the run minus positives; judged-0 j0 is a negative
    assert row["targets"] == [float(qrels["q1"][row["docids"][0]]), 0.0, 0.0, 0.0]
    assert row["texts"] == [CORPUS[d].contents for d in row["docids"]]
    assert examples_from_qrels(QUERIES, CORPUS, qrels, run, config) == [row]  # seeded


def test_positives_from_run_draws_only_judged_documents_the_run_retrieved():
    qrels = Qrels({"q1": {"p1": 2, "p2": 1}, "q2": {"n1": 1}})
    run = Run({
        "q1": {"n1": 9.0, "p2": 8.0, "n2": 7.0, "n3": 6.0, "p1": 1.0},  # p1 is below depth 4
        "q2": {"n2": 3.0, "n3": 2.0, "n4": 1.0},  # q2's positive n1 is not retrieved: skipped
    })
    config = ExamplesConfig(passages_per_query=3, negatives_depth=4, positives_from_run=True)
    for seed in range(8):
        (row,) = examples_from_qrels(QUERIES, CORPUS, qrels, run, dataclasses.replace(config, seed=seed))
        assert row["qid"] == "q1" and row["docids"][0] == "p2" and row["targets"][0] == 1.0
        assert set(row["docids"][1:]) <= {"n1", "n2", "n3"}
    # the default draws among all judged documents: p1 (outside the run's top 4) shows up
    firsts = {examples_from_qrels(QUERIES, CORPUS, qrels, run, ExamplesConfig(passages_per_query=3, negatives_depth=4,
                                                                              seed=s))[0]["docids"][0]
              for s in range(8)}
    assert firsts == {"p1", "p2"}


def test_set_encoder_data_steps_duplicate_and_clusters():
    qrels = Qrels({"q1": {"p1": 1}})
    run = Run({"q1": {"n1": 3.0, "n2": 2.0, "n3": 1.0}})
    (row,) = examples_from_qrels(QUERIES, CORPUS, qrels, run,
                                 ExamplesConfig(passages_per_query=4, add_duplicate=True, novelty_clusters=True))
    assert len(row["texts"]) == 5 and row["texts"][-1] in row["texts"][:4]
    assert sum(row["duplicate_targets"]) == 2 and row["duplicate_targets"][-1] == 1
    assert row["targets"][-1] == row["targets"][row["texts"].index(row["texts"][-1])]
    assert row["clusters"][-1] == row["clusters"][row["texts"].index(row["texts"][-1])]


def test_no_examples_is_an_error():
    with pytest.raises(DataFormatError, match="no training examples"):
        examples_from_qrels(QUERIES, CORPUS, Qrels({"q2": {"n1": 0}}), Run(), ExamplesConfig())


def listwise_row(qid: str, ranking: list[str], window: int) -> dict:
    return {"teacher": "t", "template_id": "rankzephyr", "template_hash": "h", "qid": qid, "list_key": "k",
            "pass_index": 0, "window_index": window, "start": 0, "end": len(ranking), "window_size": 20,
            "stride": 10, "docids_in": ranking, "ranking_out": ranking, "response": "", "repair": "ok",
            "n_out_of_range": 0, "n_repeats": 0, "n_missing": 0, "ranking_after": ranking}


def test_listwise_labels_become_teacher_ranks(tmp_path: Path):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp_path / "labels")
    store.write("listwise", [listwise_row("q1", ["n1", "n2", "p1", "p2"], 0),
                             listwise_row("q1", ["p2", "n1", "p1", "n2"], 1)])  # the last window counts
    config = ExamplesConfig(source="labels", label_store=str(tmp_path / "labels"), teacher="t",
                            template="rankzephyr", passages_per_query=3)
    (row,) = examples_from_labels(QUERIES, CORPUS, config)
    assert row["docids"] == ["p2", "n1", "p1"] and row["targets"] == [1.0, 2.0, 3.0]


def test_pointwise_labels_become_teacher_scores(tmp_path: Path):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp_path / "labels")
    store.write("pointwise", [
        {"teacher": "t", "template_id": "yn", "template_hash": "h", "qid": "q1", "docid": d, "rank": r,
         "score": s, "logprob_yes": s, "logprob_no": -1.0}
        for d, r, s in [("n1", 2, -2.5), ("p1", 1, -0.1), ("n2", 3, -4.0)]
    ])
    config = ExamplesConfig(source="labels", label_store=str(tmp_path / "labels"), teacher="t",
                            label_kind="pointwise", passages_per_query=8)
    (row,) = examples_from_labels(QUERIES, CORPUS, config)
    assert row["docids"] == ["p1", "n1", "n2"] and row["targets"] == [-0.1, -2.5, -4.0]
    with pytest.raises(DataFormatError, match="no pointwise labels of teacher 'other'"):
        examples_from_labels(QUERIES, CORPUS, ExamplesConfig(source="labels", label_store=str(tmp_path / "labels"),
                                                             teacher="other", label_kind="pointwise"))


def test_duo_pairs_are_ordered_both_ways_with_the_better_passage_labelled_1():
    row = {"qid": "q", "query": "cats", "docids": ["p", "n1", "n2"], "texts": ["P", "N1", "N2"],
           "targets": [2.0, 0.0, 0.0]}
    (pairs,) = pair_rows([row])
    assert pairs["texts"] == [["P", "N1"], ["N1", "P"], ["P", "N2"], ["N2", "P"]]  # the tie n1 = n2 is dropped
    assert pairs["targets"] == [1.0, 0.0, 1.0, 0.0]
    assert pairs["docids"] == ["p>n1", "n1>p", "p>n2", "n2>p"]
    # teacher ranks: 1 = best, so n1 (rank 1) beats p (rank 3)
    (ranked,) = pair_rows([dict(row, targets=[3.0, 1.0, 2.0])], lower_is_better=True)
    assert ranked["texts"][:2] == [["P", "N1"], ["N1", "P"]] and ranked["targets"][:2] == [0.0, 1.0]
    assert len(ranked["texts"]) == 6
    capped = pair_rows([dict(row, targets=[3.0, 1.0, 2.0])], lower_is_better=True, max_pairs=2)[0]
    assert len(capped["texts"]) == 2 and capped["targets"] in ([1.0, 0.0], [0.0, 1.0])
    with pytest.raises(DataFormatError, match="no training pairs"):
        pair_rows([dict(row, targets=[1.0, 1.0, 1.0])])
