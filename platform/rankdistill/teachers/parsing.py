"""The listwise permutation parser, with rank_llm-compatible repair and repair-kind counting.

:func:`parse_permutation` never fails: whatever the model says, it returns a permutation of
``range(n)``. Repair follows rank_llm's ``receive_permutation``: every run of digits is an
identifier (1-based → 0-based; look-alike digits such as ``²`` or ``３`` are read as digits),
repeats are dropped (first kept), identifiers outside ``1..n`` are dropped, and the identifiers the
response left out are appended in their original order.

The *kind* of a response follows rank_llm's ``ResponseAnalyzer`` (one per response):

``ok``            exactly ``[a] > [b] > ...`` naming each of ``1..n`` once;
``wrong_format``  anything but brackets, digits, ``>`` and spaces, or not ``] > [``-separated;
``repetition``    well formed but longer than ``n`` or naming an identifier twice;
``missing``       well formed but shorter than ``n``, or (same length, no repeats) naming an
                  identifier outside ``1..n`` instead of one inside.

The counts of each repair action (out-of-range dropped, repeats dropped, missing appended) are
returned too, whatever the kind.

Alphabetic identifiers (``[A] > [C] > [B]``, a template with ``identifiers: alpha``) are read as
rank_llm's ``clean_ranking_response(use_alpha=True)`` reads them: each letter becomes its position
in the alphabet (``A`` → 1) and a run of letters the concatenation of those numbers; then the
numeric rules above apply (:func:`alpha_to_numeric`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

REPAIR_KINDS = ("ok", "wrong_format", "repetition", "missing")
_MAX_ID_DIGITS = 9  # longer digit runs are out of range for any window (and never int()-ed)

# rank_llm's "fake numbers" (superscripts, subscripts, circled, full-width, ...) read as digits.
_FAKE_DIGITS = str.maketrans(
    "⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉①②③④⑤⑥⑦⑧⑨❶❷❸❹❺❻❼❽❾０１２３４５６７８９🄀🄁🄂🄃🄄🄅🄆🄇🄈🄉",
    "0123456789012345678912345678912345678901234567890123456789",
)


@dataclass(frozen=True)
class ParsedPermutation:
    """``order[i]`` is the 0-based input position of the passage ranked ``i``-th."""

    order: tuple[int, ...]
    kind: str
    out_of_range: int = 0
    repeats: int = 0
    missing: int = 0

    @property
    def repaired(self) -> bool:
        return bool(self.out_of_range or self.repeats or self.missing)


def _digit_runs(response: str) -> list[str]:
    """Every maximal run of digits (ASCII after mapping look-alikes) in ``response``."""
    text = response.translate(_FAKE_DIGITS)
    runs: list[str] = []
    current: list[str] = []
    for ch in text:
        if "0" <= ch <= "9":
            current.append(ch)
            continue
        value = unicodedata.decimal(ch, None) if ch.isdigit() else None
        if value is not None:  # other scripts' decimal digits (Arabic-Indic, Devanagari, ...)
            current.append(str(value))
            continue
        if current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs


def alpha_to_numeric(response: str) -> str:
    """rank_llm's alphabetic reading: every alphabetic character becomes ``ord(c) - ord('A') + 1``
    (``"[B] > [A]"`` → ``"[2] > [1]"``; a lower-case letter or a word becomes an out-of-range
    number, as in rank_llm); digits, which rank_llm drops in this mode, become spaces."""
    if "</think>" in response:
        response = response.split("</think>")[-1]
    out = []
    for ch in response:
        if ch.isalpha():
            out.append(str(ord(ch) - (ord("A") - 1)))
        elif ch.isdigit():
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def classify_response(response: str, n: int) -> str:
    """rank_llm's ResponseAnalyzer verdict for one response to a window of ``n`` passages."""
    resp = response.replace("[rankstart]", "").replace("[rankend]", "").strip()
    if not resp or any(not ("0" <= c <= "9") and c not in "[]> " for c in resp):
        return "wrong_format"
    digits = [i for i, c in enumerate(resp) if "0" <= c <= "9"]
    if not digits:
        return "wrong_format"
    core = resp[digits[0] : digits[-1] + 1]
    pieces = core.split("] > [")
    if not all(p and p.isascii() and p.isdigit() for p in pieces):
        return "wrong_format"
    ranks = [int(p) if len(p) <= _MAX_ID_DIGITS else -1 for p in pieces]
    if len(ranks) < n:
        return "missing"
    if len(ranks) > n or len(set(ranks)) < n:
        return "repetition"
    if set(ranks) != set(range(1, n + 1)):
        return "missing"
    return "ok"


def parse_permutation(response: str, n: int, alpha: bool = False) -> ParsedPermutation:
    """Repair ``response`` into a permutation of ``range(n)`` (see the module docstring);
    ``alpha``: the identifiers are letters."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if alpha:
        response = alpha_to_numeric(response)
    if "</think>" in response:
        response = response.split("</think>")[-1]
    order: list[int] = []
    seen: set[int] = set()
    out_of_range = repeats = 0
    for run in _digit_runs(response):
        index = int(run) - 1 if len(run) <= _MAX_ID_DIGITS else -1
        if not 0 <= index < n:
            out_of_range += 1
        elif index in seen:
            repeats += 1
        else:
            seen.add(index)
            order.append(index)
    missing = [i for i in range(n) if i not in seen]
    return ParsedPermutation(
        order=tuple(order + missing),
        kind=classify_response(response, n),
        out_of_range=out_of_range,
        repeats=repeats,
        missing=len(missing),
    )
