"""Training examples from teacher labels in the label store.

* ``listwise``: each query's final teacher ranking (after the last window of the last pass);
  the first ``passages_per_query`` passages with ``targets`` = teacher ranks 1..k (1 = best),
  which :class:`~rankdistill.losses.RankNet` and NA-RankNet read as ranks (Set-Encoder §3.3).
* ``pointwise``: the teacher's ``log P(yes)`` per passage as ``targets`` (for the listwise KL
  loss, which applies its own temperature), passages in first-stage order.

* ``pairwise``: PairDistill examples (``training.pair_examples``): pointwise teacher scores as
  ``targets`` (teacher ``pointwise_teacher``, when set) and the pairwise teacher's ``P(a ≻ b)`` as
  ``pair_i / pair_j / pair_p``, collated to ``[B, k, k]`` by ``loop.collate`` when
  ``extra_fields`` holds ``"pair_targets"``.
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
    check_single_template(store, config.label_kind, config.teacher, config.template)
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
    elif config.label_kind == "pairwise":
        from rankdistill.training.pair_examples import PairExamplesConfig, pair_examples_from_store

        pair_config = PairExamplesConfig(
            label_store=config.label_store, pairwise_teacher=config.teacher, pairwise_template=config.template,
            pointwise_teacher=getattr(config, "pointwise_teacher", None),
            pointwise_template=getattr(config, "pointwise_template", None),
            passages_per_query=k, seed=config.seed,
        )
        rows = pair_examples_from_store(queries, corpus, pair_config)
    else:
        raise ConfigError(f"label kind '{config.label_kind}' is not known here "
                          "(listwise, pointwise, pairwise)", "data.label_kind")
    if not rows:
        raise DataFormatError(
            f"no {config.label_kind} labels of teacher '{config.teacher}' for these queries", config.label_store
        )
    rng = random.Random(config.seed)
    rng.shuffle(rows)
    if config.max_queries is not None:
        rows = rows[: config.max_queries]
    return decorate(rows, config)


def check_single_template(store, kind: str, teacher: str, template: str | None) -> None:
    """Labels of one teacher from two templates (or two versions of one template) describe the
    same documents twice with different targets; without ``data.template`` they would be mixed
    into duplicated, conflicting examples. Refuse, naming the templates found."""
    from rankdistill.teachers.store import KINDS

    if template is not None or kind not in KINDS:
        return
    table = store.table(kind, teacher, None, dedupe=False)
    found = sorted(set(zip(table["template_id"].to_pylist(), table["template_hash"].to_pylist(), strict=True)))
    if len(found) > 1:
        names = ", ".join(f"{tid} (hash {thash})" for tid, thash in found)
        raise ConfigError(f"the label store {store.root} holds {kind} labels of teacher '{teacher}' from "
                          f"{len(found)} templates: {names}; set data.template to one of them", "data.template")


def _row(query: Query, docids: list[str], targets: list[float], corpus: Mapping[str, Document]) -> dict[str, Any]:
    return {"qid": query.qid, "query": query.text, "docids": docids,
            "texts": [corpus[d].contents for d in docids], "targets": targets}
