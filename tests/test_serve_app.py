"""The Serve app over real HTTP on 127.0.0.1: three rerank shapes, /search, models from a folder and
from an MLflow registry URI, multiplexing, chunking, auth and bad requests.

One app for the module (Ray + Serve start once, ~15 s); tiny random students with the real MiniLM
tokenizer. Expected scores come from the library's in-process ``score()`` on the same inputs.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from serve_fixtures import running_app

pytestmark = pytest.mark.slow  # one Ray + Serve start for the module (~20 s idle, minutes on a busy machine)

TOKEN = "t0ken-for-tests"
TOKEN_ENV = "RANKDISTILL_TEST_SERVE_TOKEN"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = {"max_documents": 20, "max_document_chars": 2000, "max_query_chars": 200, "max_body_bytes": 30_000}
# single-token words (checked in test_chunking), so windows can be computed by hand
WORDS = ["the", "cat", "dog", "house", "water", "tree", "music", "river", "city", "night", "green", "stone",
         "light", "paper", "horse", "table", "money", "music", "road", "bird", "school", "ocean", "fire",
         "snow", "king", "bread", "glass", "field"]  # 28 words


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two saved students (mono; CELI with 16-token passages) and the MLflow store holding mono."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from rankdistill.models import load_reranker
    from rankdistill.tracking.mlflow_tracking import register_model

    root = tmp_path_factory.mktemp("serve")
    paths = {"tiny-mono": root / "mono", "tiny-celi": root / "celi"}
    tiny_reranker("mono", seed=0).save_pretrained(paths["tiny-mono"])
    tiny_reranker("celi", seed=5, passage_length=16).save_pretrained(paths["tiny-celi"])
    # a local sqlite registry; the test registers the mono student and gives version 1 an alias
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("serve-test", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(experiment)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        version = register_model(run.info.run_id, paths["tiny-mono"], "tiny-reranker")
        client.set_registered_model_alias("tiny-reranker", "champion", version)
    finally:
        mlflow.set_tracking_uri(previous)
    assert version == "1"
    corpus = root / "corpus.jsonl"
    docs = {f"d{i}": text for i, text in enumerate(PASSAGES)}
    corpus.write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    loaded = {name: load_reranker(path) for name, path in paths.items()}
    return {"paths": paths, "uri": uri, "loaded": loaded, "corpus": corpus, "docs": docs}


@pytest.fixture(scope="module")
def url(models):
    args = {
        "models": {
            "tiny-mono": str(models["paths"]["tiny-mono"]),
            "tiny-celi": str(models["paths"]["tiny-celi"]),
            "registry-version": "models:/tiny-reranker/1",
            "registry-alias": "models:/tiny-reranker@champion",
        },
        "tracking_uri": models["uri"],
        "scoring": {"token_budget": 256, "chunk_overlap": 4, "dtype": "float32"},
        "limits": LIMITS,
        "auth_token_env": TOKEN_ENV,
        "retriever": {"kind": "bm25", "corpus": str(models["corpus"])},
        "reranker_options": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        "gateway_options": {"ray_actor_options": {"num_cpus": 0.25}},
        "retriever_options": {"ray_actor_options": {"num_cpus": 0.25}},
    }
    with running_app(args, env={TOKEN_ENV: TOKEN}) as base:
        yield base


def post(url: str, path: str, body, headers=None, **kw) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, headers={**AUTH, **(headers or {})}, timeout=120, **kw)


def test_v1_rerank_matches_in_process_score(url, models):
    ref = models["loaded"]["tiny-mono"].score(QUERY, PASSAGES)
    docs = [PASSAGES[0], {"text": PASSAGES[1]}, *PASSAGES[2:]]
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": docs, "model": "tiny-mono"})
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert sorted(x["index"] for x in results) == list(range(len(PASSAGES)))
    expected_order = sorted(range(len(ref)), key=lambda i: -ref[i])
    assert [x["index"] for x in results] == expected_order
    for x in results:
        assert x["relevance_score"] == pytest.approx(sigmoid(ref[x["index"]]), abs=1e-5)
        assert x["document"] == {"text": PASSAGES[x["index"]]}
        assert x["truncated"] is False and x["chunks"] == 1
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)


def test_v1_top_n_default_model_and_no_documents(url, models):
    ref = models["loaded"]["tiny-mono"].score(QUERY, PASSAGES)  # tiny-mono is the first model: default
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": PASSAGES, "top_n": 2, "return_documents": False})
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert [x["index"] for x in results] == sorted(range(len(ref)), key=lambda i: -ref[i])[:2]
    assert all("document" not in x for x in results)
    # top_n above the number of documents returns them all
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": PASSAGES[:2], "top_n": 10})
    assert len(r.json()["results"]) == 2


def test_v2_rerank_shape_and_max_tokens_per_doc(url, models):
    celi = models["loaded"]["tiny-celi"]
    r = post(url, "/v2/rerank", {"model": "tiny-celi", "query": QUERY, "documents": PASSAGES, "top_n": 3})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert set(body) == {"id", "results", "meta"} and body["meta"]["api_version"]["version"] == "2"
    ref = celi.score(QUERY, PASSAGES)
    assert [x["index"] for x in body["results"]] == sorted(range(5), key=lambda i: -ref[i])[:3]
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(sigmoid(ref[x["index"]]), abs=1e-5)
    # max_tokens_per_doc=3 cuts every document to its first three tokens (hand-cut texts below)
    r = post(url, "/v2/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [PASSAGES[0], PASSAGES[2]],
                                 "max_tokens_per_doc": 3})
    cut = celi.score(QUERY, ["a cat is", "dogs bark loudly"])
    got = {x["index"]: x for x in r.json()["results"]}
    for i in (0, 1):
        assert got[i]["truncated"] is True
        assert got[i]["relevance_score"] == pytest.approx(sigmoid(cut[i]), abs=1e-5)


def test_tei_rerank_raw_scores_text_and_truncate(url, models):
    ref = models["loaded"]["tiny-mono"].score(QUERY, PASSAGES)
    r = post(url, "/rerank", {"query": QUERY, "texts": PASSAGES, "raw_scores": True, "return_text": True})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert isinstance(body, list) and [x["index"] for x in body] == sorted(range(5), key=lambda i: -ref[i])
    for x in body:
        assert x["score"] == pytest.approx(ref[x["index"]], abs=1e-5)
        assert x["text"] == PASSAGES[x["index"]]
    r = post(url, "/rerank", {"query": QUERY, "texts": PASSAGES})
    assert all(x["score"] == pytest.approx(sigmoid(ref[x["index"]]), abs=1e-5) and "text" not in x for x in r.json())
    # tiny-celi reads 16 passage tokens: a longer text is a 413 unless truncate=true (TEI semantics)
    long_text = " ".join(WORDS)
    r = post(url, "/rerank", {"model": "tiny-celi", "query": QUERY, "texts": ["cats", long_text]})
    assert r.status_code == 413 and "texts[1]" in r.json()["error"]
    r = post(url, "/rerank", {"model": "tiny-celi", "query": QUERY, "texts": ["cats", long_text], "truncate": True,
                              "raw_scores": True})
    assert r.status_code == 200
    got = {x["index"]: x for x in r.json()}
    assert got[1]["truncated"] is True and got[0]["truncated"] is False
    assert got[1]["score"] == pytest.approx(models["loaded"]["tiny-celi"].score(QUERY, [long_text])[0], abs=1e-5)


def test_two_multiplexed_models_answer_with_their_own_scores(url, models):
    for name in ("tiny-mono", "tiny-celi", "tiny-mono"):
        r = post(url, "/rerank", {"model": name, "query": QUERY, "texts": PASSAGES, "raw_scores": True})
        ref = models["loaded"][name].score(QUERY, PASSAGES)
        assert {x["index"]: x["score"] for x in r.json()} == {i: pytest.approx(s, abs=1e-5) for i, s in enumerate(ref)}
    mono = models["loaded"]["tiny-mono"].score(QUERY, PASSAGES)
    celi = models["loaded"]["tiny-celi"].score(QUERY, PASSAGES)
    assert max(abs(a - b) for a, b in zip(mono, celi)) > 0.01  # the two models really differ


def test_models_from_the_mlflow_registry(url, models):
    ref = models["loaded"]["tiny-mono"].score(QUERY, PASSAGES)  # the registered folder
    for name in ("registry-version", "registry-alias"):
        r = post(url, "/rerank", {"model": name, "query": QUERY, "texts": PASSAGES, "raw_scores": True})
        assert r.status_code == 200, r.text[:300]
        assert {x["index"]: x["score"] for x in r.json()} == {i: pytest.approx(s, abs=1e-5) for i, s in enumerate(ref)}


def test_chunking_scores_the_best_window(url, models):
    celi = models["loaded"]["tiny-celi"]
    tok = celi.tokenizer.tokenizer
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in WORDS)
    doc = " ".join(WORDS)  # 28 tokens; windows of 16 with 4 shared -> [0, 16) and [12, 28)
    windows = [" ".join(WORDS[0:16]), " ".join(WORDS[12:28])]
    expected = max(celi.score(QUERY, windows))
    r = post(url, "/v1/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [doc, "cats"], "chunking": True})
    got = {x["index"]: x for x in r.json()["results"]}
    assert got[0]["chunks"] == 2 and got[0]["truncated"] is False and got[0]["tokens"] == 28
    assert got[0]["relevance_score"] == pytest.approx(sigmoid(expected), abs=1e-5)
    assert got[1]["chunks"] == 1
    # Cohere v1's max_chunks_per_doc > 1 turns chunking on too; without it the document is truncated
    r = post(url, "/v1/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [doc], "max_chunks_per_doc": 4})
    assert r.json()["results"][0]["chunks"] == 2
    r = post(url, "/v1/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [doc]})
    x = r.json()["results"][0]
    assert x["chunks"] == 1 and x["truncated"] is True
    assert x["relevance_score"] == pytest.approx(sigmoid(celi.score(QUERY, [doc])[0]), abs=1e-5)


def test_search_bm25_then_rerank(url, models):
    from rankdistill.data.records import Document, Query
    from rankdistill.retrieval.bm25 import BM25Index

    index = BM25Index().index([Document(k, v) for k, v in models["docs"].items()], show_progress=False)
    bm25 = index.search([Query("q", "cats")], k=10)["q"]
    assert len(bm25) >= 2  # "cats" matches at least two passages
    r = post(url, "/search", {"query": "cats", "k": 10, "top_n": 10, "return_documents": True})
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert {x["id"] for x in results} == set(bm25)
    ids = [x["id"] for x in results]
    ref = models["loaded"]["tiny-mono"].score("cats", [models["docs"][d] for d in ids])
    for x, s in zip(results, ref):
        assert x["retrieval_score"] == pytest.approx(bm25[x["id"]], rel=1e-6)
        assert x["score"] == pytest.approx(s, abs=1e-5)
        assert x["text"] == models["docs"][x["id"]]
    assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)


def test_healthz_models_openapi(url):
    assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"  # no token needed
    data = requests.get(f"{url}/v1/models", headers=AUTH, timeout=60).json()["data"]
    assert {m["id"] for m in data} == {"tiny-mono", "tiny-celi", "registry-version", "registry-alias"}
    arch = {m["id"]: m["architecture"] for m in data}
    assert arch["tiny-mono"] == "mono" and arch["tiny-celi"] == "celi" and arch["registry-alias"] == "mono"
    paths = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/search", "/healthz", "/v1/models"} <= set(paths)


def test_auth(url):
    body = {"query": QUERY, "documents": PASSAGES}
    assert requests.post(f"{url}/v1/rerank", json=body, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    r = requests.post(f"{url}/v1/rerank", json=body, headers=wrong, timeout=30)
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert requests.post(f"{url}/v1/rerank", json=body, headers={"Authorization": TOKEN}, timeout=30).status_code == 401
    assert requests.get(f"{url}/v1/models", timeout=30).status_code == 401
    assert post(url, "/v1/rerank", body).status_code == 200


BAD_REQUESTS = [
    # (id, path, body (str = raw bytes), status, words the message must contain)
    ("malformed-json", "/v1/rerank", '{"query": "a", "documents": [', 400, "malformed JSON"),
    ("json-not-object", "/v1/rerank", "[1, 2]", 422, "body"),
    ("missing-query", "/v1/rerank", {"documents": ["a"]}, 422, "query"),
    ("empty-query", "/v1/rerank", {"query": "", "documents": ["a"]}, 422, "query"),
    ("blank-query", "/v2/rerank", {"query": "   ", "documents": ["a"]}, 422, "query"),
    ("query-not-string", "/v1/rerank", {"query": 5, "documents": ["a"]}, 422, "query"),
    ("query-too-long", "/v1/rerank", {"query": "q" * 201, "documents": ["a"]}, 413, "query"),
    ("missing-documents", "/v1/rerank", {"query": "a"}, 422, "documents"),
    ("empty-documents", "/v1/rerank", {"query": "a", "documents": []}, 422, "documents"),
    ("document-not-string", "/v1/rerank", {"query": "a", "documents": ["ok", 3]}, 422, "documents.1"),
    ("empty-document", "/v1/rerank", {"query": "a", "documents": ["ok", ""]}, 422, "documents[1]"),
    ("v2-object-documents", "/v2/rerank", {"query": "a", "documents": [{"text": "x"}]}, 422, "documents.0"),
    ("too-many-documents", "/v1/rerank", {"query": "a", "documents": ["d"] * 21}, 413, "21 documents"),
    ("document-too-long", "/v1/rerank", {"query": "a", "documents": ["x" * 2001]}, 413, "documents[0]"),
    ("body-too-large", "/v1/rerank", {"query": "a", "documents": ["x" * 1999] * 16}, 413, "body"),
    ("top-n-zero", "/v1/rerank", {"query": "a", "documents": ["x"], "top_n": 0}, 422, "top_n"),
    ("top-n-too-large", "/v2/rerank", {"query": "a", "documents": ["x"], "top_n": 21}, 422, "top_n"),
    ("top-n-not-int", "/v1/rerank", {"query": "a", "documents": ["x"], "top_n": "3"}, 422, "top_n"),
    ("max-tokens-zero", "/v2/rerank", {"query": "a", "documents": ["x"], "max_tokens_per_doc": 0}, 422,
     "max_tokens_per_doc"),
    ("unknown-model", "/v1/rerank", {"query": "a", "documents": ["x"], "model": "gpt-9"}, 404, "gpt-9"),
    ("tei-missing-texts", "/rerank", {"query": "a"}, 422, "texts"),
    ("tei-texts-not-list", "/rerank", {"query": "a", "texts": "x"}, 422, "texts"),
    ("search-k-zero", "/search", {"query": "a", "k": 0}, 422, "k"),
    ("search-empty-query", "/search", {"query": ""}, 422, "query"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests(url, case):
    _, path, body, status, words = case
    if isinstance(body, str):
        r = requests.post(f"{url}{path}", data=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    else:
        r = post(url, path, body)
    assert r.status_code == status, r.text[:300]
    assert words in r.json()["error"]


def test_still_serving_after_bad_requests(url, models):
    for case in BAD_REQUESTS[:5]:
        requests.post(f"{url}{case[1]}", data=json.dumps(case[2]) if not isinstance(case[2], str) else case[2],
                      headers=AUTH, timeout=30)
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": PASSAGES})
    assert r.status_code == 200 and len(r.json()["results"]) == 5
