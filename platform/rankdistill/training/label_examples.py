"""Training examples from teacher labels in the label store.

* ``listwise``: each query's final teacher ranking (after the last window of the last pass);
  the first ``passages_per_query`` passages with ``targets`` = teacher ranks 1..k (1 = best),
  which :class:`~rankdistill.losses.RankNet` and NA-RankNet read as ranks (Set-Encoder §3.3).
* ``pointwise``: the teacher's ``log P(yes)`` per passage as ``targets`` (for the listwise KL
  loss, which applies its own temperature), passages in first-stage order.

Pairwise labels (``P(a ≻ b)``) train dense retrievers with PairDistill's pairwise KL; they are
not turned into per-passage targets here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from rankdistill.data.records import Document, Query
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.training.examples import ExamplesConfig, decorate


def examples_from_labels(
    queries: Mapping[str, Query], corpus: Mapping[str, Document], config: ExamplesConfig
) -> list[dict[str, Any]]:
    from rankdistill.teachers.store import LabelStore

    if not config.label_store or not config.teacher:
        raise ConfigError("source 'labels' needs data.label_store and data.teacher", "data.label_store")
    store = LabelStore(config.label_store)
    k = config.passages_per_query
    rows: list[dict[str, Any]] = []
    if config.label_kind == "listwise":
        rankings = store.final_rankings(config.teacher, config.template)
        for qid in sorted(rankings):
            ranking = [d for d in rankings[qid] if d in corpus][:k]
            if qid in queries and len(ranking) >= 2:
                rows.append(_row(queries[qid], ranking, [float(r) for r in range(1, len(ranking) + 1)], corpus))
    elif config.label_kind == "pointwise":
        df = store.read("pointwise", config.teacher, config.template)
        for qid, group in df.groupby("qid", sort=True):
            group = group[group["docid"].isin(list(corpus))].sort_values("rank").head(k)
            if str(qid) in queries and len(group) >= 2:
                rows.append(_row(queries[str(qid)], [str(d) for d in group["docid"]],
                                 [float(s) for s in group["score"]], corpus))
    else:
        raise ConfigError(f"label kind '{config.label_kind}' cannot train a cross-encoder here "
                          "(listwise, pointwise)", "data.label_kind")
    if not rows:
        raise DataFormatError(
            f"no {config.label_kind} labels of teacher '{config.teacher}' for these queries", config.label_store
        )
    rng = random.Random(config.seed)
    rng.shuffle(rows)
    if config.max_queries is not None:
        rows = rows[: config.max_queries]
    return decorate(rows, config)


def _row(query: Query, docids: list[str], targets: list[float], corpus: Mapping[str, Document]) -> dict[str, Any]:
    return {"qid": query.qid, "query": query.text, "docids": docids,
            "texts": [corpus[d].contents for d in docids], "targets": targets}
