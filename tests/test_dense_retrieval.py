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
from rankdistill.retrieval.colbert_index import memory_model


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
    with pytest.raises(ConfigError, match="2 vectors are too few to train 64 IVF lists"):
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
    # 512 lists on a handful of tokens: refused before faiss, naming the keys (faiss would only warn
    # at fewer than 39 per list, and fail below 1)
    with pytest.raises(ConfigError, match="512 IVF lists on .* token vectors.*index.train_tokens"):
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


def _flat_corpus(rng, n, dim):
    docids, vectors = _token_corpus(rng, n=n, dim=dim)
    counts = np.array([len(v) for v in vectors])
    return docids, vectors, np.concatenate(vectors), np.concatenate([[0], np.cumsum(counts)])


def test_colbert_float16_store_scores_within_fp16_rounding_and_halves_the_bytes(tmp_path: Path):
    rng = np.random.default_rng(3)
    docids, vectors, _, _ = _flat_corpus(rng, 60, 8)
    q = _unit(rng, 1, 4, 8)
    index = ColbertIndex(8, ColbertIndexConfig(storage="float16", candidates_per_token=10_000))
    index.add(docids, vectors)
    run = index.search(["q"], q, k=60)["q"]
    for p, s in run.items():  # 4 query tokens x |q.d| <= 1 each, fp16 relative step 2^-11
        assert s == pytest.approx(_brute_force_maxsim(q[0], vectors[docids.index(p)]), abs=4 * 2 ** -10)
    assert index.memory_bytes()["store"] == index.num_tokens * 8 * 2
    loaded = ColbertIndex.load(index.save(tmp_path / "fp16"))
    assert loaded._store.dtype == np.float16 and loaded.search(["q"], q, k=60) == {"q": run}


def test_colbert_residual_codec_with_centroid_candidates(tmp_path: Path):
    """IVF + 8-bit residual scalar quantiser: decoded vectors are the centroid plus the quantised
    residual; with every centroid probed and every passage re-scored, the ranking is MaxSim over
    the decoded vectors; the centroid lists hold one entry per distinct (centroid, passage)."""
    rng = np.random.default_rng(4)
    docids, _, matrix, offsets = _flat_corpus(rng, 300, 16)
    config = ColbertIndexConfig(factory="centroids", storage="IVF8,SQ8", nprobe=8, ndocs=10_000)
    index = ColbertIndex(16, config)
    index.add(docids, matrix, offsets)
    decoded = index.token_vectors(np.arange(index.num_tokens))
    assert np.abs(decoded - matrix).max() < 0.02  # 8 bits over each dimension's residual range
    _, cells = index._codec.quantizer.search(matrix, 1)
    owner = np.repeat(np.arange(300), np.diff(offsets))
    assert len(index._list_pids) == len(set(zip(cells[:, 0].tolist(), owner.tolist(), strict=True)))
    q = _unit(rng, 2, 4, 16)
    run = index.search(["a", "b"], q, k=5)
    for i, qid in enumerate(["a", "b"]):
        truth = [_brute_force_maxsim(q[i], decoded[offsets[n]:offsets[n + 1]]) for n in range(300)]
        best = np.argsort(-np.array(truth))[:5]
        assert list(run[qid]) == [docids[n] for n in best]
        assert list(run[qid].values()) == pytest.approx([truth[n] for n in best], abs=1e-5)
    # memory: the store is exactly the codec bytes; the lists at most one 4-byte entry per token
    measured, model = index.memory_bytes(), memory_model(config, 16, index.num_tokens / 300)
    assert measured["store"] == index.num_tokens * (1 + 16) == pytest.approx(model.store * 300)
    assert measured["candidates"] - 8 * 9 <= model.candidates * 300
    loaded = ColbertIndex.load(index.save((tmp_path / "codec").as_uri()))
    assert loaded.search(["a", "b"], q, k=5) == run
    few = ColbertIndex(16, ColbertIndexConfig(factory="centroids", storage="IVF8,SQ8", nprobe=1, ndocs=3))
    few.add(docids, matrix, offsets)
    assert len(few.candidates(q[0])) == 3


def test_colbert_index_config_errors():
    with pytest.raises(ConfigError, match="index.factory"):
        ColbertIndexConfig(factory="centroids", storage="float32")
    with pytest.raises(ConfigError, match="index.storage"):
        ColbertIndex(8, ColbertIndexConfig(storage="PQ4"))
    with pytest.raises(ConfigError, match="index.ndocs"):
        ColbertIndexConfig(ndocs=0)
