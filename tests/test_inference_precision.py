"""Inference precision (``rankdistill.precision``): a student scores / encodes under bf16 autocast
when asked, returns fp32 values close to its fp32 ones, and ``auto`` follows the CPU's bf16 unit
as /proc/cpuinfo reports it; the teacher backends and corpus encoding pass the setting through."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, cpu_has_bf16_unit, tiny_reranker
from rankdistill.data.records import Candidate, CandidateList, Document, Query
from rankdistill.errors import ConfigError
from rankdistill.precision import autocast, check_precision, resolve_precision
from rankdistill.teachers import BackendConfig
from rankdistill.teachers.backends.base import EnsembleMember

ARCHITECTURES = ["mono", "celi", "set-encoder", "listconranker", "duo", "bi-encoder", "colbert"]


def test_the_vocabulary_and_its_errors():
    for value in ("fp32", "bf16", "fp16", "auto"):
        check_precision(value, "x.precision")
    with pytest.raises(ConfigError, match="unknown precision 'bf32'") as info:
        check_precision("bf32", "candidates.encode.precision")
    assert "candidates.encode.precision" in str(info.value)
    assert resolve_precision("auto", True) == "bf16" and resolve_precision("auto", False) == "fp32"
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        autocast("auto", "cpu")


def _linear_output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def _scores(model, name: str) -> list[float]:
    if name == "duo":
        return model.pair_probabilities(QUERY, [(PASSAGES[0], PASSAGES[1]), (PASSAGES[2], PASSAGES[0])])
    if name == "bi-encoder":
        return model.encode_passages(PASSAGES).reshape(-1).tolist()
    return model.score(QUERY, PASSAGES)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_student_runs_bf16_autocast_when_asked_and_returns_fp32_values_close_to_fp32(name: str):
    model = tiny_reranker(name)
    dtypes = _linear_output_dtypes(model)
    fp32 = _scores(model, name)
    assert dtypes and set(dtypes) == {torch.float32}  # the default is fp32, as before precision existed
    dtypes.clear()

    assert model.use_precision("bf16") == "bf16"
    bf16 = _scores(model, name)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # every Linear ran in bf16
    assert all(isinstance(v, float) for v in bf16)
    scale = max(1.0, max(abs(v) for v in fp32))
    # bf16 keeps 8 mantissa bits (~0.4 % per value); through a random tiny model the scores move
    # by up to ~3.5 % of their scale (mono: 0.051 at 1.47), so 5 % bounds them
    assert max(abs(a - b) for a, b in zip(bf16, fp32, strict=True)) < 0.05 * scale
    assert bf16 != fp32  # it is not the fp32 computation

    dtypes.clear()
    assert model.use_precision("fp32") == "fp32"
    assert _scores(model, name) == fp32 and set(dtypes) == {torch.float32}


def test_auto_follows_the_cpus_bf16_unit():
    model = tiny_reranker("mono")
    assert model.use_precision("auto") == ("bf16" if cpu_has_bf16_unit() else "fp32")
    with pytest.raises(ConfigError, match="unknown precision"):
        model.use_precision("half")


def test_reranker_backend_and_ensemble_dense_members_take_the_precision(tmp_path: Path):
    from rankdistill.teachers.backends import make_backend

    tiny_reranker("mono").save_pretrained(tmp_path / "mono")
    backend = make_backend(BackendConfig(name="reranker", model=str(tmp_path / "mono"), device="cpu",
                                         precision="bf16"))
    assert backend.model.inference_precision == "bf16" and "(bf16)" in backend.description
    default = make_backend(BackendConfig(name="reranker", model=str(tmp_path / "mono"), device="cpu"))
    assert default.model.inference_precision == "fp32"  # the default: unchanged labels

    tiny_reranker("bi-encoder", pooling="mean", similarity="cosine").save_pretrained(tmp_path / "dense")
    ensemble = make_backend(BackendConfig(name="ensemble", device="cpu", fusion="zsum", precision="bf16", members=[
        EnsembleMember(kind="dense", model=str(tmp_path / "dense")),
        EnsembleMember(kind="teacher", backend=BackendConfig(name="reranker", model=str(tmp_path / "mono"),
                                                             device="cpu"))]))
    dense, teacher = ensemble.scorers
    assert dense.inference_precision == "bf16"  # the ensemble's precision
    assert teacher.model.inference_precision == "fp32"  # a teacher member keeps its own backend's
    assert ensemble.dense_precision == "bf16" and "dense members bf16" in ensemble.description

    with pytest.raises(ConfigError, match="numbers are set by dtype") as info:
        BackendConfig(name="hf", model="x", precision="bf16")
    assert info.value.key == "precision"


def test_bf16_labels_stay_close_to_fp32_labels(tmp_path: Path):
    from rankdistill.teachers.pipeline import Labeler, LabelerSpec
    from rankdistill.teachers.pointwise import PointwiseConfig, point_units

    tiny_reranker("mono").save_pretrained(tmp_path / "mono")
    cl = CandidateList(Query("q1", QUERY), [Candidate(f"d{i}", float(9 - i), t) for i, t in enumerate(PASSAGES)])
    units = point_units(cl, PointwiseConfig(top_k=5))
    rows = {}
    for precision in ("fp32", "bf16"):
        spec = LabelerSpec(kind="pointwise", teacher_id="t", template="monot5",
                           template_overrides={"truncation": {"unit": "words"}},
                           backend=BackendConfig(name="reranker", model=str(tmp_path / "mono"), device="cpu",
                                                 precision=precision))
        rows[precision] = [r["score"] for r in Labeler(spec).label(units)]
    assert rows["bf16"] == pytest.approx(rows["fp32"], abs=0.05)
    assert rows["bf16"] != rows["fp32"]


@pytest.mark.slow
def test_ray_encoding_in_bf16_gives_embeddings_close_to_fp32(tmp_path: Path, local_ray):
    import numpy as np
    from rankdistill.retrieval.encode import EncodeConfig, encode_corpus, read_embedding_shards

    model = tiny_reranker("bi-encoder", pooling="mean", similarity="cosine")
    model.save_pretrained(tmp_path / "student")
    docs = [Document(f"d{i}", text) for i, text in enumerate(PASSAGES)]
    read = {}
    for precision in ("fp32", "bf16"):
        shards = encode_corpus(tmp_path / "student", docs, tmp_path / precision,
                               EncodeConfig(num_actors=1, cpus_per_actor=1, batch_size=4, precision=precision))
        got = read_embedding_shards(shards)
        read[precision] = got.embeddings[[got.docids.index(d.docid) for d in docs]]
    expected = model.encode_passages([d.contents for d in docs]).numpy()
    np.testing.assert_allclose(read["fp32"], expected, atol=1e-5)
    cosine = (read["bf16"] * expected).sum(1) / np.linalg.norm(read["bf16"], axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(read["bf16"], read["fp32"])
    with pytest.raises(ConfigError, match="unknown precision"):
        EncodeConfig(precision="bfloat16")
