"""The permutation parser: always a valid permutation; rank_llm's repairs; exact repair-kind counts."""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rankdistill.teachers.parsing import REPAIR_KINDS, classify_response, parse_permutation


def test_well_formed_response():
    p = parse_permutation("[3] > [1] > [2]", 3)
    assert p.order == (2, 0, 1) and p.kind == "ok" and not p.repaired


def test_rank_llm_repairs():
    # numbers anywhere are ids; out-of-range and repeats dropped; missing appended in order
    p = parse_permutation("Ranking: [4] > [9] > [4] > [2] > 0", 5)
    assert p.order == (3, 1, 0, 2, 4)
    assert (p.out_of_range, p.repeats, p.missing) == (2, 1, 3)
    assert parse_permutation("", 3).order == (0, 1, 2)
    assert parse_permutation("I cannot rank these.", 2).order == (0, 1)
    assert parse_permutation("[２] > [¹]", 2).order == (1, 0)  # look-alike digits, as rank_llm maps them
    assert parse_permutation("<think>[1] > [2]</think>[2] > [1]", 2).order == (1, 0)
    assert parse_permutation("[" + "9" * 5000 + "] > [2]", 2).order == (1, 0)  # no int() of huge runs


def test_each_repair_kind_counted_exactly():
    n = 4
    responses = {
        "ok": ["[2] > [1] > [4] > [3]", " [1] > [2] > [3] > [4] ", "[rankstart] [4] > [3] > [2] > [1] [rankend]"],
        "wrong_format": ["[2]>[1]>[4]>[3]", "2 1 4 3", "The ranking is [1] > [2] > [3] > [4]", "", "[1] > [²]",
                         "[1], [2], [3], [4]"],
        "repetition": ["[1] > [1] > [2] > [3]", "[1] > [2] > [3] > [4] > [1]", "[1] > [2] > [3] > [4] > [5]"],
        "missing": ["[1] > [2] > [3]", "[1] > [2] > [3] > [7]", "[4]"],
    }
    stream = [(kind, r) for kind, rs in responses.items() for r in rs]
    counts = Counter(parse_permutation(r, n).kind for _, r in stream)
    assert counts == Counter({"ok": 3, "wrong_format": 6, "repetition": 3, "missing": 3})
    for kind, r in stream:
        assert classify_response(r, n) == kind, r
        assert sorted(parse_permutation(r, n).order) == list(range(n))


# Responses are built from byte strings (one cheap draw each), mapped three ways: structured
# rankings with random ids and separators, text over an alphabet of the characters that matter
# (digits, look-alike digits, brackets, separators), and arbitrary UTF-8 (invalid bytes replaced).
_SEPARATORS = [" > ", ">", ", ", " ", "\n", " >> ", "] [", " then ", ">\n"]
_ALPHABET = list("0123456789[]> ,.;:\n\t-()abcXYZ") + ["²", "３", "٣", "①", "🄂", "〇", "Ⅻ", "½", "</think>", "[rankend]"]


def _structured(data: bytes) -> str:
    if not data:
        return ""
    sep, wrap = _SEPARATORS[data[0] % len(_SEPARATORS)], data[0] % 3 != 0
    ids = [b % 34 - 3 for b in data[1:]]
    return sep.join(f"[{i}]" if wrap else str(i) for i in ids)


def _near_permutations(n: int):
    """Exact answers for a window of n, and ones with one identifier dropped, repeated or replaced."""
    def perturb(args):
        perm, op, where = args
        ids = list(perm)
        if ids and op == 1:
            del ids[where % len(ids)]
        elif ids and op == 2:
            ids.insert(where % len(ids), ids[(where * 7) % len(ids)])
        elif ids and op == 3:
            ids[where % len(ids)] = n + 1 + where
        return " > ".join(f"[{i}]" for i in ids)

    return st.tuples(st.permutations(range(1, n + 1)), st.integers(0, 3), st.integers(0, 50)).map(perturb)


_responses = st.one_of(
    st.binary(max_size=30).map(_structured),
    st.binary(max_size=60).map(lambda b: "".join(_ALPHABET[x % len(_ALPHABET)] for x in b)),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", "replace")),
    st.tuples(st.binary(max_size=25), st.binary(max_size=30)).map(
        lambda t: _structured(t[0]) + t[1].decode("utf-8", "replace")),
    st.text(max_size=20),
)

_seen: Counter = Counter()


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(n=st.integers(min_value=0, max_value=25), data=st.data())
def test_every_response_becomes_a_valid_permutation(n, data):
    """1,000 examples × 10 responses: 10,000 random and malformed responses through the parser."""
    responses = data.draw(st.lists(st.one_of(_responses, _near_permutations(n)), min_size=10, max_size=10))
    for response in responses:
        parsed = parse_permutation(response, n)
        assert sorted(parsed.order) == list(range(n))
        assert parsed.kind in REPAIR_KINDS
        if parsed.kind == "ok":  # a well-formed answer is taken exactly as given
            assert not parsed.repaired
            assert parsed.order == tuple(int(x) - 1 for x in re.findall(r"\d+", response))
        _seen["responses"] += 1
        _seen[parsed.kind] += 1


def test_the_property_test_fed_at_least_10000_responses():
    # run alone (e.g. ``-k``), this test runs the property test itself instead of skipping
    if not _seen["responses"]:
        test_every_response_becomes_a_valid_permutation()
    assert _seen["responses"] >= 10_000
    print({k: _seen[k] for k in REPAIR_KINDS})
    assert all(_seen[k] > 0 for k in REPAIR_KINDS)
