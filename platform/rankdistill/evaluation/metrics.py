"""The metrics core: ir-measures over a :class:`Run` and :class:`Qrels`.

Rankings follow trec_eval's rules (score descending, ties by docid descending; see
:func:`trec_eval_order`), whatever order the run file gave. Aggregates follow ``trec_eval -c``
semantics: the mean is taken over every query in the qrels, and a judged query the run did not
answer scores 0 (so a retriever cannot gain by returning nothing for hard queries).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import ir_measures

from rankdistill.data.records import Qrels, Run
from rankdistill.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP")


def parse_measures(names: Sequence[str], relevance_threshold: int = 1) -> list:
    """ir-measures objects from names; binary measures get ``rel=relevance_threshold`` when > 1.

    ``nDCG@10`` stays graded; ``RR@10``, ``R@100``, ``AP`` become ``RR(rel=2)@10`` etc. when the
    threshold is 2 (TREC DL passage convention). A name that already says ``rel=`` is kept.
    """
    out = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except Exception as exc:  # ir_measures raises ValueError / NameError variants
            raise ConfigError(f"unknown measure '{name}' ({exc})", "evaluation.measures") from None
        if relevance_threshold > 1 and "rel" in measure.SUPPORTED_PARAMS and "rel=" not in name:
            if measure.NAME != "nDCG":
                measure = measure(rel=relevance_threshold)
        out.append(measure)
    return out


@dataclass
class EvaluationResult:
    """Aggregate and per-query values, keyed by the measure's ir-measures name (e.g. ``nDCG@10``)."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    num_queries: int = 0

    def table(self, title: str = "") -> str:
        width = max((len(k) for k in self.aggregate), default=8)
        lines = [title] if title else []
        lines.append(f"{'measure':<{width}}  value   (queries: {self.num_queries})")
        lines += [f"{name:<{width}}  {value:.4f}" for name, value in self.aggregate.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"aggregate": self.aggregate, "num_queries": self.num_queries, "per_query": self.per_query}


def trec_eval_order(docs: dict[str, float]) -> dict[str, float]:
    """One query's scores replaced by ``n, n-1, ..., 1`` in trec_eval's order (score descending,
    ties by docid descending), so every ir-measures provider ranks as trec_eval does.

    Without this, tied scores are ordered by the provider: pytrec_eval (nDCG, AP, R) breaks them
    by docid descending, the MS MARCO provider behind ``RR@k`` by docid ascending, so one run
    would be ranked two ways in one evaluation.
    """
    ranked = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    n = len(ranked)
    return {docid: float(n - i) for i, (docid, _) in enumerate(ranked)}


def check_run_scores(run: Run) -> None:
    """A NaN or infinite score (a diverged student, a broken run) has no place in a ranking:
    ir-measures would order it arbitrarily. An error naming the query and document."""
    for qid, docs in run.items():
        for docid, score in docs.items():
            if not math.isfinite(score):
                raise DataFormatError(f"run score of query '{qid}', document '{docid}' is {score}, not a finite number")


def evaluate(
    run: Run,
    qrels: Qrels,
    measures: Sequence[str] = DEFAULT_MEASURES,
    relevance_threshold: int = 1,
) -> EvaluationResult:
    """Evaluate ``run`` against ``qrels``; see :func:`parse_measures` for ``relevance_threshold``."""
    parsed = parse_measures(measures, relevance_threshold)
    names = [str(m) for m in parsed]
    check_run_scores(run)
    judged = [q for q in qrels if qrels[q]]
    per_query: dict[str, dict[str, float]] = {q: {n: 0.0 for n in names} for q in judged}
    answered = {q: trec_eval_order(docs) for q, docs in run.items() if q in qrels and docs}
    if judged and not answered:
        logger.warning(
            "none of the run's %d queries is judged in the qrels (%d judged queries, e.g. %s; run queries e.g. "
            "%s): every measure is 0 — check that the run and the qrels use the same query ids and split",
            len(run), len(judged), ", ".join(sorted(judged)[:3]), ", ".join(sorted(run)[:3]) or "none",
        )
    if answered:
        for metric in ir_measures.iter_calc(parsed, dict(qrels), answered):
            per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    aggregate = {
        n: (sum(per_query[q][n] for q in judged) / len(judged)) if judged else 0.0 for n in names
    }
    return EvaluationResult(aggregate, per_query, len(judged))
