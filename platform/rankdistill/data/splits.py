"""A dev set carved from a training split, the one way every job makes it.

SciFact (and any collection without a dev split) gets its dev queries as a fixed, seeded sample of
the judged training queries. ``jobs/pairdistill.py`` selects checkpoints on them; a teacher trained
for that job leaves the same queries out (``data.holdout_queries`` / ``data.holdout_seed`` of
``jobs/train_reranker.py``), so nothing the job selects on was seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def carve(judged_ids: Iterable[str], n: int, seed: int) -> list[str]:
    """``n`` query ids sampled with ``random.Random(seed)`` from the sorted judged ids; sorted."""
    ids = sorted(judged_ids)
    if n > len(ids):
        raise ValueError(f"cannot carve {n} queries from {len(ids)}")
    return sorted(random.Random(seed).sample(ids, n))
