"""The Serve app under failure and overload (slow: its own Ray + Serve, ~40 s).

- A RerankerDeployment replica's process is killed (SIGKILL, by its pid) while clients stream requests:
  every request gets 200 or a clean JSON error (503/429 with Retry-After), never a hang or an
  HTML 500; the endpoint keeps answering and Serve brings the replica count back.
- Every replica killed at once: requests fail fast with 503 + Retry-After (no hang), readiness
  says 503, and the time to the first success after the kill is bounded (the replacement loads
  the default model at start).
- Back-pressure: a burst beyond ``max_ongoing_requests`` + ``max_queued_requests`` gets 429 with
  ``Retry-After`` instead of queueing without bound.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from serve_fixtures import running_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    path = tmp_path_factory.mktemp("resilience") / "mono"
    tiny_reranker("mono", seed=0).save_pretrained(path)
    args = {
        "models": {"tiny": str(path)},
        "batching": False,  # one request at a time per replica: easy to overload
        "scoring": {"precision": "fp32"},
        "reranker_options": {"num_replicas": 2, "max_ongoing_requests": 1, "max_queued_requests": 2,
                             "ray_actor_options": {"num_cpus": 0.5}},
        "gateway_options": {"ray_actor_options": {"num_cpus": 0.25}},
    }
    with running_app(args) as base:
        yield base


def _replica_pids() -> set[int]:
    from ray import serve

    handle = serve.get_deployment_handle("RerankerDeployment", app_name="rankdistill")
    return {handle.pid.remote().result(timeout_s=30) for _ in range(12)}


def _stream(url: str, n: int, out: list, stop: threading.Event) -> None:
    docs = PASSAGES * 8  # 40 documents per request
    for _ in range(n):
        if stop.is_set():
            return
        try:
            r = requests.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": docs}, timeout=60)
            body = r.json()  # every answer, errors included, is JSON
            out.append((r.status_code, body, r.headers.get("Retry-After")))
        except requests.RequestException as exc:  # a dropped connection is not a clean error
            out.append((None, repr(exc), None))
        except ValueError:
            out.append((r.status_code, r.text[:200], None))


def test_replica_killed_during_request_stream(url):
    pids = _replica_pids()
    assert len(pids) == 2
    results: list = []
    stop = threading.Event()
    clients = [threading.Thread(target=_stream, args=(url, 40, results, stop)) for _ in range(2)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)  # a replica process this test's Serve started
    for c in clients:
        c.join(timeout=120)
    assert not any(c.is_alive() for c in clients)
    statuses = [s for s, _, _ in results]
    assert None not in statuses, [r for r in results if r[0] is None][:3]
    assert set(statuses) <= {200, 429, 503}, results[:3]
    for status, body, retry in results:
        if status != 200:
            assert "error" in body and retry == "1"
    assert statuses.count(200) >= len(statuses) // 2
    # recovered: Serve replaced the dead replica and requests succeed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _replica_pids()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(1)
    assert len(now) == 2 and victim not in now
    r = requests.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": PASSAGES}, timeout=60)
    assert r.status_code == 200 and len(r.json()["results"]) == len(PASSAGES)


def test_burst_gets_429_with_retry_after(url):
    results: list = []
    stop = threading.Event()
    # 2 replicas x (1 ongoing + 2 queued) = 6 admitted at once; 24 simultaneous clients overflow it
    clients = [threading.Thread(target=_stream, args=(url, 2, results, stop)) for _ in range(24)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=120)
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 429}, results[:3]
    assert 200 in statuses and 429 in statuses
    assert all(retry == "1" and "queue is full" in body["error"] for s, body, retry in results if s == 429)


def test_all_replicas_killed_fail_fast_then_recover(url):
    """No replica up: each request answers 503 + Retry-After within a few seconds instead of
    hanging until a replacement exists; /healthz is 503 meanwhile; then requests succeed again."""
    pids = _replica_pids()
    assert len(pids) == 2
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    body = {"query": QUERY, "documents": PASSAGES}
    killed_at = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # replica processes this test's Serve started
    answers, first_success = [], None
    health_during = set()
    while time.monotonic() - killed_at < 120:
        t0 = time.monotonic()
        try:
            r = requests.post(f"{url}/v1/rerank", json=body, timeout=30)
        except requests.RequestException as exc:
            raise AssertionError(f"no answer within 30 s after the kill: {exc!r}") from None
        answers.append((r.status_code, time.monotonic() - t0, r.headers.get("Retry-After"), r.json()))
        if r.status_code == 200:
            first_success = time.monotonic() - killed_at
            break
        health_during.add(requests.get(f"{url}/healthz", timeout=30).status_code)
        time.sleep(0.2)
    assert first_success is not None, answers[-3:]
    failures = [a for a in answers if a[0] != 200]
    assert failures, "the kill went unnoticed: no request failed"
    assert {a[0] for a in failures} <= {503}, failures[:3]
    assert all(a[2] and set(a[3]) == {"error", "error_type"} for a in failures), failures[:3]
    # after the first failure tells the gateway no replica is up, each waits ~unavailable_timeout_s (1 s)
    assert max(a[1] for a in failures[1:] or failures) < 5.0, [round(a[1], 2) for a in failures]
    assert 503 in health_during or len(failures) == 1
    print(f"time to first success after killing every replica: {first_success:.1f} s "
          f"({len(failures)} fast 503s meanwhile)")
    assert first_success < 90
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
