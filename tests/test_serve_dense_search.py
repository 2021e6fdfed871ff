"""``POST /search`` with a dense student and its faiss index as the first stage (real Ray Serve over
HTTP on 127.0.0.1), the app's Prometheus metrics read from Ray's metrics endpoint (bounded labels),
and large requests: capped in tokens, and cut into slices that interleave with small requests.

The student, index and corpus are what ``jobs/pairdistill.py`` leaves behind (a saved bi-encoder
and a :class:`DenseIndex` saved to a folder). Expected first-stage ids and scores come from the
library's in-process :func:`rankdistill.retrieval.dense_retrieve.retrieve`, expected rerank scores
from the reranker's in-process ``score()``.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from model_fixtures import PASSAGES, tiny_reranker
from serve_fixtures import free_port, running_app

pytestmark = pytest.mark.slow  # one Ray + Serve start (~20 s idle)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny bi-encoder, the dense index of a small corpus, the corpus file, a tiny mono reranker."""
    import torch
    from rankdistill.models import load_reranker
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    root = tmp_path_factory.mktemp("dense-serve")
    docs = {f"d{i}": text for i, text in enumerate(PASSAGES)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in docs.items()))
    tiny_reranker("bi-encoder", seed=3, pooling="mean", similarity="dot").save_pretrained(root / "student")
    tiny_reranker("mono", seed=0).save_pretrained(root / "mono")
    student = load_reranker(root / "student").eval()
    with torch.inference_mode():
        vectors = student.encode_passages(list(docs.values())).numpy()
    index = DenseIndex(vectors.shape[1], DenseIndexConfig())
    index.add(list(docs), vectors)
    index.save(root / "index")
    return {"root": root, "docs": docs, "student": student, "mono": load_reranker(root / "mono").eval(),
            "index": DenseIndex.load(root / "index")}


@pytest.fixture(scope="module")
def app(saved):
    root = saved["root"]
    metrics_port = free_port()
    args = {
        "models": {"tiny-mono": str(root / "mono")},
        "strict_model": False,  # any unknown model name is served by the default
        "scoring": {"token_budget": 256, "precision": "fp32"},
        "retriever": {"kind": "dense", "model": str(root / "student"), "index": str(root / "index"),
                      "corpus": str(root / "corpus.jsonl"), "threads": 1},
        "reranker_options": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        "gateway_options": {"ray_actor_options": {"num_cpus": 0.25}},
        "retriever_options": {"ray_actor_options": {"num_cpus": 0.25}},
    }
    with running_app(args, metrics_port=metrics_port) as url:
        yield url, metrics_port


def test_dense_search_then_rerank_matches_the_library(app, saved):
    from rankdistill.data.records import Query
    from rankdistill.retrieval.dense_retrieve import retrieve

    url, _ = app
    query = "cats sleeping in the sun"
    expected = retrieve(saved["student"], saved["index"], [Query("q", query)], k=4)["q"]
    r = requests.post(f"{url}/search", json={"query": query, "k": 4, "top_n": 4, "return_documents": True},
                      timeout=120)
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["meta"]["retrieved"] == 4
    results = body["results"]
    assert {x["id"] for x in results} == set(expected)  # the student's top 4 of the index
    reranked = saved["mono"].score(query, [saved["docs"][x["id"]] for x in results])
    for x, score in zip(results, reranked, strict=True):
        assert x["retrieval_score"] == pytest.approx(expected[x["id"]], abs=1e-4)
        assert x["score"] == pytest.approx(score, abs=1e-5)
        assert x["text"] == saved["docs"][x["id"]]
    assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)


def _metric_lines(port: int, name: str) -> list[str]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_prometheus_metrics_count_requests_tokens_and_errors(app, saved):
    """The app's own metrics (serve/app.py) appear on Ray's Prometheus endpoint, tagged by model
    and API: latency histogram counts, scored tokens, and a 422 counted as an error."""
    url, port = app
    passages = list(saved["docs"].values())
    for _ in range(3):
        ok = requests.post(f"{url}/v1/rerank", json={"query": "cats", "documents": passages}, timeout=120)
        assert ok.status_code == 200, ok.text[:300]
    bad = requests.post(f"{url}/v1/rerank", json={"query": "", "documents": passages}, timeout=60)
    assert bad.status_code in (400, 422)
    deadline, latency, errors, scored = time.monotonic() + 90, [], [], []
    while time.monotonic() < deadline:  # Ray's metrics agent exports on an interval
        latency = [line for line in _metric_lines(port, "ray_rankdistill_request_latency_ms_count")
                   if 'api="/v1/rerank"' in line and 'model="tiny-mono"' in line]
        errors = [line for line in _metric_lines(port, "ray_rankdistill_request_errors_total")
                  if 'api="/v1/rerank"' in line]
        scored = [line for line in _metric_lines(port, "ray_rankdistill_tokens") if 'model="tiny-mono"' in line]
        if latency and errors and scored and float(latency[0].rsplit(" ", 1)[1]) >= 3:
            break
        time.sleep(2)
    assert latency and float(latency[0].rsplit(" ", 1)[1]) >= 3, _metric_lines(port, "ray_rankdistill")
    assert errors and float(errors[0].rsplit(" ", 1)[1]) >= 1, [x[x.find("api="):x.find("api=") + 30] for x in _metric_lines(port, "ray_rankdistill_request_errors")]
    assert re.search(r'status="4\d\d"', errors[0]), errors
    assert scored and float(scored[0].rsplit(" ", 1)[1]) > 0, scored


def test_bad_dense_retriever_configs_name_the_key(saved):
    from rankdistill.errors import ConfigError
    from rankdistill.serving.retrieval import build_retriever

    root = saved["root"]
    base = {"kind": "dense", "model": str(root / "student"), "index": str(root / "index"),
            "corpus": str(root / "corpus.jsonl")}
    with pytest.raises(ConfigError, match="not a dense student") as error:
        build_retriever({**base, "model": str(root / "mono")})
    assert error.value.key == "retriever.model"
    with pytest.raises(ConfigError, match="does not exist") as error:
        build_retriever({**base, "index": str(root / "no-index")})
    assert error.value.key == "retriever.index"
    other = root / "other.jsonl"
    other.write_text(json.dumps({"_id": "x1", "title": "", "text": "another collection"}) + "\n")
    with pytest.raises(ConfigError, match="not in the corpus") as error:
        build_retriever({**base, "corpus": str(other)})
    assert error.value.key == "retriever.corpus"
    with pytest.raises(ConfigError) as error:
        build_retriever({**base, "index": None})
    assert error.value.key == "retriever.index"


def _words(i: int, n: int) -> str:
    return " ".join(f"{w}{(i * 7 + j) % 50}" for j, w in zip(range(n), ["cat", "dog", "sun", "tree"] * n))


def test_large_request_does_not_block_small_ones(app):
    """Head-of-line blocking: while one large request (1000 documents, ~200 token-budget slices) is
    scored, small 2-document requests keep answering: several finish before it does, and their
    worst latency stays a fraction of its duration (one batch would make each wait for all of it)."""
    import threading

    url, _ = app
    big = {"query": "cats in the sun", "documents": [_words(i, 12) for i in range(1000)]}
    small = {"query": "cats", "documents": ["a cat sleeps", "a dog barks"]}
    assert requests.post(f"{url}/v1/rerank", json=small, timeout=60).status_code == 200  # warm
    done = threading.Event()
    big_result: dict = {}

    def send_big() -> None:
        t0 = time.monotonic()
        r = requests.post(f"{url}/v1/rerank", json=big, timeout=300)
        big_result.update(status=r.status_code, seconds=time.monotonic() - t0, text=r.text[:300])
        done.set()

    thread = threading.Thread(target=send_big)
    thread.start()
    time.sleep(0.3)  # the large request is being scored
    latencies = []
    while not done.is_set():
        t0 = time.monotonic()
        r = requests.post(f"{url}/v1/rerank", json=small, timeout=300)
        assert r.status_code == 200, r.text[:300]
        if not done.is_set():
            latencies.append(time.monotonic() - t0)
    thread.join()
    assert big_result["status"] == 200, big_result
    print(f"large request {big_result['seconds']:.2f} s; {len(latencies)} small requests during it, "
          f"max {max(latencies, default=0):.3f} s")
    assert len(latencies) >= 3, (big_result, latencies)
    assert max(latencies) < big_result["seconds"] / 2, (big_result, latencies)


def test_request_over_the_token_cap_is_413(app):
    url, _ = app
    docs = [_words(i, 120) for i in range(1000)]  # ~1000 x 240 tokens, over the default 65536
    r = requests.post(f"{url}/rerank", json={"query": "cats", "texts": docs, "truncate": True}, timeout=120)
    assert r.status_code == 413, r.text[:300]
    assert "max_request_tokens" in r.json()["error"] and "65536" in r.json()["error"]


def test_unknown_model_names_map_to_the_default_when_not_strict(app, saved):
    url, _ = app
    passages = list(saved["docs"].values())
    r = requests.post(f"{url}/v2/rerank", json={"model": "rerank-v3.5", "query": "cats", "documents": passages},
                      timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["meta"]["rankdistill"]["model"] == "tiny-mono"
    ref = saved["mono"].score("cats", passages)
    assert [x["index"] for x in r.json()["results"]] == sorted(range(len(ref)), key=lambda i: -ref[i])


def test_unknown_paths_share_one_metric_label(app):
    """300 random paths made 300 error series; now they are counted under api="unknown"."""
    url, port = app
    for i in range(30):
        r = requests.get(f"{url}/random-{i}/x{i * 13}", timeout=30)
        assert r.status_code == 404 and set(r.json()) == {"error", "error_type"}
    deadline, unknown = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        unknown = [line for line in _metric_lines(port, "ray_rankdistill_request_errors_total")
                   if 'api="unknown"' in line and 'status="404"' in line]
        if unknown and float(unknown[0].rsplit(" ", 1)[1]) >= 30:
            break
        time.sleep(2)
    assert len(unknown) == 1 and float(unknown[0].rsplit(" ", 1)[1]) >= 30, unknown
    series = _metric_lines(port, "ray_rankdistill_request_errors_total")
    assert not [line for line in series if "random-" in line], series[:5]
