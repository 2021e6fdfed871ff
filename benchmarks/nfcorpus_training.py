"""NFCorpus: train every cross-encoder architecture with the same budget, rerank BM25's top 100.

Called by ``benchmarks/rerankers.py`` (or alone: ``python benchmarks/nfcorpus_training.py``).
Each architecture gets the same backbone (all-MiniLM-L6-v2), examples (per train query one judged
document BM25 retrieved, ``data.positives_from_run``, and hard negatives from the rest of
``runs/bm25.train.trec``'s top 100), steps, batch and learning rate, through the real
``train_reranker`` workflow (Ray Train DDP + Ray Data reranking + MLflow), each with its paper's
first-stage relevance loss (``ARCHITECTURES``). The default budget fits a 2-core CPU in about
50 minutes; it is far below the papers' (tens of thousands of GPU steps), so the figures compare
architectures at a small equal budget, not the papers' effectiveness. One line per figure.

Selection on dev, report on test: every candidate (``--lrs``, one learning rate each) is trained
and evaluated on NFCorpus *dev* (reranking ``runs/bm25.dev.trec``); the candidate with the best dev
nDCG@10 is then evaluated once on *test* (``runs/bm25.test.trec``) and only that test figure is
reported. The last line compares every architecture with mono on test. Exits 1 when a figure
cannot be measured (dataset missing, a run failed).
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
    # the paper's exact attention (§3.2), without the step-0 offset on the other passages' [INT]s
    "set-encoder-paper": ("set-encoder", "infonce", ["data.add_duplicate=false",
                                                     "student.options.int_attention_bias=null"]),
    "listconranker-concat": ("listconranker", "circle", ["student.options.pair_features=concat"]),
}
DEFAULT = ("mono", "celi", "set-encoder", "listconranker")


def _overrides(args: argparse.Namespace, arch: str, lr: float, out: Path) -> list[str]:
    architecture, loss, extra = ARCHITECTURES[arch]
    return [
        f"student.architecture={architecture}", "student.backbone=all-MiniLM-L6-v2",
        f"student.options={{query_length: 32, passage_length: {args.passage_length}}}",
        f"loss.name={loss}", "data.dataset=nfcorpus", "data.split=train", "data.negatives_run=bm25.train.trec",
        "data.negatives_depth=100", "data.positives_from_run=true", f"data.passages_per_query={args.passages}",
        f"data.seed={args.seed}",
        "training.strategy=ddp", f"training.num_workers={args.workers}", f"training.batch_size={args.batch}",
        f"training.max_steps={args.steps}", "training.epochs=1000", f"training.learning_rate={lr}",
        "training.warmup_ratio=0.1", "training.log_every=10", f"training.seed={args.seed}",
        "training.freeze_backbone_steps=0",
        # selection: the workflow's own evaluation runs on dev
        "evaluation.split=dev", "evaluation.first_stage_run=bm25.dev.trec", "evaluation.rerank.depth=100",
        f"evaluation.rerank.num_actors={args.workers}", "evaluation.rerank.batch_size=50",
        f"evaluation.max_queries={args.queries if args.queries else 'null'}",
        "tracking.experiment=bench-nfcorpus", f"tracking.uri=sqlite:///{out}/mlflow.db",
        f"output_dir={out}",
    ] + extra


def evaluate_on_test(config, model_dir: Path, output: Path) -> tuple[float, float, int]:
    """The selected model reranking BM25's test top 100: ``(nDCG@10, bm25 nDCG@10, queries)``."""
    import dataclasses

    from rankdistill.ray_runtime import init_ray, shutdown_ray
    from rankdistill.tracking.mlflow_tracking import Tracker
    from rankdistill.workflows.train_reranker import evaluate_student

    test = dataclasses.replace(config.evaluation, split="test", first_stage_run="bm25.test.trec")
    config = dataclasses.replace(config, evaluation=test)
    output.mkdir(parents=True, exist_ok=True)
    started = init_ray(config.ray)
    try:
        after = evaluate_student(model_dir, config, output, Tracker(None))
    finally:
        shutdown_ray(started, config.ray)
    evaluation = json.loads((output / "evaluation.json").read_text())
    first = evaluation["first_stage"]
    return after["nDCG@10"], first["aggregate"]["nDCG@10"], first["num_queries"]


def run(args: argparse.Namespace) -> dict[str, float] | None:
    """Test nDCG@10 of every architecture's dev-selected candidate, or None if one cannot be measured."""
    from rankdistill.config import load_config
    from rankdistill.data.datasets import DatasetUnavailable, resolve
    from rankdistill.workflows.train_reranker import TrainRerankerConfig, run_train_reranker

    try:
        resolve("nfcorpus")
    except DatasetUnavailable as exc:
        print(f"FAIL nfcorpus training comparison cannot be measured: {exc}", flush=True)
        return None
    archs = args.architectures.split(",")
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise SystemExit(f"--architectures: unknown {unknown} (known: {', '.join(ARCHITECTURES)})")
    lrs = [float(x) for x in args.lrs.split(",")]
    out = Path(args.output or tempfile.mkdtemp(prefix="bench-nfcorpus-"))
    results: dict[str, float] = {}
    bm25_printed = False
    for arch in archs:
        architecture, _, extra = ARCHITECTURES[arch]
        options = "".join(f", {o.split('.', 2)[-1]}" for o in extra if o.startswith("student.options."))
        candidates = []  # (dev nDCG@10, lr, config, model_dir)
        for lr in lrs:
            run_dir = out / f"{arch}-lr{lr:g}"
            config = load_config(TrainRerankerConfig, REPO / "configs" / f"train_reranker-{architecture}.yaml",
                                 _overrides(args, arch, lr, run_dir))
            start = time.perf_counter()
            summary = run_train_reranker(config)
            elapsed = time.perf_counter() - start
            dev = (summary.get("metrics") or {}).get("nDCG@10")
            if dev is None:
                print(f"FAIL {arch} lr {lr:g}: no dev nDCG@10 in {run_dir / 'summary.json'}", flush=True)
                return None
            dev_first = json.loads((run_dir / "evaluation.json").read_text())["first_stage"]
            print(f"nfcorpus dev nDCG@10 {arch} lr {lr:g} ({summary['steps']} steps x {args.workers * args.batch} "
                  f"queries x {args.passages} passages{options}; {dev_first['num_queries']} queries, bm25 "
                  f"{dev_first['aggregate']['nDCG@10']:.4f}): {dev:.4f} ({elapsed:.0f} s)", flush=True)
            candidates.append((dev, lr, config, Path(summary["model_dir"])))
        dev, lr, config, model_dir = max(candidates, key=lambda c: c[0])
        ndcg, bm25, n = evaluate_on_test(config, model_dir, out / f"{arch}-test")
        if not bm25_printed:
            print(f"nfcorpus test nDCG@10 bm25 (top-100, {n} queries): {bm25:.4f}", flush=True)
            bm25_printed = True
        results[arch] = ndcg
        print(f"nfcorpus test nDCG@10 {arch} (reranking bm25 top-100, selected on dev: lr {lr:g}, dev {dev:.4f}; "
              f"{args.steps} steps x {args.workers * args.batch} queries x {args.passages} passages{options}): "
              f"{ndcg:.4f} (vs bm25 {ndcg - bm25:+.4f})", flush=True)
    if "mono" in results:
        for arch, ndcg in results.items():
            if arch != "mono":
                print(f"nfcorpus test nDCG@10 {arch} - mono: {ndcg - results['mono']:+.4f} "
                      f"(ratio {ndcg / results['mono']:.3f})", flush=True)
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--architectures", default=",".join(DEFAULT), help=f"comma-separated, of: {', '.join(ARCHITECTURES)}")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=4, help="queries per worker and step")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--passages", type=int, default=4, help="passages per training query")
    p.add_argument("--passage-length", type=int, default=64)
    p.add_argument("--lrs", default="1e-4", help="comma-separated learning rates; the best on dev is reported on test")
    p.add_argument("--queries", type=int, default=0, help="evaluate on the first N dev / test queries (0: all 324 / 323)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--output", default=None)
    return p


if __name__ == "__main__":
    sys.exit(0 if run(parser().parse_args()) else 1)  # a skipped or empty comparison measured nothing: exit 1
