"""A training job as a separate process, for the kill-and-resume test (tests/test_training_resume.py).

``python tests/resume_driver.py --student DIR --output DIR --storage DIR [--slow-after N]``
connects to the Ray cluster of ``$RAY_ADDRESS``, trains the saved student on :func:`examples`
(rows carry an ``example_id``; ``training.audit_examples`` is on) with 2 workers of half a CPU,
and prints the final step. ``--stall-after N``: every worker stops (sleeps for an hour) before
its (N+1)-th loss, so a test can kill the process at a known point mid-run; the values computed
up to there are those of a run without the option.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time

import torch

WORDS = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "castle", "rocket", "garden", "violin", "meadow"]


def examples(n: int, seed: int = 0) -> list[dict]:
    """Queries whose positive passage carries the marker word "relevant"; ids ``ex000``..."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        query = rng.sample(WORDS, 2)
        others = [w for w in WORDS if w not in query]
        texts = [" ".join(["relevant"] + query + rng.sample(others, 2))] + [
            " ".join(rng.sample(others, 5)) for _ in range(3)]
        order = list(range(4))
        rng.shuffle(order)
        rows.append({"example_id": f"ex{i:03d}", "query": " ".join(query), "texts": [texts[j] for j in order],
                     "targets": [1.0 if j == 0 else 0.0 for j in order]})
    return rows


class StallingLoss(torch.nn.Module):
    """The wrapped loss, sleeping ``delay`` seconds before every call after the ``after``-th."""

    def __init__(self, loss: torch.nn.Module, after: int, delay: float):
        super().__init__()
        self.loss, self.after, self.delay, self.calls = loss, after, delay, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            time.sleep(self.delay)
        return self.loss(*args, **kwargs)


def make_loss(stall_after: int | None):
    from rankdistill.losses.registry import get_loss

    loss = get_loss("infonce")
    return loss if stall_after is None else StallingLoss(loss, stall_after, delay=3600.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--student", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--strategy", default="deepspeed")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--stall-after", type=int, default=None)
    args = parser.parse_args()

    import ray.data
    from rankdistill.models import load_reranker
    from rankdistill.ray_runtime import init_ray
    from rankdistill.training import TrainingConfig, fit

    init_ray()
    config = TrainingConfig(strategy=args.strategy, zero_stage=args.zero_stage, num_workers=2, cpus_per_worker=0.5,
                            batch_size=4,
                            learning_rate=3e-3, warmup_ratio=0.25, max_steps=args.max_steps, epochs=100,
                            log_every=1, checkpoint_every=args.checkpoint_every, run_name="resume",
                            storage_path=args.storage, audit_examples=True)
    result = fit(functools.partial(load_reranker, args.student), functools.partial(make_loss, args.stall_after),
                 ray.data.from_items(examples(args.examples)), config, args.output)
    print(json.dumps({"steps": result.steps, "model_dir": str(result.model_dir)}), flush=True)


if __name__ == "__main__":
    main()
