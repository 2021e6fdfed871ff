"""Dense retrieval: faiss index_factory indexes, the ColBERT token index with exact MaxSim
(against brute force written as loops), save/load at a folder and a file:// URI, and corpus
encoding on a Ray Data actor pool equal to the model's own encodings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rankdistill.data.records import Document, Query
from rankdistill.errors import ConfigError
from rankdistill.retrieval import (
    ColbertIndex,
    ColbertIndexConfig,
    DenseIndex,
    DenseIndexConfig,
    EncodeConfig,
    build_dense_index,
    encode_corpus,
    read_embedding_shards,
    retrieve,
)


def _unit(rng, *shape):
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("factory,params,min_recall", [
    ("Flat", None, 1.0),
    ("HNSW32", "efSearch=256", 0.95),
    ("IVF8,Flat", "nprobe=8", 1.0),     # every list probed: exact
    ("IVF8,PQ8x4", "nprobe=8", 0.4),    # product quantisation: approximate
])
def test_index_factory_strings_recall_and_uri_round_trip(factory, params, min_recall, tmp_path: Path):
    rng = np.random.default_rng(0)
    docs, queries = _unit(rng, 600, 16), _unit(rng, 20, 16)
    index = DenseIndex(16, DenseIndexConfig(factory=factory, search_params=params))
    index.add([f"d{i}" for i in range(600)], docs)
    run = index.search([f"q{i}" for i in range(20)], queries, k=5)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    hits = sum(len(set(run[f"q{i}"]) & {f"d{j}" for j in truth[i]}) for i in range(20))
    assert hits / 100 >= min_recall
    if min_recall == 1.0:
        best = truth[0][0]
        assert run["q0"][f"d{best}"] == pytest.approx(float(queries[0] @ docs[best]), rel=1e-4)
    for location in (tmp_path / "local", (tmp_path / "uri").as_uri()):
        loaded = DenseIndex.load(index.save(location))
        assert loaded.config.factory == factory
        assert loaded.search(["q0", "q1"], queries[:2], k=5) == {"q0": run["q0"], "q1": run["q1"]}


def test_index_factory_errors():
    with pytest.raises(ConfigError, match="index.factory|cannot build"):
        DenseIndex(8, DenseIndexConfig(factory="NotAnIndex12"))
    index = DenseIndex(8, DenseIndexConfig(factory="IVF64,Flat"))
    with pytest.raises(ConfigError, match="could not train"):
        index.add(["a", "b"], np.ones((2, 8), dtype=np.float32))


def _brute_force_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    """ColBERT Eq. 3 as written: for each query token, the best passage token, summed."""
    return sum(max(float(q[i] @ d[j]) for j in range(len(d))) for i in range(len(q)))


def _token_corpus(rng, n=40, dim=8):
    lengths = rng.integers(1, 12, size=n)
    return [f"p{i}" for i in range(n)], [_unit(rng, int(m), dim) for m in lengths]


def test_colbert_index_exact_maxsim_equals_brute_force(tmp_path: Path):
    rng = np.random.default_rng(1)
    docids, vectors = _token_corpus(rng)
    queries = _unit(rng, 3, 5, 8)
    index = ColbertIndex(8, ColbertIndexConfig(factory="Flat", candidates_per_token=10_000))
    index.add(docids[:25], vectors[:25])
    index.add(docids[25:], vectors[25:])  # a second batch appends
    assert index.size == 40 and index.num_tokens == sum(len(v) for v in vectors)
    run = index.search(["a", "b", "c"], queries, k=5)
    for qid, q in zip("abc", queries, strict=True):
        truth = sorted(((_brute_force_maxsim(q, d), p) for p, d in zip(docids, vectors, strict=True)), reverse=True)[:5]
        assert list(run[qid]) == [p for _, p in truth]
        assert list(run[qid].values()) == pytest.approx([s for s, _ in truth], abs=1e-5)
    # few candidates: a subset of the passages, still scored exactly
    small = ColbertIndex(8, ColbertIndexConfig(candidates_per_token=1))
    small.add(docids, vectors)
    few = small.search(["a"], queries[:1], k=40)["a"]
    assert 1 <= len(few) <= 5
    for p, s in few.items():
        assert s == pytest.approx(_brute_force_maxsim(queries[0], vectors[docids.index(p)]), abs=1e-5)
    for location in (tmp_path / "colbert", (tmp_path / "colbert-uri").as_uri()):
        loaded = ColbertIndex.load(index.save(location))
        assert loaded.search(["a", "b", "c"], queries, k=5) == run


def test_colbert_index_with_ivf_pq_tokens():
    rng = np.random.default_rng(2)
    docids, vectors = _token_corpus(rng, n=120, dim=8)
    index = ColbertIndex(8, ColbertIndexConfig(factory="IVF4,PQ4x4", search_params="nprobe=4",
                                               candidates_per_token=32))
    index.add(docids, vectors)
    q = _unit(rng, 1, 4, 8)
    run = index.search(["q"], q, k=3)["q"]
    assert len(run) == 3
    for p, s in run.items():  # candidates come from PQ; the scores are exact
        assert s == pytest.approx(_brute_force_maxsim(q[0], vectors[docids.index(p)]), abs=1e-5)
    with pytest.raises(ConfigError, match="could not train"):
        ColbertIndex(8, ColbertIndexConfig(factory="IVF512,Flat")).add(docids[:2], vectors[:2])


DOCS = [Document(f"d{i}", text) for i, text in enumerate([
    "a cat is a small domesticated carnivorous mammal", "cats purr when they are content",
    "dogs bark loudly at night", "the stock market fell sharply on monday",
    "felines such as lions and tigers are big cats", "volcanoes erupt molten lava",
    "honey bees pollinate flowers", "a recipe for bread needs flour, water and yeast!",
])]
QUERIES = [Query("q1", "what is a cat"), Query("q2", "stock prices"), Query("q3", "bread baking")]


@pytest.mark.slow
def test_ray_actor_pool_encodes_a_bi_encoder_corpus_into_shards(tmp_path: Path, local_ray):
    from model_fixtures import tiny_reranker

    model = tiny_reranker("bi-encoder", pooling="mean", similarity="cosine")
    model.save_pretrained(tmp_path / "student")
    shards = encode_corpus(tmp_path / "student", DOCS, tmp_path / "shards",
                           EncodeConfig(num_actors=2, cpus_per_actor=0.5, batch_size=3, rows_per_shard=4))
    assert len(list(Path(shards).glob("*.parquet"))) >= 2
    read = read_embedding_shards(shards)
    order = [read.docids.index(d.docid) for d in DOCS]
    expected = model.encode_passages([d.contents for d in DOCS]).numpy()
    np.testing.assert_allclose(read.embeddings[order], expected, atol=1e-5)
    index = build_dense_index(shards, DenseIndexConfig(factory="Flat"))
    run = retrieve(model, index, QUERIES, k=3)
    for q in QUERIES:
        scores = model.score(q.text, [d.contents for d in DOCS])
        best = sorted(zip(scores, [d.docid for d in DOCS]), reverse=True)[:3]
        assert list(run[q.qid]) == [d for _, d in best]
        assert list(run[q.qid].values()) == pytest.approx([s for s, _ in best], abs=1e-4)


@pytest.mark.slow
def test_ray_actor_pool_encodes_colbert_tokens_and_the_index_scores_like_the_model(tmp_path: Path, local_ray):
    from model_fixtures import tiny_reranker

    model = tiny_reranker("colbert", dim=16)
    model.save_pretrained(tmp_path / "colbert")
    shards = encode_corpus(tmp_path / "colbert", DOCS, (tmp_path / "shards").as_uri(),
                           EncodeConfig(num_actors=1, batch_size=4))
    index = ColbertIndex.from_shards(shards, ColbertIndexConfig(candidates_per_token=1000))
    assert index.num_tokens == sum(len(v) for v in model.encode_passages([d.contents for d in DOCS]))
    run = retrieve(model, index, QUERIES, k=len(DOCS))
    for q in QUERIES:
        scores = dict(zip([d.docid for d in DOCS], model.score(q.text, [d.contents for d in DOCS]), strict=True))
        assert run[q.qid] == pytest.approx(scores, abs=1e-4)
