"""Token-budget batching for transformer scoring: length-sorted sub-batches that fit a budget.

A transformer forward over ``n`` rows padded to ``L`` tokens costs ``~ n * L`` token slots. Sorting
the rows by length (longest first) and cutting consecutive runs whose *padded* size
``rows * longest`` stays within ``token_budget`` keeps both the padding and the peak memory small:
every sub-batch only pads to its own longest row, and neighbouring rows have similar lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SubBatch:
    """Row indices (into the caller's list) of one forward pass and the width it pads to."""

    rows: tuple[int, ...]
    width: int

    @property
    def padded_tokens(self) -> int:
        return len(self.rows) * self.width


def plan_sub_batches(
    lengths: Sequence[int], token_budget: int, max_rows: int | None = None, max_padding: float = 1.0
) -> list[SubBatch]:
    """Cut rows of token ``lengths`` into length-sorted sub-batches.

    Rows are sorted by length, longest first (stable, so equal lengths keep input order); a
    sub-batch grows while ``(rows + 1) * width <= token_budget`` (``width`` = its first, longest
    row), ``rows < max_rows`` and its padding stays within ``max_padding`` of its token slots.
    A single row longer than the budget gets a sub-batch of its own.

    Args:
        lengths: tokens per row (special tokens included), ``n`` values.
        token_budget: max padded token slots per sub-batch (``rows * width``).
        max_rows: optional cap on rows per sub-batch.
        max_padding: max share of padding slots per sub-batch (1.0: no limit); small values give
            more, smaller forward passes with (almost) no padding computed.

    Returns:
        Sub-batches covering every row exactly once, in processing order.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    out: list[SubBatch] = []
    current: list[int] = []
    width = padding = 0
    for i in order:
        n = int(lengths[i])
        if current and (
            (len(current) + 1) * width > token_budget
            or (max_rows and len(current) >= max_rows)
            or padding + width - n > max_padding * (len(current) + 1) * width
        ):
            out.append(SubBatch(tuple(current), width))
            current = []
        if not current:
            width, padding = max(n, 1), 0
        current.append(i)
        padding += width - n
    if current:
        out.append(SubBatch(tuple(current), width))
    return out


def padding_fraction(lengths: Sequence[int], batches: Sequence[SubBatch]) -> float:
    """Share of computed token slots that are padding: ``1 - sum(lengths) / sum(rows * width)``."""
    slots = sum(b.padded_tokens for b in batches)
    return 0.0 if slots == 0 else 1.0 - sum(int(x) for x in lengths) / slots
