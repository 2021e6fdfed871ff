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
    return [{"qid": cl.qid, "query": cl.query.text, "docid": c.docid, "text": c.contents, "rank": i}
            for i, c in enumerate(cl.candidates[: config.top_k])]


def log_p_yes(lp_yes: float, lp_no: float) -> float:
    top = max(lp_yes, lp_no)
    return lp_yes - (top + math.log(math.exp(lp_yes - top) + math.exp(lp_no - top)))


def score_points(units: Sequence[dict[str, Any]], backend: TeacherBackend, template: PromptTemplate) -> list[dict[str, Any]]:
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
