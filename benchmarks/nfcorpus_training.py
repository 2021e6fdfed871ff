"""NFCorpus: train every cross-encoder architecture with the same budget, rerank BM25's top 100.

Called by ``benchmarks/rerankers.py`` (or alone: ``python benchmarks/nfcorpus_training.py``).
Each architecture gets the same backbone (all-MiniLM-L6-v2), examples (per train query one judged
document BM25 retrieved, ``data.positives_from_run``, and hard negatives from the rest of
``runs/bm25.train.trec``'s top 100), steps, batch and learning rate, through the real
``train_reranker`` workflow (Ray Train DDP + Ray Data reranking + MLflow), each with its paper's
first-stage relevance loss (``ARCHITECTURES``). The default budget fits a 2-core CPU in about
50 minutes; it is far below the papers' (tens of thousands of GPU steps), so the figures compare
architectures at a small equal budget, not the papers' effectiveness. One line per figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = {
    # name: (architecture, loss, extra overrides) — each paper's first-stage relevance recipe
    "mono": ("mono", "infonce", []),
    "celi": ("celi", "infonce", []),  # CELI §2: LCE on s_m + LCE on s_l
    "set-encoder": ("set-encoder", "infonce", ["data.add_duplicate=false"]),  # Set-Encoder §4.1: InfoNCE
    # ListConRanker §3: circle loss. Its heads learn a similarity from scratch; from the paper's
    # concatenated pair features they do not within this budget (listconranker-concat), from
    # [a; b; a*b; |a-b|] they do (models/listconranker.py)
    "listconranker": ("listconranker", "circle", ["student.options.pair_features=interaction"]),
    # not in the default set: the Set-Encoder primed for passage interactions (§3.4), which the
    # paper uses before novelty-aware fine-tuning, not for relevance effectiveness
    "set-encoder-da": ("set-encoder", "da_infonce", ["data.add_duplicate=true"]),
    "listconranker-concat": ("listconranker", "circle", ["student.options.pair_features=concat"]),
}
DEFAULT = ("mono", "celi", "set-encoder", "listconranker")


def run(args: argparse.Namespace) -> dict[str, float]:
    from rankdistill.config import load_config
    from rankdistill.data.datasets import DatasetUnavailable, resolve
    from rankdistill.workflows.train_reranker import TrainRerankerConfig, run_train_reranker

    try:
        resolve("nfcorpus")
    except DatasetUnavailable as exc:
        print(f"SKIP nfcorpus training comparison: {exc}")
        return {}
    out = Path(args.output or tempfile.mkdtemp(prefix="bench-nfcorpus-"))
    results: dict[str, float] = {}
    bm25 = None
    for arch in args.architectures.split(","):
        if arch not in ARCHITECTURES:
            raise SystemExit(f"--architectures: unknown '{arch}' (known: {', '.join(ARCHITECTURES)})")
        architecture, loss, extra = ARCHITECTURES[arch]
        overrides = [
            f"student.architecture={architecture}", "student.backbone=all-MiniLM-L6-v2",
            f"student.options={{query_length: 32, passage_length: {args.passage_length}}}",
            f"loss.name={loss}", "data.dataset=nfcorpus", "data.split=train", "data.negatives_run=bm25.train.trec",
            "data.negatives_depth=100", "data.positives_from_run=true", f"data.passages_per_query={args.passages}", f"data.seed={args.seed}",
            "training.strategy=ddp", f"training.num_workers={args.workers}", f"training.batch_size={args.batch}",
            f"training.max_steps={args.steps}", "training.epochs=1000", f"training.learning_rate={args.lr}",
            "training.warmup_ratio=0.1", "training.log_every=10", f"training.seed={args.seed}",
            "training.freeze_backbone_steps=0",
            "evaluation.split=test", "evaluation.first_stage_run=bm25.test.trec", "evaluation.rerank.depth=100",
            f"evaluation.rerank.num_actors={args.workers}", "evaluation.rerank.batch_size=50",
            f"evaluation.max_queries={args.queries if args.queries else 'null'}",
            "tracking.experiment=bench-nfcorpus", f"tracking.uri=sqlite:///{out}/mlflow.db",
            f"output_dir={out / arch}",
        ] + extra
        config = load_config(TrainRerankerConfig, REPO / "configs" / f"train_reranker-{architecture}.yaml", overrides)
        start = time.perf_counter()
        summary = run_train_reranker(config)
        elapsed = time.perf_counter() - start
        evaluation = json.loads((out / arch / "evaluation.json").read_text())
        if bm25 is None:
            bm25 = evaluation["first_stage"]["aggregate"]["nDCG@10"]
            n = evaluation["first_stage"]["num_queries"]
            print(f"nfcorpus test nDCG@10 bm25 (top-100, {n} queries): {bm25:.4f}", flush=True)
        ndcg = summary["metrics"]["nDCG@10"]
        results[arch] = ndcg
        options = "".join(f", {o.split('.', 2)[-1]}" for o in extra if o.startswith("student.options."))
        print(f"nfcorpus test nDCG@10 {arch} (reranking bm25 top-100, {summary['steps']} steps x "
              f"{args.workers * args.batch} queries x {args.passages} passages{options}): {ndcg:.4f} "
              f"(vs bm25 {ndcg - bm25:+.4f}; {elapsed:.0f} s)", flush=True)
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--architectures", default=",".join(DEFAULT), help=f"comma-separated, of: {', '.join(ARCHITECTURES)}")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=4, help="queries per worker and step")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--passages", type=int, default=4, help="passages per training query")
    p.add_argument("--passage-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--queries", type=int, default=0, help="evaluate on the first N test queries (0: all 323)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--output", default=None)
    return p


if __name__ == "__main__":
    sys.exit(0 if run(parser().parse_args()) else 1)  # a skipped or empty comparison measured nothing: exit 1
