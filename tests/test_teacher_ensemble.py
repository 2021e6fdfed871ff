"""The ``ensemble`` teacher backend: reciprocal-rank and z-score fusion by hand, and real members
(BM25's first-stage scores, a saved dense student, a mono cross-encoder teacher) fused per list
into pointwise labels whose KD target is the fused score."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from model_fixtures import PASSAGES, QUERY, scramble, tiny_reranker
from rankdistill.data.records import Candidate, CandidateList, Query
from rankdistill.errors import ConfigError
from rankdistill.teachers import BackendConfig
from rankdistill.teachers.backends.base import EnsembleMember
from rankdistill.teachers.backends.ensemble import fuse
from rankdistill.teachers.pipeline import LabelerSpec, PipelineConfig, label_lists
from rankdistill.teachers.pointwise import PointwiseConfig
from rankdistill.teachers.store import LabelStore

WORDS = {"truncation": {"unit": "words"}}


def test_reciprocal_rank_fusion_by_hand():
    # member a ranks (d0, d1, d2), member b ranks (d2, d0, d1); k = 60, weights 1 and 2
    a, b = [3.0, 2.0, 1.0], [0.5, -1.0, 4.0]
    fused = fuse([a, b], [1.0, 2.0], "rrf", rrf_k=60)
    assert fused == pytest.approx([1 / 61 + 2 / 62, 1 / 62 + 2 / 63, 1 / 63 + 2 / 61], abs=1e-12)
    assert fuse([a, b], [1.0, 0.0], "rrf", 60) == pytest.approx([1 / 61, 1 / 62, 1 / 63])
    # ties keep list order
    assert fuse([[1.0, 1.0]], [1.0], "rrf", 0) == pytest.approx([1.0, 0.5])


def test_z_score_fusion_by_hand():
    # a: mean 2, population std sqrt(2/3); b: mean 1, std sqrt(6) -> (1, -2, 1)... by hand below
    a, b = [3.0, 2.0, 1.0], [1.0, -2.0, 4.0]
    sa, sb = math.sqrt(2 / 3), math.sqrt(6.0)
    expected = [(1 / sa) + 0.5 * (0 / sb), 0 + 0.5 * (-3 / sb), (-1 / sa) + 0.5 * (3 / sb)]
    assert fuse([a, b], [1.0, 0.5], "zsum") == pytest.approx(expected, abs=1e-12)
    assert fuse([[2.0, 2.0], [1.0, 0.0]], [1.0, 1.0], "zsum") == pytest.approx([1.0, -1.0])  # a flat member adds 0
    with pytest.raises(ValueError, match="fusion"):
        fuse([a], [1.0], "borda")


def _saved(name: str, folder: Path, seed: int) -> str:
    scramble(tiny_reranker(name), seed=seed).save_pretrained(folder)
    return str(folder)


def _list() -> CandidateList:
    return CandidateList(Query("q1", QUERY), [Candidate(f"d{i}", float(9 - 2 * i + (i % 2) * 3), t)
                                              for i, t in enumerate(PASSAGES)])


@pytest.mark.parametrize("fusion,scale", [("rrf", 100.0), ("zsum", 1.0)])
def test_ensemble_labels_are_the_fused_scores_of_its_real_members(tmp_path: Path, fusion: str, scale: float):
    from rankdistill.models import load_reranker

    mono_dir, dense_dir = _saved("mono", tmp_path / "mono", 3), _saved("bi-encoder", tmp_path / "dense", 4)
    backend = BackendConfig(name="ensemble", device="cpu", fusion=fusion, scale=scale, members=[
        EnsembleMember(kind="first_stage", weight=1.0),
        EnsembleMember(kind="dense", model=dense_dir, weight=0.5),
        EnsembleMember(kind="teacher", weight=2.0, backend=BackendConfig(name="reranker", model=mono_dir, device="cpu")),
    ])
    spec = LabelerSpec(kind="pointwise", teacher_id="ens", template="monot5", template_overrides=WORDS,
                       backend=backend, pointwise=PointwiseConfig(top_k=5))
    store = LabelStore(tmp_path / "labels")
    cl = _list()
    # one passage already labelled by this teacher: not asked again, but still part of the fused list
    from rankdistill.teachers.prompts import load_template

    template = load_template("monot5", WORDS)
    store.write("pointwise", [{"teacher": "ens", "template_id": template.id, "template_hash": template.hash,
                               "qid": "q1", "docid": "d2", "rank": 2, "score": -0.1, "logprob_yes": -0.1,
                               "logprob_no": -2.4}])
    result = label_lists([cl], spec, store, PipelineConfig(use_ray=False, batch_size=2, progress=False))
    assert (result.units_total, result.units_skipped, result.stats.labels) == (5, 1, 4)
    rows = {r["docid"]: r for r in store.read("pointwise").to_dict("records") if r["docid"] != "d2"}
    # the members' scores computed here directly from the models and the list
    first = [c.score for c in cl.candidates]
    dense = load_reranker(dense_dir).score(QUERY, PASSAGES)
    mono = load_reranker(mono_dir).score(QUERY, PASSAGES)
    expected = [scale * f for f in fuse([first, dense, mono], [1.0, 0.5, 2.0], fusion, 60.0)]
    for i in (0, 1, 3, 4):
        row = rows[f"d{i}"]
        assert row["logprob_yes"] - row["logprob_no"] == pytest.approx(expected[i], abs=1e-4)
        assert row["rank"] == i
    assert len({round(r["logprob_yes"], 6) for r in rows.values()}) == 4


def test_a_dense_member_embeds_each_passage_text_once_and_scores_as_the_model_does(tmp_path: Path):
    """Lists of one collection share passages: the second list's shared texts are not encoded
    again, and every score still equals the bi-encoder's own ``score`` (scale x cosine)."""
    from rankdistill.models import load_reranker
    from rankdistill.teachers.backends.ensemble import EnsembleBackend
    from rankdistill.teachers.prompts import load_template

    dense_dir = _saved("bi-encoder", tmp_path / "dense", 4)
    backend = EnsembleBackend(BackendConfig(name="ensemble", device="cpu", fusion="zsum", members=[
        EnsembleMember(kind="dense", model=dense_dir)]))
    model = backend.scorers[0]
    encoded: list[str] = []
    real = model.encode_passages
    model.encode_passages = lambda texts, batch_size=None: (encoded.extend(texts), real(texts, batch_size))[1]
    template = load_template("monot5", WORDS)
    first, second = PASSAGES[:3], [PASSAGES[2], PASSAGES[3], PASSAGES[0], PASSAGES[3]]
    reference = load_reranker(dense_dir)
    for query, texts in ((QUERY, first), ("another query", second)):
        unit = {"qid": "q", "query": query, "docids": [f"d{i}" for i in range(len(texts))], "texts": texts,
                "first_stage": [0.0] * len(texts)}
        assert backend.member_scores(unit, template)[0] == pytest.approx(reference.score(query, texts), abs=1e-5)
    assert encoded == [*first, PASSAGES[3]]  # 4 distinct texts, each encoded once


def test_ensemble_config_errors_name_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="members"):
        BackendConfig(name="ensemble")
    with pytest.raises(ConfigError, match="fusion"):
        BackendConfig(name="ensemble", fusion="borda", members=[EnsembleMember(kind="first_stage")])
    with pytest.raises(ConfigError, match="backend"):
        EnsembleMember(kind="teacher")
    with pytest.raises(ConfigError, match="model"):
        EnsembleMember(kind="dense")
    with pytest.raises(ConfigError, match="kind"):
        EnsembleMember(kind="bm25")
    with pytest.raises(ConfigError, match="weight > 0"):
        BackendConfig(name="ensemble", members=[EnsembleMember(kind="first_stage", weight=0.0)])
    from rankdistill.teachers.pipeline import Labeler

    spec = LabelerSpec(kind="pairwise", teacher_id="ens", template="duot5", template_overrides=WORDS,
                       backend=BackendConfig(name="ensemble", members=[EnsembleMember(kind="first_stage")]))
    with pytest.raises(ConfigError, match="teacher.backend.name.*pointwise labels"):
        Labeler(spec)


def test_ensemble_loads_from_yaml(tmp_path: Path):
    from rankdistill.config import load_config
    from rankdistill.teachers.config import TeacherConfig

    path = tmp_path / "t.yaml"
    path.write_text("id: ens\ntemplate: pairdistill-pointwise\nbackend:\n  name: ensemble\n  fusion: zsum\n"
                    "  members:\n    - {kind: first_stage, weight: 1.0}\n"
                    "    - {kind: dense, backbone: all-MiniLM-L6-v2, options: {scale: 20.0}, weight: 2}\n"
                    "    - {kind: teacher, backend: {name: reranker, model: some/folder}}\n")
    config = load_config(TeacherConfig, path)
    members = config.backend.members
    assert [m.kind for m in members] == ["first_stage", "dense", "teacher"]
    assert members[1].weight == 2.0 and members[1].options == {"scale": 20.0}
    assert members[2].backend.name == "reranker" and members[2].label == "teacher:some/folder"
    path.write_text("backend:\n  name: ensemble\n  members:\n    - {kind: dense, weight: 1, modle: x}\n")
    with pytest.raises(ConfigError, match="modle"):
        load_config(TeacherConfig, path)


def test_ensemble_members_are_checked_before_ray_naming_the_member(tmp_path: Path):
    """The job's teacher check reaches into an ensemble: a teacher member with a missing folder and
    a missing dense student each name their member; an ensemble cannot be a pairwise teacher."""
    from rankdistill.teachers.config import TeacherConfig, check_teacher
    from rankdistill.teachers.prompts import load_template

    template = load_template("pairdistill-pointwise")

    def ensemble(*members: EnsembleMember) -> TeacherConfig:
        return TeacherConfig(id="ens", template=template.id, backend=BackendConfig(
            name="ensemble", members=[EnsembleMember(kind="first_stage"), *members]))

    missing = EnsembleMember(kind="teacher", backend=BackendConfig(name="reranker", model=str(tmp_path / "nope")))
    with pytest.raises(ConfigError) as info:
        check_teacher(ensemble(missing), "pointwise", template, "pointwise_teacher")
    assert info.value.key == "pointwise_teacher.backend.members[1].backend.model" and "nope" in str(info.value)
    with pytest.raises(ConfigError) as info:
        check_teacher(ensemble(EnsembleMember(kind="dense", model=str(tmp_path / "gone"))), "pointwise", template,
                      "pointwise_teacher")
    assert info.value.key == "pointwise_teacher.backend.members[1].model"
    mono = _saved("mono", tmp_path / "mono", 2)
    good = EnsembleMember(kind="teacher", backend=BackendConfig(name="reranker", model=mono))
    check_teacher(ensemble(good), "pointwise", template, "pointwise_teacher")  # a trained mono member passes
    pair_template = load_template("pairdistill-pairwise")
    with pytest.raises(ConfigError) as info:
        check_teacher(TeacherConfig(backend=BackendConfig(name="ensemble", members=[good])), "pairwise",
                      pair_template, "pairwise_teacher")
    assert info.value.key == "pairwise_teacher.backend.name"
