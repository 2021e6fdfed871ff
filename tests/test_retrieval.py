"""BM25 (bm25s) and faiss dense indexes: ranking, top-k, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rankdistill.data.records import Document, Query
from rankdistill.data.trec import read_trec_run
from rankdistill.errors import ConfigError
from rankdistill.retrieval import BM25Config, BM25Index, DenseIndex, DenseIndexConfig

DOCS = [
    Document("d1", "honey bees pollinate flowers and make honey"),
    Document("d2", "volcanoes erupt molten lava and ash"),
    Document("d3", "bees"),
    Document("d4", "the stock market closed higher today"),
]


def test_bm25_matches_hand_computed_lucene_scores():
    index = BM25Index(BM25Config(stemmer=None, stopwords=None)).index(DOCS, show_progress=False)
    run = index.search([Query("q", "bees")], k=10)
    # Lucene BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)); tf part = tf / (tf + k1 (1 - b + b |d| / avgdl))
    n, df, k1, b = 4, 2, 0.9, 0.4
    avgdl = (7 + 6 + 1 + 6) / 4
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))

    def score(tf, length):
        return idf * tf / (tf + k1 * (1 - b + b * length / avgdl))

    assert list(run["q"]) == ["d3", "d1"]  # only docs with score > 0, best first
    assert run["q"]["d3"] == pytest.approx(score(1, 1), rel=1e-5)
    assert run["q"]["d1"] == pytest.approx(score(1, 7), rel=1e-5)


def test_bm25_stemming_save_load_and_trec(tmp_path: Path):
    index = BM25Index().index(DOCS, show_progress=False)
    queries = [Query("q1", "bee pollination"), Query("q2", "erupting volcano"), Query("q3", "zzz")]
    run = index.search(queries, k=2)
    assert next(iter(run["q1"])) in {"d1", "d3"} and next(iter(run["q2"])) == "d2"
    assert run["q3"] == {}  # no shared term: no hits, like Lucene
    loaded = BM25Index.load(index.save(tmp_path / "bm25"))
    assert loaded.search(queries, k=2) == run
    index.search_to_trec(queries, tmp_path / "run.trec", k=2)
    back = read_trec_run(tmp_path / "run.trec")
    assert set(back) == {"q1", "q2"}  # q3 had no hits
    for qid, docs in back.items():
        assert list(docs) == list(run[qid]) and list(docs.values()) == pytest.approx(list(run[qid].values()))


def test_bm25_on_demo_collection_is_sane(demo):
    index = BM25Index().index(demo.iter_corpus(), show_progress=False)
    queries = list(demo.queries("test").values())
    run = index.search(queries, k=100)
    assert len(run) == len(queries)
    assert all(len(docs) <= 100 for docs in run.values())


def test_one_first_stage_serves_any_queries_of_a_corpus(tmp_path: Path):
    """FirstStage: BM25 indexed once for every set of queries (a dict, not a dataset split), the
    same run as the index itself; a run file read once, each query's top k, other queries left out."""
    import json

    from rankdistill.data.beir import BeirFolder
    from rankdistill.retrieval.first_stage import FirstStage, FirstStageConfig

    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.docid, "text": d.text}) + "\n" for d in DOCS))
    folder = BeirFolder(tmp_path)
    train, test = {"q1": Query("q1", "bee pollination")}, {"q2": Query("q2", "erupting volcano")}
    bm25 = FirstStage(FirstStageConfig(k=3), folder, use_ray=False, show_progress=False)
    expected = BM25Index().index(DOCS, show_progress=False).search([*train.values(), *test.values()], k=2)
    assert bm25.search(train, 2) == {"q1": expected["q1"]} and bm25.search(test, 2) == {"q2": expected["q2"]}
    assert bm25.name == "BM25" and len(bm25.search(train)["q1"]) == 2  # k: config.k (3), positive scores only
    (tmp_path / "run.trec").write_text("q1 Q0 d3 1 9.0 x\nq1 Q0 d1 2 8.0 x\nq1 Q0 d2 3 7.0 x\nq2 Q0 d2 1 5.0 x\n")
    run = FirstStage(FirstStageConfig(method="run", run=str(tmp_path / "run.trec"), k=2), folder, key="candidates")
    assert run.search(train) == {"q1": {"d3": 9.0, "d1": 8.0}} and run.search(test, 1) == {"q2": {"d2": 5.0}}
    assert run.name == f"run {tmp_path / 'run.trec'}"
    with pytest.raises(ConfigError, match="candidates.run"):
        FirstStage(FirstStageConfig(method="run"), folder, key="candidates")


def test_search_many_is_one_search_cut_per_request(tmp_path: Path):
    """FirstStage.search_many: the union of the requests' queries searched once at the largest k,
    each request cut to its own k (the same runs as one search per request); a query id with two
    texts makes it search request by request."""
    import json

    from rankdistill.data.beir import BeirFolder
    from rankdistill.retrieval.first_stage import FirstStage, FirstStageConfig

    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.docid, "text": d.text}) + "\n" for d in DOCS))
    bm25 = FirstStage(FirstStageConfig(k=3), BeirFolder(tmp_path), use_ray=False, show_progress=False)
    searches = []
    search = bm25.search
    bm25.search = lambda queries, k=None: searches.append((sorted(queries), k)) or search(queries, k)
    train, dev = {"q1": Query("q1", "bee pollination")}, {"q2": Query("q2", "erupting volcano honey")}
    many = bm25.search_many([(train, 1), (dev, 3)])
    assert searches == [(["q1", "q2"], 3)]
    assert many == [search(train, 1), search(dev, 3)]
    assert list(many[0]["q1"]) == ["d1"]  # d1 alone has both "bee(s)" and "pollinat(e|ion)" (stemmed)
    searches.clear()
    clash = {"q1": Query("q1", "volcano")}
    assert bm25.search_many([(train, 2), (clash, 2)]) == [search(train, 2), search(clash, 2)]
    assert searches == [(["q1"], 2), (["q1"], 2)]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_dense_index_finds_true_inner_product_neighbours(tmp_path: Path, kind: str):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(600, 16)).astype("float32")
    queries = rng.normal(size=(20, 16)).astype("float32")
    config = DenseIndexConfig(kind=kind, ivf_nlist=8, ivf_nprobe=8, hnsw_ef_search=256)
    index = DenseIndex(16, config)
    index.add([f"d{i}" for i in range(600)], docs)
    run = index.search([f"q{i}" for i in range(20)], queries, k=5)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    hits = sum(len(set(run[f"q{i}"]) & {f"d{j}" for j in truth[i]}) for i in range(20))
    assert hits / 100 >= (1.0 if kind != "hnsw" else 0.95)  # flat and full-probe IVF are exact
    top = run["q0"]
    best = f"d{truth[0][0]}"
    assert top[best] == pytest.approx(float(queries[0] @ docs[truth[0][0]]), rel=1e-4)
    loaded = DenseIndex.load(index.save(tmp_path / kind))
    assert loaded.search(["q0"], queries[:1], k=5) == {"q0": top}


def test_dense_index_errors():
    with pytest.raises(ConfigError, match="unknown dense index kind"):
        DenseIndex(4, DenseIndexConfig(kind="lsh"))
    index = DenseIndex(4, DenseIndexConfig(kind="ivf", ivf_nlist=64))
    with pytest.raises(ConfigError, match="needs at least"):
        index.add(["a"], np.zeros((1, 4)))
    with pytest.raises(Exception, match=r"shape \(n, 4\)"):
        DenseIndex(4).add(["a"], np.zeros((1, 5)))
