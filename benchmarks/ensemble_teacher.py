"""Offline teachers on the demo's carved dev set (issue 18, Part 2): dev nDCG@10 of BM25's top 20
reranked by the zero-shot all-MiniLM-L6-v2 alone and by ``ensemble`` teachers fusing BM25 with it
(reciprocal-rank fusion, per-list z-scored sum), through the ensemble backend itself. One line per
figure; compare with the zero-shot student's dev figure that ``make demo`` prints. The quickstart's
ensemble (BM25, MiniLM, the mono of ``make teachers``) is also run with ``precision: auto`` on its
students (bf16 where this CPU has a bf16 unit): its figure and its labelling time beside fp32's.

    python benchmarks/ensemble_teacher.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    import torch
    from rankdistill.data.candidates import candidate_lists
    from rankdistill.data.datasets import DatasetUnavailable, resolve
    from rankdistill.data.records import Run
    from rankdistill.evaluation.metrics import evaluate
    from rankdistill.retrieval.bm25 import BM25Index
    from rankdistill.teachers.backends.base import BackendConfig, EnsembleMember
    from rankdistill.teachers.backends.ensemble import EnsembleBackend
    from rankdistill.teachers.prompts import load_template
    from rankdistill.workflows.pairdistill import SplitsConfig, load_splits

    try:
        spec, folder = resolve("demo")
    except DatasetUnavailable as exc:
        print(f"SKIP ensemble_teacher: the demo collection is not on this machine ({exc})", flush=True)
        return 1
    splits = load_splits(SplitsConfig(dev_queries=8, seed=13), spec, folder)  # the quickstart's dev set
    corpus = folder.corpus() if callable(getattr(folder, "corpus", None)) else folder.corpus
    first = BM25Index().index(corpus.values(), show_progress=False).search(list(splits.dev.values()), 20)
    lists = list(candidate_lists(first, splits.dev, corpus, k=20))
    template = load_template("pairdistill-pointwise")
    qrels = splits.qrels["dev"]
    ndcg = evaluate(first, qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    print(f"ensemble_teacher.dev_ndcg10.bm25_top20: {ndcg:.4f}", flush=True)
    dense = EnsembleMember(kind="dense", backbone="all-MiniLM-L6-v2", options={"scale": 20.0})
    bm25 = EnsembleMember(kind="first_stage")
    variants = [("minilm_zero_shot", "zsum", [dense]), ("rrf_bm25_minilm", "rrf", [bm25, dense]),
                ("zsum_bm25_minilm", "zsum", [bm25, dense])]
    mono = ROOT / "outputs" / "train_reranker-mono" / "model"
    if (mono / "config.json").exists():  # make teachers' mono cross-encoder, alone and as a third member
        teacher = EnsembleMember(kind="teacher", backend=BackendConfig(name="reranker", model=str(mono), device="cpu"))
        variants += [("mono", "zsum", [teacher]), ("zsum_bm25_minilm_mono", "zsum", [bm25, dense, teacher])]
    else:
        print(f"ensemble_teacher.note: {mono} absent (make teachers): the mono variants are not measured", flush=True)
    def rerank(fusion: str, members: list, precision: str = "fp32") -> tuple[float, float, str]:
        backend = EnsembleBackend(BackendConfig(name="ensemble", device="cpu", fusion=fusion, members=members,
                                                precision=precision))
        run, start = {}, time.perf_counter()
        for cl in lists:
            unit = {"qid": cl.qid, "query": cl.query.text, "docids": cl.docids,
                    "texts": [c.contents for c in cl.candidates], "first_stage": [c.score for c in cl.candidates]}
            run[cl.qid] = dict(zip(cl.docids, backend.score_list(unit, template), strict=True))
        seconds = time.perf_counter() - start
        return evaluate(Run(run), qrels, ["nDCG@10"]).aggregate["nDCG@10"], seconds, backend.dense_precision

    for name, fusion, members in variants:
        ndcg, _, _ = rerank(fusion, members)
        print(f"ensemble_teacher.dev_ndcg10.{name}_reranking_bm25_top20: {ndcg:.4f}", flush=True)
    if (mono / "config.json").exists():  # the quickstart's teacher as it labels: precision auto on every student
        auto_teacher = EnsembleMember(kind="teacher", backend=BackendConfig(
            name="reranker", model=str(mono), device="cpu", precision="auto"))
        quickstart = [bm25, dense, teacher]
        ndcg, auto_s, resolved = rerank("zsum", [bm25, dense, auto_teacher], "auto")
        _, fp32_s, _ = rerank("zsum", quickstart)  # (the variants above warmed the same models)
        print(f"ensemble_teacher.dev_ndcg10.zsum_bm25_minilm_mono_precision_auto: {ndcg:.4f} (resolved: {resolved})",
              flush=True)
        units = sum(len(cl.candidates) for cl in lists)
        print(f"ensemble_teacher.label_seconds_{units}_units.fp32: {fp32_s:.1f}", flush=True)
        print(f"ensemble_teacher.label_seconds_{units}_units.precision_auto: {auto_s:.1f} "
              f"(fp32 / auto: {fp32_s / auto_s:.2f}x; {torch.get_num_threads()} torch threads)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
