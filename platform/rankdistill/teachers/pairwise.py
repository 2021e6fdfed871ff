"""Pairwise labels (PairDistill §4.1): pairs from the top-k of a ranked list, both orders scored.

:func:`sample_pairs` draws ``pairs_per_query`` pairs ``(i, j)``, ``i < j < top_k``, ``j - i < delta``
(positions in the given list, which PairDistill takes from a pointwise reranker), seeded by
``seed``, the query id and the PairDistill ``iteration``, so the pairs of a query do not depend on
batching or on the other queries, and each iteration draws new positions. Each pair is shown in both orders; with the template's answer tokens ``first`` (the
first-shown passage wins: "A", duoT5's "true") and ``second``:

    p_fwd = P(first | a, b) / (P(first | a, b) + P(second | a, b))      (a shown first)
    p_rev = P(second | b, a) / (P(first | b, a) + P(second | b, a))     (a shown second)
    P(a ≻ b) = (p_fwd + p_rev) / 2                                       (position bias cancels)

The label keeps the raw token log-probabilities of both prompts and ``logprob_a_wins`` = log P(a ≻ b).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rankdistill.data.records import CandidateList
from rankdistill.errors import ConfigError
from rankdistill.teachers.backends.base import Prompt, TeacherBackend
from rankdistill.teachers.prompts import PromptTemplate


@dataclass
class PairwiseConfig:
    top_k: int = 100  # pairs come from the first top_k positions of each list
    delta: int = 10  # |i - j| < delta
    pairs_per_query: int = 50  # m; all eligible pairs when fewer
    seed: int = 0
    both_orders: bool = True
    # the PairDistill iteration drawing (set by jobs/pairdistill.py): iteration 1 draws as before
    # iterations existed (seed, qid); later ones add the iteration to the seed, so they draw anew
    iteration: int = 1
    # PairDistill samples pairs from a pointwise-reranked list: reorder each list by the stored
    # pointwise labels of this teacher id and template (hash or id) first (null: keep the given order)
    rerank_by_teacher: str | None = None
    rerank_by_template: str | None = None

    def check(self) -> None:
        if self.delta < 2:
            raise ConfigError("must be >= 2 (|i - j| < delta needs delta > 1)", "pairwise.delta")
        if self.pairs_per_query < 1 or self.top_k < 2:
            raise ConfigError("pairs_per_query >= 1 and top_k >= 2 needed", "pairwise")
        if self.iteration < 1:
            raise ConfigError("must be >= 1", "pairwise.iteration")


def eligible_pairs(n: int, top_k: int, delta: int) -> list[tuple[int, int]]:
    limit = min(n, top_k)
    return [(i, j) for i in range(limit) for j in range(i + 1, min(limit, i + delta))]


def sample_pairs(qid: str, n: int, config: PairwiseConfig) -> list[tuple[int, int]]:
    """Seeded sample of position pairs ``(i, j)``, ``i < j``, sorted (seed, query id and, after
    the first, the iteration)."""
    pairs = eligible_pairs(n, config.top_k, config.delta)
    if len(pairs) <= config.pairs_per_query:
        return pairs
    key = f"{config.seed}:{qid}" if config.iteration <= 1 else f"{config.seed}:{qid}:iteration-{config.iteration}"
    rng = random.Random(key)
    return sorted(rng.sample(pairs, config.pairs_per_query))


def rerank_by_scores(cl: CandidateList, scores: dict[str, float]) -> CandidateList:
    """``cl`` ordered by ``scores`` (descending; stable); documents without a score keep their order
    after the scored ones."""
    scored = sorted((c for c in cl.candidates if c.docid in scores), key=lambda c: -scores[c.docid])
    rest = [c for c in cl.candidates if c.docid not in scores]
    return CandidateList(cl.query, scored + rest)


def pair_units(cl: CandidateList, config: PairwiseConfig) -> list[dict[str, Any]]:
    """The work units of one list: one row per sampled pair."""
    out = []
    for i, j in sample_pairs(cl.qid, len(cl), config):
        a, b = cl.candidates[i], cl.candidates[j]
        out.append({"qid": cl.qid, "query": cl.query.text, "docid_a": a.docid, "text_a": a.contents, "rank_a": i,
                    "docid_b": b.docid, "text_b": b.contents, "rank_b": j})
    return out


def _p_first(lp_first: float, lp_second: float) -> float:
    """P(first | {first, second}) from two log-probabilities, stably."""
    return 1.0 / (1.0 + math.exp(max(-700.0, min(700.0, lp_second - lp_first))))


def score_pairs(
    units: Sequence[dict[str, Any]], backend: TeacherBackend, template: PromptTemplate, config: PairwiseConfig
) -> list[dict[str, Any]]:
    tokens = template.label_tokens
    first, second = tokens["first"], tokens["second"]
    if backend.judges_text:  # a pairwise student (duo): no prompt, the texts
        shown = []
        for u in units:
            shown.append((u["query"], u["text_a"], u["text_b"]))
            if config.both_orders:
                shown.append((u["query"], u["text_b"], u["text_a"]))
        logprobs = backend.judge_pairs(shown, first, second) if shown else []
    else:
        tok = backend.tokenizer
        prompts = []
        for u in units:
            prompts.append(Prompt(template.pairwise(u["query"], u["text_a"], u["text_b"], tok), u["qid"],
                                  (u["docid_a"], u["docid_b"])))
            if config.both_orders:
                prompts.append(Prompt(template.pairwise(u["query"], u["text_b"], u["text_a"], tok), u["qid"],
                                      (u["docid_b"], u["docid_a"])))
        logprobs = backend.token_logprobs(prompts, [first, second]) if prompts else []
    step = 2 if config.both_orders else 1
    rows = []
    for n, u in enumerate(units):
        fwd = logprobs[n * step]
        p = _p_first(fwd[first], fwd[second])
        row = {
            "qid": u["qid"], "docid_a": u["docid_a"], "docid_b": u["docid_b"],
            "rank_a": int(u["rank_a"]), "rank_b": int(u["rank_b"]),
            "logprob_first_ab": fwd[first], "logprob_second_ab": fwd[second],
            "logprob_first_ba": None, "logprob_second_ba": None,
        }
        if config.both_orders:
            rev = logprobs[n * step + 1]
            p = 0.5 * (p + (1.0 - _p_first(rev[first], rev[second])))
            row["logprob_first_ba"], row["logprob_second_ba"] = rev[first], rev[second]
        row["p_a_wins"] = p
        row["logprob_a_wins"] = math.log(p) if p > 0 else -1e9
        rows.append(row)
    return rows
