"""The ``reranker`` teacher backend: a saved duo student labels pairs, a saved mono student points."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, scramble, tiny_reranker
from rankdistill.data.records import Candidate, CandidateList, Query
from rankdistill.errors import ConfigError
from rankdistill.teachers import BackendConfig
from rankdistill.teachers.pairwise import PairwiseConfig, pair_units
from rankdistill.teachers.pipeline import Labeler, LabelerSpec, run_bare
from rankdistill.teachers.pointwise import PointwiseConfig, point_units
from rankdistill.teachers.store import LabelStore

WORDS = {"truncation": {"unit": "words"}}


def saved(name: str, folder: Path) -> str:
    model = scramble(tiny_reranker(name), seed=3)
    model.save_pretrained(folder)
    return str(folder)


def candidate_list() -> CandidateList:
    return CandidateList(Query("q1", QUERY), [Candidate(f"d{i}", float(10 - i), t) for i, t in enumerate(PASSAGES)])


def spec(kind: str, model: str, **kwargs) -> LabelerSpec:
    template = {"pairwise": "duot5", "pointwise": "monot5", "listwise": "rankzephyr"}[kind]
    return LabelerSpec(kind=kind, teacher_id="student", template=template, template_overrides=WORDS,
                       backend=BackendConfig(name="reranker", model=model, device="cpu"), **kwargs)


def test_duo_student_labels_pairs_with_the_symmetric_pair_probability(tmp_path: Path):
    model_dir = saved("duo", tmp_path / "duo")
    config = PairwiseConfig(top_k=5, delta=5, pairs_per_query=100)
    units = pair_units(candidate_list(), config)
    assert len(units) == 10
    store = LabelStore(tmp_path / "labels")
    stats = run_bare(units, spec("pairwise", model_dir, pairwise=config), store, batch_size=4)
    assert stats.labels == 10
    rows = store.read("pairwise").to_dict("records")

    from rankdistill.models import load_reranker

    duo = load_reranker(model_dir)
    texts = {c.docid: c.contents for c in candidate_list().candidates}
    for row in rows:
        a, b = texts[row["docid_a"]], texts[row["docid_b"]]
        p_ab, p_ba = duo.pair_probabilities(QUERY, [(a, b), (b, a)])
        assert row["logprob_first_ab"] == pytest.approx(math.log(p_ab), abs=1e-5)
        assert row["logprob_second_ab"] == pytest.approx(math.log(1 - p_ab), abs=1e-5)
        assert row["logprob_first_ba"] == pytest.approx(math.log(p_ba), abs=1e-5)
        assert row["p_a_wins"] == pytest.approx(0.5 * (p_ab + 1 - p_ba), abs=1e-5)
    assert len({round(r["p_a_wins"], 4) for r in rows}) > 1  # a real model, not a constant


def test_mono_student_labels_points_with_its_log_sigmoid_score(tmp_path: Path):
    model_dir = saved("mono", tmp_path / "mono")
    units = point_units(candidate_list(), PointwiseConfig(top_k=5))
    labeler = Labeler(spec("pointwise", model_dir))
    rows = labeler.label(units)

    from rankdistill.models import load_reranker

    scores = load_reranker(model_dir).score(QUERY, PASSAGES)
    assert [r["docid"] for r in rows] == [f"d{i}" for i in range(5)]
    for row, s in zip(rows, scores, strict=True):
        expected = float(torch.nn.functional.logsigmoid(torch.tensor(s, dtype=torch.float64)))
        assert row["score"] == pytest.approx(expected, abs=1e-5)
        assert row["logprob_no"] == pytest.approx(float(torch.nn.functional.logsigmoid(torch.tensor(-s))), abs=1e-5)
    assert labeler.backend.calls == 1  # one call for the query's five passages


def test_reranker_backend_refuses_what_it_cannot_label(tmp_path: Path):
    mono_dir = saved("mono", tmp_path / "mono")
    with pytest.raises(ConfigError, match="teacher.backend.name.*listwise labels need a generating LLM"):
        Labeler(spec("listwise", mono_dir))
    units = pair_units(candidate_list(), PairwiseConfig(top_k=3, delta=3))
    with pytest.raises(ConfigError, match="teacher.backend.model.*pairwise student \\(duo\\)"):
        Labeler(spec("pairwise", mono_dir)).label(units)
    with pytest.raises(ConfigError, match="teacher.backend.model"):
        Labeler(spec("pointwise", ""))


def test_kd_targets_from_a_mono_teacher_are_its_raw_scores(tmp_path: Path):
    """The labels a mono student stores (log σ(s), log σ(−s)) give PairDistill the raw score s as
    its KD target (logprob_yes − logprob_no), not log σ(s)."""
    from rankdistill.data.records import Document
    from rankdistill.models import load_reranker
    from rankdistill.training.pair_examples import PairExamplesConfig, pair_examples_from_store

    model_dir = saved("mono", tmp_path / "mono")
    units = point_units(candidate_list(), PointwiseConfig(top_k=5))
    store = LabelStore(tmp_path / "labels")
    run_bare(units, spec("pointwise", model_dir), store, batch_size=8)
    corpus = {c.docid: Document(c.docid, c.contents) for c in candidate_list().candidates}
    config = PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="student", passages_per_query=8)
    row = pair_examples_from_store({"q1": Query("q1", QUERY)}, corpus, config)[0]
    scores = dict(zip([f"d{i}" for i in range(5)], load_reranker(model_dir).score(QUERY, PASSAGES), strict=True))
    assert row["targets"] == pytest.approx([scores[d] for d in row["docids"]], abs=1e-5)
    assert row["docids"] == sorted(scores, key=lambda d: -scores[d])
