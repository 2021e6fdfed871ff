"""Training examples for list-based students: one row per query with its passages and targets.

A row is ``{"qid", "query", "docids", "texts", "targets"}`` plus optional per-passage extras
(``duplicate_targets`` for the Set-Encoder's duplicate head, ``clusters`` for NA-RankNet).
The training loop tokenises rows inside the Ray Train workers.

Sources (``ExamplesConfig.source``):

* ``qrels``: a judged positive plus hard negatives from a run (:func:`examples_from_qrels`);
* ``labels``: teacher labels from the label store (:func:`examples_from_labels`):

  - ``listwise``: each query's final teacher ranking (after the last window of the last pass);
    the first ``passages_per_query`` passages with ``targets`` = teacher ranks 1..k (1 = best),
    which :class:`~rankdistill.losses.RankNet` and NA-RankNet read as ranks (Set-Encoder §3.3);
  - ``listwise_soft``: one row per listwise window labelled in mode ``first``: the window's
    passages (prompt order; the ``passages_per_query`` with the highest teacher log-probabilities
    when the window is longer) with ``targets`` = the teacher's identifier log-probabilities, for
    :class:`~rankdistill.losses.WindowKLDistillation` (``window_kl``): the window is the list;
  - ``pointwise``: the teacher's ``log P(yes)`` per passage as ``targets`` (for the listwise KL
    loss, which applies its own temperature), passages in first-stage order;
  - ``pairwise``: PairDistill examples (``training.pair_examples``): pointwise teacher scores as
    ``targets`` (teacher ``pointwise_teacher``, when set) and the pairwise teacher's ``P(a ≻ b)`` as
    ``pair_i / pair_j / pair_p``, collated to ``[B, k, k]`` by ``loop.collate`` when
    ``extra_fields`` holds ``"pair_targets"``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rankdistill.config import check_choice, check_range
from rankdistill.data.records import Document, Qrels, Query, Run
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.training.augment import add_duplicate, novelty_clusters


@dataclass
class ExamplesConfig:
    """Where examples come from.

    ``source: qrels``: per query one positive (grade ≥ ``min_grade``) plus
    ``passages_per_query - 1`` hard negatives sampled from the top ``negatives_depth`` of
    ``negatives_run`` (a TREC file path or a name in the dataset's ``runs/``; null: BM25 on the
    fly). ``positives_from_run: true`` draws the positive among the judged documents the run
    retrieved in that depth (the distribution a reranker of that run sees; queries with none are
    skipped) instead of among all judged documents: on collections with many judged documents
    outside the run (NFCorpus) the latter pits lexically distant positives against BM25's
    nearest negatives. ``source: labels``: teacher labels from the label store (``label_kind`` listwise →
    targets are teacher ranks; listwise_soft → one row per FIRST window, targets its identifier
    log-probabilities; pointwise → teacher scores).
    """

    dataset: str = "demo"
    split: str = "train"
    source: str = "qrels"
    negatives_run: str | None = None
    negatives_depth: int = 100
    passages_per_query: int = 8
    min_grade: int = 1
    positives_from_run: bool = False
    max_queries: int | None = None
    seed: int = 42
    # leave out the dev queries jobs/pairdistill.py carves from this split (its splits.dev_queries
    # and splits.seed), so a teacher trained here never saw what the job selects on
    holdout_queries: int = 0
    holdout_seed: int = 13
    add_duplicate: bool = False  # Set-Encoder §3.4: duplicate one passage, train the duplicate head
    novelty_clusters: bool = False  # Set-Encoder §3.5: word-Jaccard clusters for NA-RankNet
    max_pairs_per_query: int | None = None  # duo students: cap on the (ordered) training pairs of a query
    label_store: str | None = None
    label_kind: str = "listwise"  # listwise | listwise_soft | pointwise | pairwise
    teacher: str | None = None
    template: str | None = None
    pointwise_teacher: str | None = None  # label_kind pairwise: teacher / template of the [B, k] targets
    pointwise_template: str | None = None

    def __post_init__(self) -> None:
        check_choice("source", self.source, ("qrels", "labels"))
        check_range("passages_per_query", self.passages_per_query, minimum=2)
        check_range("negatives_depth", self.negatives_depth, minimum=1)
        check_range("max_queries", self.max_queries, minimum=1)
        check_range("holdout_queries", self.holdout_queries, minimum=0)
        check_range("max_pairs_per_query", self.max_pairs_per_query, minimum=2)


def examples_from_qrels(
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    qrels: Qrels,
    negatives: Run,
    config: ExamplesConfig,
) -> list[dict[str, Any]]:
    """One example per judged query that has a positive with text and enough negatives."""
    rng = random.Random(config.seed)
    rows: list[dict[str, Any]] = []
    need = config.passages_per_query - 1
    if need < 1:
        raise ConfigError("passages_per_query must be >= 2 (a positive and a negative)", "data.passages_per_query")
    for qid in sorted(qrels):
        if qid not in queries:
            continue
        judged = qrels[qid]
        positives = sorted(d for d, g in judged.items() if g >= config.min_grade and d in corpus)
        if not positives:
            continue
        top = [d for d, _ in negatives.ranked(qid)[: config.negatives_depth] if d in corpus]
        if config.positives_from_run:
            positives = [d for d in top if judged.get(d, 0) >= config.min_grade]
            if not positives:
                continue
        pool = [d for d in top if judged.get(d, 0) < config.min_grade]
        if len(pool) < need:
            # top up with random corpus documents not judged relevant (a short or missing run)
            extra = [d for d in rng.sample(sorted(corpus), min(len(corpus), 4 * need + 8))
                     if judged.get(d, 0) < config.min_grade and d not in pool]
            pool += extra
        if len(pool) < need:
            continue
        positive = rng.choice(positives)
        chosen = [positive] + rng.sample(pool, need)
        rows.append({
            "qid": qid,
            "query": queries[qid].text,
            "docids": chosen,
            "texts": [corpus[d].contents for d in chosen],
            "targets": [float(judged.get(d, 0)) for d in chosen],
        })
        if config.max_queries is not None and len(rows) >= config.max_queries:
            break
    if not rows:
        raise DataFormatError("no training examples: no judged query has a positive with text and negatives")
    return add_duplicate_and_clusters(rows, config)


def add_duplicate_and_clusters(rows: list[dict[str, Any]], config: ExamplesConfig) -> list[dict[str, Any]]:
    """The Set-Encoder's data steps, each when ``config`` asks for it: ``add_duplicate`` appends a
    copy of one passage (seeded) and its ``duplicate_targets``; ``novelty_clusters`` adds each
    row's word-Jaccard ``clusters`` (NA-RankNet). Rows are changed in place and returned."""
    rng = random.Random(config.seed + 1)
    for row in rows:
        if config.add_duplicate:
            row["texts"], row["duplicate_targets"], x = add_duplicate(row["texts"], rng)
            row["docids"] = row["docids"] + [row["docids"][x]]
            row["targets"] = row["targets"] + [row["targets"][x]]
        if config.novelty_clusters:
            row["clusters"] = novelty_clusters(row["texts"])
    return rows


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
    if config.label_kind == "listwise_soft":
        for window in store.window_soft_labels(config.teacher, config.template):
            pairs = list(zip(window["docids"], window["logprobs"], strict=True))
            if window["qid"] not in queries or not all(d in corpus for d, _ in pairs):
                continue
            if len(pairs) > k:  # the window's head: where the teacher's distribution has its mass
                keep = set(sorted(range(len(pairs)), key=lambda i: -pairs[i][1])[:k])
                pairs = [p for i, p in enumerate(pairs) if i in keep]
            if len(pairs) >= 2:
                rows.append(_row(queries[window["qid"]], [d for d, _ in pairs], [v for _, v in pairs], corpus))
    elif config.label_kind == "listwise":
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
                          "(listwise, listwise_soft, pointwise, pairwise)", "data.label_kind")
    if not rows:
        raise DataFormatError(
            f"no {config.label_kind} labels of teacher '{config.teacher}' for these queries", config.label_store
        )
    rng = random.Random(config.seed)
    rng.shuffle(rows)
    if config.max_queries is not None:
        rows = rows[: config.max_queries]
    return add_duplicate_and_clusters(rows, config)


def check_single_template(store, kind: str, teacher: str, template: str | None) -> None:
    """Labels of one teacher from two templates (or two versions of one template) describe the
    same documents twice with different targets; without ``data.template`` they would be mixed
    into duplicated, conflicting examples. Refuse, naming the templates found."""
    from rankdistill.teachers.store import KINDS

    kind = "listwise" if kind == "listwise_soft" else kind
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


def pair_rows(rows: list[dict[str, Any]], lower_is_better: bool = False,
              max_pairs: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """duoBERT training pairs from list rows (Pradeep et al. 2021, §duoBERT): every ordered pair
    ``(i, j)`` of a list whose targets differ, both orders, with target 1 when ``d_i`` is the
    better one (``P(d_i ≻ d_j)``), else 0; ties are left out. ``texts`` become ``[a, b]`` pairs.
    ``lower_is_better``: targets are teacher ranks (1 = best) rather than grades or scores.
    ``max_pairs``: a seeded sample of at most this many pairs per query (both orders of a pair
    are kept together).

    Example: targets ``[1, 0, 0]`` give pairs (0,1), (1,0), (0,2), (2,0) with targets 1, 0, 1, 0.
    """
    rng = random.Random(seed)
    out = []
    for row in rows:
        targets = [float(t) for t in row["targets"]]
        unordered = [(i, j) for i in range(len(targets)) for j in range(i + 1, len(targets)) if targets[i] != targets[j]]
        if max_pairs is not None and 2 * len(unordered) > max_pairs:
            unordered = sorted(rng.sample(unordered, max(1, max_pairs // 2)))
        if not unordered:
            continue
        texts, docids, labels = [], [], []
        for i, j in unordered:
            i_better = (targets[i] < targets[j]) if lower_is_better else (targets[i] > targets[j])
            for a, b, label in ((i, j, i_better), (j, i, not i_better)):
                texts.append([row["texts"][a], row["texts"][b]])
                docids.append(f"{row['docids'][a]}>{row['docids'][b]}")
                labels.append(1.0 if label else 0.0)
        out.append({"qid": row["qid"], "query": row["query"], "docids": docids, "texts": texts, "targets": labels})
    if not out:
        raise DataFormatError("no training pairs: no query has two passages with different targets")
    return out


def build_examples(config: ExamplesConfig) -> list[dict[str, Any]]:
    """The example rows of ``config``: qrels + hard negatives (from a run, or BM25 on the fly), or
    teacher labels from the label store."""
    from rankdistill.data.datasets import resolve, resolve_run_path
    from rankdistill.data.trec import read_trec_run

    _, folder = resolve(config.dataset, "data.dataset")
    queries = folder.queries(config.split)
    corpus = folder.corpus()
    if config.holdout_queries:
        from rankdistill.data.splits import carve

        split_qrels = folder.qrels(config.split)
        held = set(carve((q for q in queries if q in split_qrels), config.holdout_queries, config.holdout_seed))
        queries = {q: v for q, v in queries.items() if q not in held}
    if config.source == "qrels":
        qrels = folder.qrels(config.split)
        if config.negatives_run:
            negatives = read_trec_run(resolve_run_path(config.negatives_run, folder, "data.negatives_run"))
        else:
            from rankdistill.retrieval.bm25 import BM25Index

            negatives = BM25Index().index(corpus.values(), show_progress=False).search(
                list(queries.values()), config.negatives_depth)
        return examples_from_qrels(queries, corpus, qrels, negatives, config)
    if config.source == "labels":
        return examples_from_labels(queries, corpus, config)
    raise ConfigError(f"unknown example source '{config.source}' (qrels, labels)", "data.source")


def training_rows(config: ExamplesConfig, architecture: str, loss_name: str) -> list[dict[str, Any]]:
    """The examples of ``config``; for a duo student, their ordered pairs (:func:`pair_rows`),
    trained with BCE on ``P(a ≻ b)``."""
    if architecture != "duo":
        return build_examples(config)
    if loss_name != "bce":
        raise ConfigError(f"a duo student trains on pair labels with 'bce', not '{loss_name}'", "loss.name")
    rows = build_examples(config)
    ranks = config.source == "labels" and config.label_kind == "listwise"
    return pair_rows(rows, lower_is_better=ranks, max_pairs=config.max_pairs_per_query, seed=config.seed)
