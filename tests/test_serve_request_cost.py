"""Issue 30 over real HTTP on 127.0.0.1: every request's cost is bounded and cancellable, and health
tells the truth per model (slow: its own Ray + Serve).

One app: a tiny mono (default) and a tiny duo student, plus ``broken`` (a folder with config.json
but no weights) marked ``lazy``; a BM25 first stage over long documents; small token budget (many
slices) and a short request deadline.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from serve_fixtures import running_app

pytestmark = pytest.mark.slow

MAX_PAIRS = 1560  # 40 documents: 40 * 39 pairs
DEADLINE_S = 6.0
SENTENCE = "cats purr when they are content and sleep in the sun"  # 11 tokens
LONG = " ".join([SENTENCE] * 27)  # cut to 224 tokens: 40 of them cost more than max_request_tokens
#: 40 duo documents of ~170 tokens (6.9k tokens, within max_request_tokens): 1560 pairs of ~350
#: tokens, many seconds of work
DUO_DOCS = [" ".join([SENTENCE] * 15) + f" {p} {i}" for i in range(8) for p in PASSAGES]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    tiny_reranker("mono", seed=0).save_pretrained(root / "mono")
    tiny_reranker("duo", seed=3).save_pretrained(root / "duo")
    tiny_reranker("duo", seed=4).save_pretrained(root / "broken")  # then its weights go missing
    for weights in (root / "broken").glob("*.safetensors"):
        weights.unlink()
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"{LONG} {i}"}) + "\n"
                              for i in range(40)))
    args = {
        "models": {"mono": str(root / "mono"), "duo": str(root / "duo"),
                   "broken": {"source": str(root / "broken"), "lazy": True}},
        "scoring": {"token_budget": 1024, "precision": "fp32"},
        "limits": {"max_pairs": MAX_PAIRS, "request_timeout_s": DEADLINE_S, "max_request_tokens": 8500},
        "ready_cache_s": 30.0,
        "retriever": {"kind": "bm25", "corpus": str(corpus)},
        "reranker_options": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        "gateway_options": {"ray_actor_options": {"num_cpus": 0.25}},
        "retriever_options": {"ray_actor_options": {"num_cpus": 0.25}},
    }
    with running_app(args) as base:
        yield {"url": base, "mono": tiny_reranker("mono", seed=0), "duo": tiny_reranker("duo", seed=3)}


def post(url: str, body: dict, path: str = "/v1/rerank", timeout: float = 120) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=timeout)


def progress() -> dict[str, int]:
    from ray import serve

    handle = serve.get_deployment_handle("RerankerDeployment", app_name="rankdistill")
    return handle.progress.remote().result(timeout_s=30)


def test_a_1000_document_duo_request_is_refused_at_once(app):
    docs = [f"passage number {i}" for i in range(1000)]
    t0 = time.monotonic()
    r = post(app["url"], {"query": QUERY, "documents": docs, "model": "duo"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 413, r.text[:300]
    message = r.json()["error"]
    assert "limits.max_pairs" in message and "999000 passage pairs" in message and f"{MAX_PAIRS}" in message
    assert elapsed < 5.0, elapsed  # refused before any pair is scored
    # 100 of them: still over max_pairs on duo, within every limit on the pointwise model
    r = post(app["url"], {"query": QUERY, "documents": docs[:100], "model": "duo"})
    assert r.status_code == 413 and "9900 passage pairs" in r.json()["error"]
    assert post(app["url"], {"query": QUERY, "documents": docs[:100], "model": "mono"}).status_code == 200


def test_duo_scores_equal_the_models_own_and_one_document_is_refused(app):
    r = post(app["url"], {"query": QUERY, "documents": PASSAGES, "model": "duo"})
    assert r.status_code == 200, r.text[:300]
    ref = app["duo"].score(QUERY, PASSAGES)  # pair_sum over the other k-1 passages
    for x in r.json()["results"]:
        assert x["relevance_score"] == pytest.approx(ref[x["index"]] / (len(PASSAGES) - 1), abs=1e-5)
    r = post(app["url"], {"query": QUERY, "documents": PASSAGES[:1], "model": "duo"})
    assert r.status_code == 422 and "at least 2 documents" in r.json()["error"], r.text[:300]


def test_a_capped_duo_request_does_not_hold_a_small_request(app):
    """40 documents (1560 pairs, within max_pairs) on duo take seconds; a 2-document mono request
    and /healthz sent meanwhile are answered within about one slice, not after the duo request."""
    url = app["url"]
    big: dict = {}

    def duo() -> None:
        t0 = time.monotonic()
        r = post(url, {"query": QUERY, "documents": DUO_DOCS, "model": "duo"})
        big.update(status=r.status_code, body=r.json(), done=time.monotonic(), took=time.monotonic() - t0)

    before = progress()["slices_scored"]
    thread = threading.Thread(target=duo)
    thread.start()
    deadline = time.monotonic() + 30
    while progress()["slices_scored"] < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the duo request is being scored, slice by slice
    t0 = time.monotonic()
    r = post(url, {"query": QUERY, "documents": PASSAGES[:2], "model": "mono"})
    small_done = time.monotonic()
    assert r.status_code == 200, r.text[:300]
    latency = small_done - t0
    thread.join(timeout=120)
    assert big, "the duo request did not answer"
    # the duo request either finished or hit the deadline (504 after DEADLINE_S); either way it
    # was still being scored when the small request came back
    assert big["status"] in (200, 504), big
    assert small_done < big["done"], (latency, big["took"])
    assert latency < 3.0, latency
    print(f"small mono request beside a 1560-pair duo request: {latency * 1000:.0f} ms "
          f"(duo: {big['status']} in {big['took']:.1f} s)")


def test_a_duo_request_past_its_deadline_stops(app):
    t0 = time.monotonic()
    r = post(app["url"], {"query": QUERY, "documents": DUO_DOCS, "model": "duo"})  # 1560 pairs
    took = time.monotonic() - t0
    if r.status_code == 200:
        pytest.skip(f"the machine scored 1560 pairs within the {DEADLINE_S} s deadline ({took:.1f} s)")
    assert r.status_code == 504, r.text[:300]
    assert "limits.request_timeout_s" in r.json()["error"] and "stopped after" in r.json()["error"]
    assert took < DEADLINE_S + 5.0, took
    time.sleep(0.5)
    assert progress()["active_requests"] == 0


def test_a_disconnected_client_s_remaining_slices_are_dropped(app):
    """The client gives up after 1 s: the replica stops queueing the request's slices soon after,
    well before its deadline, instead of scoring the rest for nobody."""
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        post(app["url"], {"query": QUERY, "documents": DUO_DOCS, "model": "duo"}, timeout=1.0)
    stopped_at = None
    while time.monotonic() - t0 < DEADLINE_S - 1:
        if progress()["active_requests"] == 0:
            stopped_at = time.monotonic() - t0
            break
        time.sleep(0.1)
    assert stopped_at is not None, "the request went on after its client left"
    before = progress()["slices_scored"]
    time.sleep(1.0)
    assert progress()["slices_scored"] == before  # no slice scored for the gone client
    print(f"client left at 1.0 s; the replica stopped at {stopped_at:.1f} s")


def test_models_list_each_model_with_its_own_status(app):
    r = requests.get(f"{app['url']}/v1/models", timeout=60)
    assert r.status_code == 200, r.text[:300]
    data = {m["id"]: m for m in r.json()["data"]}
    assert set(data) == {"mono", "duo", "broken"}
    assert data["mono"]["status"] == "ready" and data["mono"]["default"] is True
    assert data["duo"]["status"] == "ready" and data["duo"]["architecture"] == "duo"
    assert data["broken"]["status"] == "unavailable" and data["broken"]["lazy"] is True
    assert "no model weights" in data["broken"]["reason"], data["broken"]


def test_a_lazy_model_that_cannot_load_answers_503_with_its_reason(app):
    r = post(app["url"], {"query": QUERY, "documents": PASSAGES, "model": "broken"})
    assert r.status_code == 503, r.text[:300]
    assert "model 'broken' is unavailable" in r.json()["error"] and "no model weights" in r.json()["error"]
    assert r.headers.get("Retry-After")
    assert requests.get(f"{app['url']}/healthz", timeout=60).status_code == 200  # the others serve
    assert post(app["url"], {"query": QUERY, "documents": PASSAGES, "model": "duo"}).status_code == 200


def test_echoed_field_names_and_values_with_lone_surrogates_are_4xx(app):
    for raw in ('{"query":"cat","documents":[{"text":"cat","\\ud800":1}],"return_documents":true}',
                '{"query":"cat","documents":[{"text":"cat","t":"\\ud800"}],"return_documents":true}'):
        r = requests.post(f"{app['url']}/v1/rerank", data=raw, headers={"Content-Type": "application/json"},
                          timeout=60)
        assert r.status_code == 422, r.text[:300]
        assert "lone surrogate" in r.json()["error"]
    r = post(app["url"], {"query": "cat", "documents": [{"text": "cat", "é": "ü\u2603"}], "return_documents": True})
    assert r.status_code == 200 and r.json()["results"][0]["document"] == {"text": "cat", "é": "ü\u2603"}


def test_content_type_head_probes_and_search_k(app):
    url = app["url"]
    body = json.dumps({"query": "cat", "documents": ["a cat"]})
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        r = requests.post(f"{url}/v1/rerank", data=body, headers=headers, timeout=60)
        assert r.status_code == 415, (headers, r.text[:300])
        assert "application/json" in r.json()["error"]
    r = requests.post(f"{url}/v1/rerank", data=body, headers={"Content-Type": "application/json; charset=utf-8"},
                      timeout=60)
    assert r.status_code == 200
    for path in ("/healthz", "/readyz", "/livez", "/health"):
        assert requests.head(f"{url}{path}", timeout=60).status_code == 200, path
    # 40 long documents from the first stage cost more than max_request_tokens: the 413 names k
    r = post(url, {"query": "cats purr", "k": 40}, path="/search")
    assert r.status_code == 413, r.text[:300]
    assert "lower k" in r.json()["error"] and "k=40" in r.json()["error"] and "fewer or shorter" not in r.text


def test_readiness_scores_at_most_once_per_interval(app):
    url = app["url"]
    assert requests.get(f"{url}/healthz", timeout=60).status_code == 200
    before = progress()["slices_scored"]
    for _ in range(5):
        assert requests.get(f"{url}/readyz", timeout=60).status_code == 200
        assert requests.get(f"{url}/livez", timeout=60).json() == {"status": "ok"}
    assert progress()["slices_scored"] == before  # answered from the last result (ready_cache_s = 30)
