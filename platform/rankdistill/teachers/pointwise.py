"""Pointwise labels: relevance from the yes/no (or true/false) next-token log-probabilities.

``score`` = log P(yes | {yes, no}) = logprob_yes − logsumexp(logprob_yes, logprob_no), a
log-probability (monoT5's and InstUPR's relevance score); the raw full-vocabulary
``logprob_yes`` / ``logprob_no`` are kept beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rankdistill.data.records import CandidateList
from rankdistill.teachers.backends.base import Prompt, TeacherBackend
from rankdistill.teachers.prompts import PromptTemplate


@dataclass
class PointwiseConfig:
    top_k: int = 100  # label the first top_k candidates of each list

    def __post_init__(self) -> None:
        from rankdistill.config import check_range

        check_range("top_k", self.top_k, minimum=1)


def point_units(cl: CandidateList, config: PointwiseConfig) -> list[dict[str, Any]]:
    return [{"qid": cl.qid, "query": cl.query.text, "docid": c.docid, "text": c.contents, "rank": i,
             "first_stage": float(c.score)}
            for i, c in enumerate(cl.candidates[: config.top_k])]


def point_list_units(units: Sequence[dict[str, Any]], pending: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Point units regrouped into one unit per query (``qid, query, docids, texts, ranks,
    first_stage, pending``) for a backend that scores whole lists (``ensemble``): every passage of
    the query's list in rank order, ``pending`` marking those still to be labelled. Queries with
    nothing pending are left out."""
    todo = {(u["qid"], u["docid"]) for u in pending}
    lists: dict[str, dict[str, Any]] = {}
    for u in sorted(units, key=lambda u: (u["qid"], int(u["rank"]))):
        entry = lists.setdefault(u["qid"], {"qid": u["qid"], "query": u["query"], "docids": [], "texts": [],
                                            "ranks": [], "first_stage": [], "pending": []})
        entry["docids"].append(u["docid"])
        entry["texts"].append(u["text"])
        entry["ranks"].append(int(u["rank"]))
        entry["first_stage"].append(float(u.get("first_stage", 0.0)))
        entry["pending"].append((u["qid"], u["docid"]) in todo)
    return [e for e in lists.values() if any(e["pending"])]


def score_point_lists(units: Sequence[dict[str, Any]], backend: TeacherBackend,
                      template: PromptTemplate) -> list[dict[str, Any]]:
    """Pointwise label rows from a backend that scores whole lists: ``units`` are list units
    (:func:`point_list_units`) or point units (each query's units in the batch taken as its list).
    ``logprob_yes − logprob_no`` of a row is the backend's score of the passage."""
    from rankdistill.teachers.backends.ensemble import as_label

    if units and "docids" not in units[0]:
        units = point_list_units(units, units)
    yes, no = template.label_tokens["yes"], template.label_tokens["no"]
    rows = []
    for u in units:
        scores = backend.score_list(u, template)
        for n, docid in enumerate(u["docids"]):
            if not u["pending"][n]:
                continue
            lp = as_label(scores[n], yes, no)
            rows.append({"qid": u["qid"], "docid": docid, "rank": int(u["ranks"][n]),
                         "score": log_p_yes(lp[yes], lp[no]), "logprob_yes": lp[yes], "logprob_no": lp[no]})
    return rows


def log_p_yes(lp_yes: float, lp_no: float) -> float:
    top = max(lp_yes, lp_no)
    return lp_yes - (top + math.log(math.exp(lp_yes - top) + math.exp(lp_no - top)))


def score_points(units: Sequence[dict[str, Any]], backend: TeacherBackend, template: PromptTemplate) -> list[dict[str, Any]]:
    if getattr(backend, "scores_lists", False):
        return score_point_lists(units, backend, template)
    yes, no = template.label_tokens["yes"], template.label_tokens["no"]
    if backend.judges_text:  # a trained student: its score, no prompt
        points = [(u["query"], u["text"]) for u in units]
        logprobs = backend.judge_points(points, yes, no) if points else []
    else:
        tok = backend.tokenizer
        prompts = [Prompt(template.pointwise(u["query"], u["text"], tok), u["qid"], (u["docid"],)) for u in units]
        logprobs = backend.token_logprobs(prompts, [yes, no]) if prompts else []
    return [
        {"qid": u["qid"], "docid": u["docid"], "rank": int(u["rank"]), "score": log_p_yes(lp[yes], lp[no]),
         "logprob_yes": lp[yes], "logprob_no": lp[no]}
        for u, lp in zip(units, logprobs, strict=True)
    ]
