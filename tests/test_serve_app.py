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
LIMITS = {"max_documents": 20, "max_document_chars": 2000, "max_query_chars": 200, "max_body_bytes": 30_000,
          "body_read_timeout_s": 2.0}
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
        "model_aliases": {"rerank-v3.5": "tiny-celi"},
        "tracking_uri": models["uri"],
        "scoring": {"token_budget": 256, "chunk_overlap": 4, "precision": "fp32"},
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
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": docs, "model": "tiny-mono", "return_documents": True})
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    details = r.json()["meta"]["rankdistill"]["documents"]
    assert sorted(x["index"] for x in results) == list(range(len(PASSAGES)))
    expected_order = sorted(range(len(ref)), key=lambda i: -ref[i])
    assert [x["index"] for x in results] == expected_order
    for x in results:
        assert x["relevance_score"] == pytest.approx(sigmoid(ref[x["index"]]), abs=1e-5)
        assert x["document"] == {"text": PASSAGES[x["index"]]}
        assert set(x) == {"index", "relevance_score", "document"}  # Cohere's fields only
        assert details[x["index"]]["truncated"] is False and details[x["index"]]["chunks"] == 1
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
        assert r.json()["meta"]["rankdistill"]["documents"][i]["truncated"] is True
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
    assert all(set(x) == {"index", "score"} for x in r.json())  # TEI's fields only
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
    details = r.json()["meta"]["rankdistill"]["documents"]
    assert details[0] == {"chunks": 2, "truncated": False, "tokens": 28}
    assert got[0]["relevance_score"] == pytest.approx(sigmoid(expected), abs=1e-5)
    assert details[1]["chunks"] == 1
    # Cohere bills a chunked document once per window: 3 scored texts -> 1 unit (per 100)
    assert r.json()["meta"]["billed_units"] == {"search_units": 1}
    # Cohere v1's max_chunks_per_doc > 1 turns chunking on too; without it the document is truncated
    r = post(url, "/v1/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [doc], "max_chunks_per_doc": 4})
    assert r.json()["meta"]["rankdistill"]["documents"][0]["chunks"] == 2
    r = post(url, "/v1/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [doc]})
    x = r.json()["results"][0]
    assert r.json()["meta"]["rankdistill"]["documents"][0] == {"chunks": 1, "truncated": True, "tokens": 28}
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
    health = requests.get(f"{url}/healthz", timeout=30)  # no token needed; scores one passage
    assert health.status_code == 200 and health.json()["default_model"] == "tiny-mono"
    data = requests.get(f"{url}/v1/models", headers=AUTH, timeout=60).json()["data"]
    assert {m["id"] for m in data} == {"tiny-mono", "tiny-celi", "registry-version", "registry-alias"}
    arch = {m["id"]: m["architecture"] for m in data}
    assert arch["tiny-mono"] == "mono" and arch["tiny-celi"] == "celi" and arch["registry-alias"] == "mono"
    paths = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/search", "/healthz", "/readyz", "/health", "/info",
            "/v1/models"} <= set(paths)


def test_auth(url):
    body = {"query": QUERY, "documents": PASSAGES}
    assert requests.post(f"{url}/v1/rerank", json=body, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    r = requests.post(f"{url}/v1/rerank", json=body, headers=wrong, timeout=30)
    assert r.status_code == 401 and "token" in r.json()["error"] and r.json()["error_type"] == "unauthorized"
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
    # not valid Unicode (a lone surrogate) anywhere a text goes: 4xx, never a 500 with a traceback
    ("surrogate-query", "/v1/rerank", '{"query": "a\\ud800b", "documents": ["x"]}', 422, "query: not valid Unicode"),
    ("surrogate-document", "/v2/rerank", '{"query": "a", "documents": ["ok", "\\udfff"]}', 422, "documents[1]"),
    ("surrogate-tei-text", "/rerank", '{"query": "a", "texts": ["\\ud800"]}', 422, "texts[0]"),
    ("surrogate-model", "/rerank", '{"query": "a", "texts": ["x"], "model": "\\ud800"}', 422, "model"),
    ("surrogate-field-name", "/rerank", '{"query": "a", "texts": ["x"], "\\ud800": 1}', 422, "unicode"),
    ("surrogate-search", "/search", '{"query": "\\udbff"}', 422, "query"),
    # silently ignored input is refused
    ("unknown-field-top-k", "/v1/rerank", {"query": "a", "documents": ["x"], "top_k": 3}, 422, "top_k: unknown field"),
    ("unknown-field-tei", "/rerank", {"query": "a", "texts": ["x"], "documents": ["y"]}, 422, "documents: unknown"),
    ("zero-width-document", "/v1/rerank", {"query": "a", "documents": ["ok", "\u200b\u200d \ufeff"]}, 422,
     "documents[1]: empty document after normalisation"),
    ("control-only-query", "/rerank", {"query": "\x00\x01", "texts": ["x"]}, 422, "query"),
    ("object-without-text", "/v1/rerank", {"query": "a", "documents": [{"title": "x"}]}, 422, "documents[0]"),
    ("rank-field-missing", "/v1/rerank", {"query": "a", "documents": [{"title": "x"}], "rank_fields": ["body"]},
     422, "no field 'body'"),
    ("bad-truncation-direction", "/rerank", {"query": "a", "texts": ["x"], "truncation_direction": "Up"}, 422,
     "truncation_direction"),
    ("not-json-bytes", "/rerank", "\xff\xfe{", 400, ""),
    ("deep-nesting", "/rerank", "[" * 100_00 + "]" * 100_00, 400, ""),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests(url, case):
    _, path, body, status, words = case
    if isinstance(body, str):
        r = requests.post(f"{url}{path}", data=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    else:
        r = post(url, path, body)
    assert r.status_code == status, r.text[:300]
    assert set(r.json()) == {"error", "error_type"}, r.text[:300]  # TEI's error shape, never {"detail"}
    assert words in r.json()["error"]
    assert "Traceback" not in r.text


def test_still_serving_after_bad_requests(url, models):
    for case in BAD_REQUESTS[:5]:
        requests.post(f"{url}{case[1]}", data=json.dumps(case[2]) if not isinstance(case[2], str) else case[2],
                      headers=AUTH, timeout=30)
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": PASSAGES})
    assert r.status_code == 200 and len(r.json()["results"]) == 5


def test_unknown_paths_and_methods_answer_in_tei_error_shape(url):
    r = requests.get(f"{url}/no/such/path", headers=AUTH, timeout=30)
    assert r.status_code == 404 and set(r.json()) == {"error", "error_type"} and "/no/such/path" in r.json()["error"]
    r = requests.get(f"{url}/v1/rerank", headers=AUTH, timeout=30)
    assert r.status_code == 405 and set(r.json()) == {"error", "error_type"} and "GET" in r.json()["error"]
    assert "detail" not in r.text


def test_fuzz_arbitrary_json_and_unicode_never_5xx(url):
    """Hypothesis over arbitrary JSON (unicode with lone surrogates, nested values, wrong types) sent
    to every POST endpoint: always a 4xx or 200 in JSON, never a 5xx or a traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    chars = st.characters(codec=None, exclude_categories=()) | st.sampled_from(["\ud800", "\udfff", "\u200b", "\x00"])
    text = st.text(chars, max_size=12)
    scalars = st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | text
    values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3),
                          max_leaves=8)
    fields = st.sampled_from(["query", "documents", "texts", "top_n", "model", "return_documents", "rank_fields",
                              "max_chunks_per_doc", "max_tokens_per_doc", "raw_scores", "truncate", "k",
                              "truncation_direction", "chunking", "return_text"])
    plausible = st.fixed_dictionaries({"query": text}, optional={
        "documents": st.lists(text | st.dictionaries(text, text, max_size=2), max_size=3),
        "texts": st.lists(text, max_size=3)}) | st.dictionaries(fields, values, max_size=5) | values
    session = requests.Session()

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(["/v1/rerank", "/v2/rerank", "/rerank", "/search"]), body=plausible)
    def check(path, body):
        data = json.dumps(body)  # ensure_ascii: lone surrogates travel as \\udXXX escapes
        r = session.post(f"{url}{path}", data=data, headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
        assert r.status_code < 500, (path, data[:200], r.text[:300])
        assert "Traceback" not in r.text and "pid=" not in r.text
        if r.status_code != 200:
            assert set(r.json()) == {"error", "error_type"}

    check()


def test_bad_input_sweep_gives_no_5xx(url):
    """The sweep of the issue: every bad request above plus hostile bodies, 60+ requests: 0 5xx, 0 tracebacks."""
    hostile = [c[2] for c in BAD_REQUESTS] + [
        '{"query": "\\ud800", "documents": [{"text": "\\udc00", "x": "\\ud800"}], "return_documents": true}',
        '{"query": "a", "documents": ["x"], "top_n": 1e400}', '{"query": "a", "documents": ["x"], "top_n": NaN}',
        '{"query": "a", "documents": null}', "null", "", "\u0000", '{"query": {"$ne": 1}, "documents": ["x"]}',
        '{"query": "a", "documents": ["x"], "top_n": 99999999999999999999999999}',
    ]
    statuses = []
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        for body in hostile:
            data = body if isinstance(body, str) else json.dumps(body)
            r = requests.post(f"{url}{path}", data=data.encode("utf-8", "surrogatepass"),
                              headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
            statuses.append(r.status_code)
            assert r.status_code < 500 and "Traceback" not in r.text, (path, data[:100], r.text[:300])
    assert len(statuses) >= 60


def test_torch_threads_and_passive_omp_wait_in_the_replica(url):
    info = requests.get(f"{url}/info", headers=AUTH, timeout=60).json()
    # the replica runs with num_cpus 0.5 -> Ray gives it 1 OpenMP thread, and the passive wait policy
    assert info["replica"] == {"torch_threads": 1, "omp_wait_policy": "PASSIVE"}
    assert info["model_id"] == "tiny-mono" and info["max_client_batch_size"] == LIMITS["max_documents"]
    assert info["model_type"]["reranker"]
    r = requests.get(f"{url}/health", timeout=60)  # TEI's probe, no token
    assert r.status_code == 200


def _raw_http(url: str, head: bytes, pieces: list[bytes], pause: float = 0.0, read_timeout: float = 20.0) -> bytes:
    import socket
    import time
    from urllib.parse import urlparse

    where = urlparse(url)
    with socket.create_connection((where.hostname, where.port), timeout=read_timeout) as sock:
        sock.sendall(head)
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: it stopped reading
                break
            time.sleep(pause)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def test_chunked_body_is_capped_while_streaming(url):
    """A chunked body larger than max_body_bytes: 413 after the limit, without the client finishing
    it (the last chunk is never sent, so a server reading it in full would never answer)."""
    head = (b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 8192
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = _raw_http(url, head, [chunk] * 8)  # 64 KB > 30 KB, no terminating 0-chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_stalled_body_times_out(url):
    """Slowloris: a body that stops arriving gets 408 after body_read_timeout_s (2 s here), so slow
    sockets do not hold the gateway."""
    import concurrent.futures
    import time

    head = (b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\nContent-Length: 500\r\n\r\n")
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _raw_http(url, head, [b'{"query": "a", '], read_timeout=30), range(8)))
    elapsed = time.monotonic() - start
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert elapsed < 15, elapsed
    assert post(url, "/rerank", {"query": QUERY, "texts": PASSAGES}).status_code == 200


def test_cohere_return_documents_objects_and_rank_fields(url, models):
    mono = models["loaded"]["tiny-mono"]
    # v1: null (what the SDK sends) and absent mean no documents, as Cohere
    for extra in ({"return_documents": None}, {}):
        r = post(url, "/v1/rerank", {"query": QUERY, "documents": PASSAGES, **extra})
        assert r.status_code == 200 and all("document" not in x for x in r.json()["results"]), r.text[:300]
    # v2 honours return_documents
    r = post(url, "/v2/rerank", {"query": QUERY, "documents": PASSAGES[:2], "return_documents": True})
    assert {x["index"]: x["document"] for x in r.json()["results"]} == {0: {"text": PASSAGES[0]},
                                                                          1: {"text": PASSAGES[1]}}
    # objects keep every field; rank_fields scores "name: value" lines (Cohere's rendering)
    docs = [{"title": "Cats", "body": PASSAGES[0], "id": 7, "tags": ["a"]}, {"title": "Dogs", "body": PASSAGES[2]}]
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": docs, "rank_fields": ["title", "body"],
                                 "return_documents": True})
    assert r.status_code == 200, r.text[:300]
    ref = mono.score(QUERY, [f"title: Cats\nbody: {PASSAGES[0]}", f"title: Dogs\nbody: {PASSAGES[2]}"])
    for x in r.json()["results"]:
        assert x["document"] == docs[x["index"]]
        assert x["relevance_score"] == pytest.approx(sigmoid(ref[x["index"]]), abs=1e-5)
    # without rank_fields an object's "text" is scored and the other fields come back untouched
    r = post(url, "/v1/rerank", {"query": QUERY, "documents": [{"text": PASSAGES[1], "url": "u"}],
                                 "return_documents": True})
    x = r.json()["results"][0]
    assert x["document"] == {"text": PASSAGES[1], "url": "u"}
    assert x["relevance_score"] == pytest.approx(sigmoid(mono.score(QUERY, [PASSAGES[1]])[0]), abs=1e-5)


def test_billing_counts_per_100_documents_and_aliases(url, models):
    r = post(url, "/v2/rerank", {"query": QUERY, "documents": PASSAGES})
    assert r.json()["meta"]["billed_units"] == {"search_units": 1}
    assert r.json()["meta"]["rankdistill"]["score"]["relevance_score"] == "sigmoid(logit)"
    # 20 documents chunked into 16-token windows of tiny-celi: 20 x 7 windows = 140 texts -> 2 units
    doc = " ".join(WORDS * 3)  # 84 tokens: windows start at 0, 12, ..., 72 -> 7
    r = post(url, "/v1/rerank", {"model": "tiny-celi", "query": QUERY, "documents": [doc] * 20, "chunking": True})
    assert r.status_code == 200, r.text[:300]
    assert {d["chunks"] for d in r.json()["meta"]["rankdistill"]["documents"]} == {7}
    assert r.json()["meta"]["billed_units"] == {"search_units": 2}
    # a hard-coded Cohere model name mapped by model_aliases is served by its target
    r = post(url, "/v2/rerank", {"model": "rerank-v3.5", "query": QUERY, "documents": PASSAGES})
    assert r.status_code == 200 and r.json()["meta"]["rankdistill"]["model"] == "tiny-celi"
    ref = models["loaded"]["tiny-celi"].score(QUERY, PASSAGES)
    assert {x["index"]: x["relevance_score"] for x in r.json()["results"]} == {
        i: pytest.approx(sigmoid(v), abs=1e-5) for i, v in enumerate(ref)}


def test_tei_truncation_direction_left_keeps_the_end(url, models):
    celi = models["loaded"]["tiny-celi"]  # 16 passage tokens
    doc = " ".join(WORDS)  # 28 single-token words
    r = post(url, "/rerank", {"model": "tiny-celi", "query": QUERY, "texts": [doc], "truncate": True,
                              "truncation_direction": "Left", "raw_scores": True})
    assert r.status_code == 200, r.text[:300]
    assert r.json()[0]["score"] == pytest.approx(celi.score(QUERY, [" ".join(WORDS[12:])])[0], abs=1e-5)
    r = post(url, "/rerank", {"model": "tiny-celi", "query": QUERY, "texts": [doc], "truncate": True,
                              "truncation_direction": "Right", "raw_scores": True})
    assert r.json()[0]["score"] == pytest.approx(celi.score(QUERY, [" ".join(WORDS[:16])])[0], abs=1e-5)


def test_the_real_cohere_sdk_v1_and_v2_rerank_against_the_app(url, models):
    """Cohere's own Python SDK (cohere 7.3.1), pointed at this server, gets what it parses:
    v1 with return_documents (the SDK sends null when unset) and v2, by a hard-coded Cohere model
    name mapped through ``model_aliases``; scores are the model's in-process scores."""
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is in the dev extra")
    celi = models["loaded"]["tiny-celi"]  # rerank-v3.5 -> tiny-celi (the app's model_aliases)
    ref = celi.score(QUERY, PASSAGES)
    order = sorted(range(len(ref)), key=lambda i: -ref[i])

    v1 = cohere.Client(api_key=TOKEN, base_url=url, timeout=120)
    response = v1.rerank(model="rerank-v3.5", query=QUERY, documents=PASSAGES, top_n=3, return_documents=True)
    assert [r.index for r in response.results] == order[:3]
    for r in response.results:
        assert r.document.text == PASSAGES[r.index]
        assert r.relevance_score == pytest.approx(sigmoid(ref[r.index]), abs=1e-5)
    assert response.meta.billed_units.search_units == 1
    plain = v1.rerank(model="rerank-v3.5", query=QUERY, documents=PASSAGES[:2])  # return_documents unset
    assert all(r.document is None for r in plain.results)

    v2 = cohere.ClientV2(api_key=TOKEN, base_url=url, timeout=120)
    response = v2.rerank(model="rerank-v3.5", query=QUERY, documents=PASSAGES, top_n=2)
    assert [r.index for r in response.results] == order[:2]
    assert [r.relevance_score for r in response.results] == pytest.approx([sigmoid(ref[i]) for i in order[:2]],
                                                                            abs=1e-5)
    # an error reaches the SDK as Cohere's error types do: a 401 for a wrong key
    with pytest.raises(cohere.core.ApiError) as info:
        cohere.ClientV2(api_key="wrong", base_url=url, timeout=60).rerank(model="rerank-v3.5", query=QUERY,
                                                                           documents=PASSAGES[:1])
    assert info.value.status_code == 401
