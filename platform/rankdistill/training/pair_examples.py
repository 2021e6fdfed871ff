"""PairDistill training examples from the label store: pointwise ``[B, k]`` targets and pairwise
``[B, k, k]`` targets (../shared/papers/pairdistill.md §4.2).

One example per query (a row; Arrow schema :data:`EXAMPLE_SCHEMA`)::

    qid, query            the query
    docids, texts         its k = ``passages_per_query`` passages, chosen as the official
                          ``conv_pair`` does: first the passages of the labelled pairs (pair by
                          pair, the pairs nearest the top of the pointwise order first, while both
                          passages fit), then filled in pointwise order (then a listwise teacher's
                          ranking); with qrels, a positive is added when none is listed (in place
                          of the lowest filled passage, not of a pair's). Listed in the pointwise
                          teacher's order (score descending), passages without a score after
    targets   [k]         pointwise teacher score s_point, the KD target; NaN = none. By default
                          (``kd_target: logit``) the teacher's raw score ``logprob_yes − logprob_no``:
                          a reranker teacher's logit s, a yes/no LLM's log-odds of "yes".
                          ``kd_target: log_p_yes`` keeps the store's ``score`` = log P(yes | {yes, no})
                          (for a reranker teacher log σ(s), whose softmax ∝ σ(s) is nearly flat)
    labels    [k]         qrels grade (0 = not judged relevant), for L_CL's positive
    pair_i, pair_j, pair_p  the labelled pairs as positions in the list (i < j) and
                          P(d_i ≻ d_j); collated into ``pair_targets [B, k, k]`` (NaN elsewhere)
                          and ``pair_mask`` by :func:`rankdistill.training.loop.collate`

Where the pair probabilities come from:

- **pairwise** labels: the store's ``p_a_wins`` = P(a ≻ b), both prompt orders already combined by
  the labelling job. If a pair is stored in both directions (a, b) and (b, a), the two are
  averaged as ``(P(a ≻ b) + 1 - P(b ≻ a)) / 2``.
- **listwise** labels (a teacher permutation, the ranking after the query's last window): every
  pair of listed passages whose teacher ranks differ by less than ``listwise_delta`` (None = all
  pairs) gets ``P(better ≻ worse) = 1``. With these hard targets L_pair reduces to RankNet's
  ``-log σ(s_better - s_worse)`` per pair. A passage the permutation did not place gets no pair.
  Listwise labels give no pointwise scores (``targets`` NaN, so L_KD skips them) unless a
  pointwise teacher is also given.

Two ways to build them, one code path (:func:`build_pair_example` after one store read per set
of queries): :func:`pair_example_dataset` builds them in Ray Data tasks, each reading its
queries' labels from the store's Parquet files (nothing per example is held by the driver), and
:func:`pair_examples_from_store` does the same in the driver process (small data, tests).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rankdistill.data.records import Document, Query
from rankdistill.errors import ConfigError, DataFormatError

EXAMPLE_SCHEMA = pa.schema([
    ("qid", pa.string()), ("query", pa.string()),
    ("docids", pa.list_(pa.string())), ("texts", pa.list_(pa.string())),
    ("targets", pa.list_(pa.float64())), ("labels", pa.list_(pa.int64())),
    ("pair_i", pa.list_(pa.int64())), ("pair_j", pa.list_(pa.int64())), ("pair_p", pa.list_(pa.float64())),
])
#: ``logit``: logprob_yes − logprob_no (the raw teacher score); ``log_p_yes``: the store's ``score``
KD_TARGETS = ("logit", "log_p_yes")
#: what ``fit(..., extra_fields=...)`` needs for these rows with :class:`~rankdistill.losses.PairDistillLoss`
EXTRA_FIELDS = ("labels", "pair_targets")


@dataclass
class PairExamplesConfig:
    """Which labels make the examples.

    Args:
        label_store: the store's root folder.
        pointwise_teacher / pointwise_template: teacher id and template (id or hash) of the
            pointwise labels (targets and list order); None = no pointwise labels.
        pairwise_teacher / pairwise_template: of the pairwise labels; None = none.
        listwise_teacher / listwise_template: permutations turned into pairs; None = none.
        passages_per_query: k (paper Table 7: 64).
        listwise_delta: pairs from a permutation only when |rank_i - rank_j| < δ (None = all).
        min_grade: qrels grade of a positive.
        add_positive: with qrels, add a (seeded) positive to a list that has none, in the last
            slot when the list is full.
        seed: for that choice.
        kd_target: ``logit`` (the teacher's raw score, ``logprob_yes − logprob_no``; ColBERTv2 and
            the official PairDistill code distil from the raw teacher score) or ``log_p_yes``
            (the store's ``score``, log P(yes | {yes, no}); softmax(log σ(s)) ∝ σ(s) flattens the
            KD distribution: entropy ≈ 3.4 of 4.2 nats at k = 64 for MiniLM-like logits).
    """

    label_store: str
    pointwise_teacher: str | None = None
    pointwise_template: str | None = None
    pairwise_teacher: str | None = None
    pairwise_template: str | None = None
    listwise_teacher: str | None = None
    listwise_template: str | None = None
    passages_per_query: int = 64
    listwise_delta: int | None = None
    min_grade: int = 1
    add_positive: bool = True
    seed: int = 42
    kd_target: str = "logit"

    def __post_init__(self) -> None:
        if self.kd_target not in KD_TARGETS:
            raise ConfigError(f"unknown KD target '{self.kd_target}' (known: {', '.join(KD_TARGETS)})",
                              "examples.kd_target")
        if not (self.pointwise_teacher or self.pairwise_teacher or self.listwise_teacher):
            raise ConfigError("name at least one of pointwise_teacher, pairwise_teacher, listwise_teacher",
                              "data.pairwise_teacher")
        if self.passages_per_query < 2:
            raise ConfigError("passages_per_query must be >= 2", "data.passages_per_query")
        if self.listwise_delta is not None and self.listwise_delta < 2:
            raise ConfigError("listwise_delta must be >= 2 (|i - j| < δ) or null", "data.listwise_delta")

    def sources(self) -> list[tuple[str, str, str | None]]:
        """``[(kind, teacher, template)]`` of the label kinds used."""
        out = []
        for kind in ("pointwise", "pairwise", "listwise"):
            teacher = getattr(self, f"{kind}_teacher")
            if teacher:
                out.append((kind, teacher, getattr(self, f"{kind}_template")))
        return out


def build_pair_example(
    qid: str,
    query: str,
    texts: Mapping[str, str],
    config: PairExamplesConfig,
    pointwise: Sequence[tuple[str, float]] = (),
    pairwise: Sequence[tuple[str, str, float]] = (),
    ranking: Sequence[str] | None = None,
    judged: Mapping[str, int] | None = None,
) -> dict[str, Any] | None:
    """One query's example (see the module docstring), or None when fewer than 2 passages.

    Args:
        texts: ``docid -> passage text``; passages without text are left out.
        pointwise: ``(docid, teacher score)``.
        pairwise: ``(docid_a, docid_b, P(a ≻ b))``.
        ranking: a listwise teacher's permutation (best first).
        judged: the query's qrels ``docid -> grade`` (None: labels all 0).
    """
    k = config.passages_per_query
    scores = {d: float(s) for d, s in pointwise if d in texts}
    ranked = sorted(scores, key=lambda d: (-scores[d], d))
    docids = _choose_passages(ranked, pairwise, ranking, texts, k)
    judged = judged or {}
    if config.add_positive and judged and not any(judged.get(d, 0) >= config.min_grade for d in docids):
        relevant = sorted(d for d, g in judged.items() if g >= config.min_grade and d in texts)
        if relevant:
            positive = random.Random(f"{config.seed}:{qid}").choice(relevant)
            if len(docids) >= k:
                docids = _drop_one(docids, pairwise)
            docids = docids + [positive]
    if len(docids) < 2:
        return None
    place = {d: n for n, d in enumerate(docids)}
    docids = sorted(docids, key=lambda d: (0, -scores[d], d) if d in scores else (1, place[d], d))
    position = {d: i for i, d in enumerate(docids)}
    collected: dict[tuple[int, int], list[float]] = {}
    for a, b, p in pairwise:
        if a in position and b in position and a != b:
            i, j = position[a], position[b]
            value = min(max(float(p), 0.0), 1.0)
            key, prob = ((i, j), value) if i < j else ((j, i), 1.0 - value)
            collected.setdefault(key, []).append(prob)
    if ranking:
        teacher_rank = {d: r for r, d in enumerate(ranking)}
        placed = [d for d in docids if d in teacher_rank]
        for x, a in enumerate(placed):
            for b in placed[x + 1 :]:
                if config.listwise_delta is not None and abs(teacher_rank[a] - teacher_rank[b]) >= config.listwise_delta:
                    continue
                i, j = sorted((position[a], position[b]))
                better = a if teacher_rank[a] < teacher_rank[b] else b
                collected.setdefault((i, j), []).append(1.0 if position[better] == i else 0.0)
    pairs = sorted(collected)
    return {
        "qid": qid,
        "query": query,
        "docids": docids,
        "texts": [texts[d] for d in docids],
        "targets": [scores.get(d, float("nan")) for d in docids],
        "labels": [int(judged.get(d, 0)) for d in docids],
        "pair_i": [i for i, _ in pairs],
        "pair_j": [j for _, j in pairs],
        "pair_p": [sum(collected[p]) / len(collected[p]) for p in pairs],
    }


def _choose_passages(ranked: Sequence[str], pairwise: Sequence[tuple[str, str, float]],
                     ranking: Sequence[str] | None, texts: Mapping[str, str], k: int) -> list[str]:
    """At most ``k`` docids: every labelled pair's two passages while both fit (pairs whose better
    pointwise rank is higher first, as the pairs were sampled from the top of that order), then
    ``ranked`` (the pointwise order), then the listwise ``ranking``."""
    position = {d: n for n, d in enumerate(ranked)}
    far = len(ranked)

    def key(pair: tuple[str, str, float]) -> tuple[int, int]:
        a, b = position.get(pair[0], far), position.get(pair[1], far)
        return min(a, b), max(a, b)

    chosen: list[str] = []
    listed: set[str] = set()
    for a, b, _ in sorted(pairwise, key=key):
        if a == b or a not in texts or b not in texts:
            continue
        new = [d for d in dict.fromkeys((a, b)) if d not in listed]
        if len(chosen) + len(new) <= k:
            chosen.extend(new)
            listed.update(new)
    for d in [*ranked, *(ranking or ())]:
        if len(chosen) >= k:
            break
        if d not in listed and d in texts:
            chosen.append(d)
            listed.add(d)
    return chosen


def _drop_one(docids: list[str], pairwise: Sequence[tuple[str, str, float]]) -> list[str]:
    """``docids`` less one passage, to make room for a positive: the last one that is in no pair
    (the lowest filled passage), else the last one (its pairs are then left out)."""
    in_pairs = {d for a, b, _ in pairwise for d in (a, b)}
    for n in range(len(docids) - 1, -1, -1):
        if docids[n] not in in_pairs:
            return docids[:n] + docids[n + 1 :]
    return docids[:-1]


# --------------------------------------------------------------------------------------------
# reading the store for a set of queries (one code path for the driver and the Ray tasks)
# --------------------------------------------------------------------------------------------


def _read_labels(config: PairExamplesConfig, qids: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``qid -> {"pointwise": [...], "pairwise": [...], "ranking": [...]}`` from the store, only for
    ``qids`` (None = all; Parquet predicate push-down), duplicates resolved as the store does
    (the earliest written label of a key wins; a permutation is the last window of the last pass)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from rankdistill.teachers.store import KEY_COLUMNS, SCHEMAS, LabelStore

    store = LabelStore(config.label_store)
    out: dict[str, dict[str, Any]] = {}
    for kind, teacher, template in config.sources():
        files = store.fs_paths(kind)
        if not files:
            continue
        expr = pc.field("teacher") == teacher
        if template is not None:
            expr = expr & ((pc.field("template_hash") == template) | (pc.field("template_id") == template))
        if qids is not None:
            expr = expr & pc.field("qid").isin(list(qids))
        # files are listed oldest first and a dataset keeps file order, so "first seen" = earliest
        dataset = pads.dataset(files, schema=SCHEMAS[kind], format="parquet", filesystem=store.filesystem)
        table = dataset.to_table(filter=expr)
        seen: set[tuple] = set()
        columns = {name: table[name].to_pylist() for name in table.column_names}
        for n in range(table.num_rows):
            key = tuple(columns[c][n] for c in KEY_COLUMNS[kind])
            if key in seen:
                continue
            seen.add(key)
            entry = out.setdefault(str(columns["qid"][n]), {})
            if kind == "pointwise":
                entry.setdefault("pointwise", []).append(
                    (str(columns["docid"][n]), kd_target(config.kd_target, columns["score"][n],
                                                         columns["logprob_yes"][n], columns["logprob_no"][n])))
            elif kind == "pairwise":
                entry.setdefault("pairwise", []).append(
                    (str(columns["docid_a"][n]), str(columns["docid_b"][n]), float(columns["p_a_wins"][n])))
            else:
                order = (int(columns["pass_index"][n]), int(columns["window_index"][n]))
                if "ranking" not in entry or order >= entry["_order"]:
                    entry["ranking"], entry["_order"] = [str(d) for d in columns["ranking_after"][n]], order
    for entry in out.values():
        entry.pop("_order", None)
    return out


def kd_target(kind: str, score: float, logprob_yes: float | None, logprob_no: float | None) -> float:
    """The KD target of one stored pointwise label: ``logprob_yes − logprob_no`` (``logit``; from
    ``score`` = log p as ``log p − log(1 − p)``, p clipped to 1 − 1e-12, when the raw
    log-probabilities are missing) or the stored ``score`` (``log_p_yes``)."""
    if kind == "log_p_yes":
        return float(score)
    if logprob_yes is not None and logprob_no is not None:
        yes, no = float(logprob_yes), float(logprob_no)
        if math.isfinite(yes) and math.isfinite(no):
            return yes - no
    p = min(math.exp(float(score)), 1.0 - 1e-12)
    return math.log(p) - math.log1p(-p)


def _examples_for(qids: Sequence[str] | None, config: PairExamplesConfig, query_texts: Mapping[str, str],
                  texts: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    labels = _read_labels(config, qids)
    order = list(qids) if qids is not None else sorted(labels)
    rows = []
    for qid in order:
        if qid not in labels or qid not in query_texts:
            continue
        row = build_pair_example(qid, query_texts[qid], texts, config, judged=qrels.get(qid), **labels[qid])
        if row is not None:
            rows.append(row)
    return rows


def _texts(corpus: Mapping[str, Document] | Mapping[str, str]) -> dict[str, str]:
    return {d: (doc if isinstance(doc, str) else doc.contents) for d, doc in corpus.items()}


def pair_examples_from_store(
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    config: PairExamplesConfig,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """All queries' examples in the driver process, sorted by qid (small data, tests); the same
    rows :func:`pair_example_dataset` builds in Ray tasks."""
    rows = _examples_for(sorted(queries), config, {q: v.text for q, v in queries.items()}, _texts(corpus),
                         qrels or {})
    if not rows:
        raise DataFormatError(f"no labels of {[s[:2] for s in config.sources()]} for these queries",
                              config.label_store)
    return rows


# --------------------------------------------------------------------------------------------
# Ray Data
# --------------------------------------------------------------------------------------------


def _chunk_builder(config: PairExamplesConfig, refs: dict[str, Any]):
    cache: dict[str, Any] = {}

    def build(batch: dict[str, Any]) -> pa.Table:
        import ray

        if not cache:
            cache.update({name: ray.get(ref) for name, ref in refs.items()})
        rows = []
        for chunk in batch["qids"]:
            rows.extend(_examples_for([str(q) for q in chunk], config, cache["queries"], cache["texts"],
                                      cache["qrels"]))
        return pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA)

    return build


def pair_example_dataset(
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    config: PairExamplesConfig,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    shuffle: bool = True,
    queries_per_task: int = 1000,
):
    """A Ray Dataset of examples (:data:`EXAMPLE_SCHEMA`), one row per query that has labels.

    The driver only splits the query ids into chunks of ``queries_per_task`` (in a seeded random
    order when ``shuffle``, else sorted); each Ray task reads its queries' labels from the store's
    Parquet files (predicate push-down on ``qid``) and builds their examples, so no example is
    held by the driver and no all-to-all shuffle runs (Ray Data's hash-shuffle group-by took
    minutes for a handful of rows on a loaded 2-core machine). Queries, texts and qrels reach the
    tasks once through the object store. Feed the dataset to
    :func:`rankdistill.training.fit.fit` with ``extra_fields=EXTRA_FIELDS``.
    """
    import ray
    import ray.data

    qids = sorted(queries)
    if shuffle:
        random.Random(config.seed).shuffle(qids)
    chunks = [{"qids": qids[i : i + queries_per_task]} for i in range(0, len(qids), max(1, queries_per_task))]
    if not chunks:
        raise DataFormatError("no queries to build examples for", config.label_store)
    refs = {
        "queries": ray.put({qid: q.text for qid, q in queries.items()}),
        "texts": ray.put(_texts(corpus)),
        "qrels": ray.put({qid: dict(v) for qid, v in (qrels or {}).items()}),
    }
    return ray.data.from_items(chunks).map_batches(_chunk_builder(config, refs), batch_size=1,
                                                   batch_format="numpy")
