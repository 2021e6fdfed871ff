"""Cutting one large request into token-budget slices, so a server can interleave it with others.

A pointwise model scores every (query, passage) row on its own, so a request's rows can be scored
in several server batches and put back together: :func:`split_prepared` cuts a
:class:`~rankdistill.serving.scoring.Prepared` request at document boundaries (a chunked
document's windows stay in one slice, so MaxP sees all of them) into slices of at most
``token_budget`` tokens. A server that awaits one slice before queueing the next lets requests that
arrive meanwhile into the next batch: a small request waits for at most about two slices, not for
the whole large request (head-of-line blocking). Listwise models score a request's list as a whole
and are not cut. A pairwise (duo) request is cut by :func:`split_pairs` into slices of its passage
pairs; the server aggregates the pairs' probabilities once every slice is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rankdistill.serving.scoring import Prepared


def split_prepared(prepared: Prepared, token_budget: int) -> list[Prepared]:
    """Slices of ``prepared`` (documents in input order) of at most ``token_budget`` row tokens
    each (a single document costing more gets a slice of its own); one slice when ``prepared``
    has no pointwise rows."""
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if not prepared.rows or prepared.num_tokens <= token_budget:
        return [prepared]
    # pieces of document d are contiguous (prepare appends them document by document)
    first_piece = [0] * (prepared.num_documents + 1)
    for d in range(prepared.num_documents):
        first_piece[d + 1] = first_piece[d] + prepared.chunks[d]
    slices: list[Prepared] = []
    start_doc, cost = 0, 0
    for d in range(prepared.num_documents):
        doc_cost = sum(prepared.lengths[first_piece[d] : first_piece[d + 1]])
        if d > start_doc and cost + doc_cost > token_budget:
            slices.append(_slice(prepared, start_doc, d, first_piece))
            start_doc, cost = d, 0
        cost += doc_cost
    slices.append(_slice(prepared, start_doc, prepared.num_documents, first_piece))
    return slices


def split_pairs(prepared: Prepared, token_budget: int) -> list[Prepared]:
    """Slices of a pairwise request's ``pairs`` (in order) of at most ``token_budget`` pair tokens
    each (a single pair costing more gets a slice of its own). Every slice keeps the request's
    pieces, so pair indices stay valid; concatenating the slices' pairs gives ``prepared.pairs``."""
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if not prepared.pairs:
        return [prepared]
    bounds, cost, start = [], 0, 0
    for i, n in enumerate(prepared.pair_lengths):
        if i > start and cost + n > token_budget:
            bounds.append((start, i))
            start, cost = i, 0
        cost += n
    bounds.append((start, len(prepared.pairs)))
    return [replace(prepared, pairs=prepared.pairs[a:b], pair_lengths=prepared.pair_lengths[a:b]) for a, b in bounds]


def _slice(p: Prepared, d0: int, d1: int, first_piece: Sequence[int]) -> Prepared:
    a, b = first_piece[d0], first_piece[d1]
    return Prepared(
        query=p.query, pieces=p.pieces[a:b], owner=[o - d0 for o in p.owner[a:b]],
        doc_tokens=p.doc_tokens[d0:d1], truncated=p.truncated[d0:d1], chunks=p.chunks[d0:d1],
        rows=p.rows[a:b], lengths=p.lengths[a:b],
    )


def keep_last_tokens(tokenizer, documents: Sequence[str], limit: int) -> tuple[list[str], list[int]]:
    """TEI's ``truncation_direction: Left``: each document longer than ``limit`` tokens cut to its
    last ``limit`` tokens (at token boundaries); returns the texts and every document's token count
    before the cut."""
    encodings = tokenizer._backend.encode_batch(list(documents), add_special_tokens=False)
    texts, counts = [], []
    for text, enc in zip(documents, encodings):
        n = len(enc.ids)
        counts.append(n)
        texts.append(text if n <= limit else text[enc.offsets[n - limit][0] :])
    return texts, counts
