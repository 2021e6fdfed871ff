"""rankdistill.evaluation.significance: Student's paired t-test against values computed by hand."""

from __future__ import annotations

import math

import pytest
from rankdistill.evaluation.significance import paired_t_test

M = "nDCG@10"


def per_query(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"q{i}": {M: v} for i, v in enumerate(values)}


def test_paired_t_test_matches_the_hand_computed_statistic_interval_and_p_value():
    # differences b - a: 0.1, 0.05, 0.2, 0.05 -> mean 0.1, sample sd sqrt(0.015 / 3) = 0.0707107,
    # standard error 0.0353553, t = 2.828427 with 3 degrees of freedom
    a, b = per_query([0.5, 0.6, 0.7, 0.4]), per_query([0.6, 0.65, 0.9, 0.45])
    result = paired_t_test(a, b, M)
    assert result.queries == 4 and result.delta == pytest.approx(0.1)
    assert result.mean_a == pytest.approx(0.55) and result.mean_b == pytest.approx(0.65)
    # Student's t CDF with 3 degrees of freedom in closed form:
    # F(t) = 1/2 + (1/pi) * (u / (1 + u^2) + atan(u)), u = t / sqrt(3)
    t = 0.1 / (math.sqrt(0.015 / 3) / 2)
    u = t / math.sqrt(3)
    cdf = 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi
    assert result.p_value == pytest.approx(2 * (1 - cdf), abs=1e-9)  # 0.0663
    # 95% interval: mean -+ t_{0.975, 3} * se, t_{0.975, 3} = 3.182446 (printed t tables)
    half = 3.182446 * math.sqrt(0.015 / 3) / 2
    assert result.ci_low == pytest.approx(0.1 - half, abs=1e-6)
    assert result.ci_high == pytest.approx(0.1 + half, abs=1e-6)
    assert result.line() == f"delta +0.1000 (95% CI {0.1 - half:+.4f}..{0.1 + half:+.4f}; p 0.0663; 4 queries)"


def test_swapping_the_runs_flips_the_sign_not_the_p_value():
    a, b = per_query([0.2, 0.4, 0.9, 0.1, 0.3]), per_query([0.3, 0.2, 0.8, 0.5, 0.35])
    ab, ba = paired_t_test(a, b, M), paired_t_test(b, a, M)
    assert ab.delta == pytest.approx(-ba.delta)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert ab.ci_low == pytest.approx(-ba.ci_high)


def test_identical_runs_and_constant_differences_need_no_variance():
    a = per_query([0.2, 0.4, 0.9])
    same = paired_t_test(a, a, M)
    assert (same.delta, same.p_value, same.ci_low, same.ci_high) == (0.0, 1.0, 0.0, 0.0)
    shifted = paired_t_test(a, per_query([0.3, 0.5, 1.0]), M)
    assert shifted.delta == pytest.approx(0.1) and shifted.p_value == 0.0


def test_runs_over_different_queries_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"different queries \(1 in one only, e.g. \['q2'\]\)"):
        paired_t_test(per_query([0.1, 0.2, 0.3]), per_query([0.1, 0.2]), M)
    with pytest.raises(ValueError, match="at least 2 queries"):
        paired_t_test(per_query([0.1]), per_query([0.2]), M)
