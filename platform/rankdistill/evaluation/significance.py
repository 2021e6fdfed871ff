"""Is one system's gain over another more than query noise? A paired t-test over per-query values.

Two runs evaluated on the same queries (:attr:`EvaluationResult.per_query`) are compared query by
query: the mean difference, its confidence interval and the two-sided p-value of Student's paired
t-test (``scipy.stats.ttest_rel``), the test IR papers report most often (Sakai 2014, "Statistical
reform in information retrieval?"). A small dev or test set makes a difference of a few points of
nDCG@10 noise: this says how much.

Example::

    a = evaluate(run_a, qrels, ["nDCG@10"])
    b = evaluate(run_b, qrels, ["nDCG@10"])
    paired_t_test(a.per_query, b.per_query, "nDCG@10").line()
    # 'delta +0.0302 (95% CI +0.0101..+0.0503; p 0.0034; 300 queries)'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedComparison:
    """``b`` against ``a`` on the queries both were evaluated on."""

    measure: str
    queries: int
    mean_a: float
    mean_b: float
    delta: float  # mean of b - a, per query
    ci_low: float
    ci_high: float
    p_value: float  # two-sided; 1.0 when every query's difference is 0
    confidence: float = 0.95

    def line(self) -> str:
        return (f"delta {self.delta:+.4f} ({self.confidence:.0%} CI {self.ci_low:+.4f}..{self.ci_high:+.4f}; "
                f"p {self.p_value:.4f}; {self.queries} queries)")


def paired_t_test(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]], measure: str,
                  confidence: float = 0.95) -> PairedComparison:
    """Student's paired t-test of ``b`` against ``a`` on ``measure``.

    Args:
        a, b: per-query values, ``qid -> {measure: value}`` (``EvaluationResult.per_query``).
        measure: the ir-measures name, e.g. ``nDCG@10``.
        confidence: of the interval around the mean difference.

    Raises:
        ValueError: fewer than 2 queries carry ``measure`` in both, or the two cover different
            queries (a per-query comparison needs the same ones; evaluate both on the same qrels).
    """
    from scipy import stats

    qa = {q for q, v in a.items() if measure in v}
    qb = {q for q, v in b.items() if measure in v}
    if qa != qb:
        only = sorted(qa ^ qb)
        raise ValueError(f"paired test on {measure}: the runs cover different queries ({len(only)} in one only, "
                         f"e.g. {only[:3]}); evaluate both on the same qrels")
    queries = sorted(qa)
    if len(queries) < 2:
        raise ValueError(f"paired test on {measure}: needs at least 2 queries, got {len(queries)}")
    xa = [float(a[q][measure]) for q in queries]
    xb = [float(b[q][measure]) for q in queries]
    diffs = [y - x for x, y in zip(xa, xb, strict=True)]
    n = len(diffs)
    delta = sum(diffs) / n
    if all(d == diffs[0] for d in diffs):  # no variance: the t statistic is undefined
        p = 1.0 if delta == 0 else 0.0
        low = high = delta
    else:
        result = stats.ttest_rel(xb, xa)
        p = float(result.pvalue)
        interval = result.confidence_interval(confidence)
        low, high = float(interval.low), float(interval.high)
    return PairedComparison(measure=measure, queries=n, mean_a=sum(xa) / n, mean_b=sum(xb) / n, delta=delta,
                            ci_low=low, ci_high=high, p_value=p if not math.isnan(p) else 1.0,
                            confidence=confidence)
