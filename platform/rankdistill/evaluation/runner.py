"""The evaluation runner: get a run (BM25 on Ray, or a given run file), evaluate, report, track."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rankdistill.data.beir import BeirFolder
from rankdistill.data.records import Query, Run
from rankdistill.data.trec import read_trec_run
from rankdistill.errors import ConfigError
from rankdistill.evaluation.datasets import DatasetSpec, resolve
from rankdistill.evaluation.metrics import DEFAULT_MEASURES, EvaluationResult, evaluate
from rankdistill.retrieval.bm25 import BM25Config, BM25Index


@dataclass
class DatasetConfig:
    """Which collection and split. ``name``: a registry name (demo, scifact, nfcorpus, cranfield,
    trec-dl-2019-passage) or a path to any BEIR folder."""

    name: str = "demo"
    split: str = "test"
    max_queries: int | None = None  # evaluate on the first N judged queries (by id) only


@dataclass
class EvaluationConfig:
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    relevance_threshold: int | None = None  # binary measures' threshold; default: the dataset's


@dataclass
class FirstStageConfig:
    """``method: bm25`` retrieves on Ray; ``method: run`` reads ``run`` (a TREC file path, or the
    name of a file in the dataset's ``runs/`` folder)."""

    method: str = "bm25"
    run: str | None = None
    k: int = 1000
    bm25: BM25Config = field(default_factory=BM25Config)
    num_shards: int = 2  # Ray Data actors searching in parallel


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    folder: BeirFolder
    queries: dict[str, Query]
    qrels: dict


def load_dataset(config: DatasetConfig) -> LoadedDataset:
    spec, folder = resolve(config.name)
    qrels = folder.qrels(config.split)
    queries = folder.queries(config.split)
    if config.max_queries is not None:
        keep = sorted(queries)[: config.max_queries]
        queries = {q: queries[q] for q in keep}
        qrels = qrels.restricted_to(keep)
    return LoadedDataset(spec, folder, queries, qrels)


def resolve_run_path(run: str, folder: BeirFolder) -> Path:
    path = Path(run)
    if path.exists():
        return path
    candidate = folder.root / "runs" / run
    if candidate.exists():
        return candidate
    raise ConfigError(f"run file '{run}' not found (nor in {folder.root / 'runs'})", "retrieval.run")


class _BM25Searcher:
    """A Ray Data actor holding one copy of the index (received through the object store)."""

    def __init__(self, index_refs: list, k: int):
        import ray

        self.index: BM25Index = ray.get(index_refs[0])
        self.k = k

    def __call__(self, batch: dict) -> dict:
        queries = [Query(str(q), str(t)) for q, t in zip(batch["qid"], batch["text"], strict=True)]
        run = self.index.search(queries, self.k)
        return {
            "qid": [q.qid for q in queries],
            "docids": [list(run[q.qid]) for q in queries],
            "scores": [list(run[q.qid].values()) for q in queries],
        }


def bm25_search_on_ray(index: BM25Index, queries: Sequence[Query], k: int, num_shards: int) -> Run:
    """Shard the queries over Ray Data actors that each hold the index."""
    import ray
    import ray.data

    ref = ray.put(index)
    rows = [{"qid": q.qid, "text": q.text} for q in queries]
    batch = max(1, -(-len(rows) // max(1, num_shards)))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, num_shards)).map_batches(
        _BM25Searcher,
        fn_constructor_kwargs={"index_refs": [ref], "k": k},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=max(1, num_shards)),
        num_cpus=1 if num_shards > 1 else 0.5,
    )
    run = Run()
    for row in ds.iter_rows():
        run[str(row["qid"])] = {str(d): float(s) for d, s in zip(row["docids"], row["scores"], strict=True)}
    return run


def first_stage(config: FirstStageConfig, data: LoadedDataset, use_ray: bool = True) -> Run:
    if config.method == "run":
        if not config.run:
            raise ConfigError("method 'run' needs retrieval.run (a TREC run file)", "retrieval.run")
        run = read_trec_run(resolve_run_path(config.run, data.folder))
        return Run({q: d for q, d in run.top(config.k).items() if q in data.queries})
    if config.method == "bm25":
        index = BM25Index(config.bm25).index(data.folder.iter_corpus())
        queries = list(data.queries.values())
        if use_ray:
            return bm25_search_on_ray(index, queries, config.k, config.num_shards)
        return index.search(queries, config.k)
    raise ConfigError(f"unknown first-stage method '{config.method}' (bm25, run)", "retrieval.method")


def evaluate_run(run: Run, data: LoadedDataset, config: EvaluationConfig) -> EvaluationResult:
    threshold = config.relevance_threshold or data.spec.relevance_threshold
    return evaluate(run, data.qrels, config.measures, threshold)


def per_query_figure(result: EvaluationResult, measure: str, title: str):
    """A sorted bar chart of one measure per query (logged to MLflow as an artifact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted((v.get(measure, 0.0) for v in result.per_query.values()), reverse=True)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(range(len(values)), values, width=1.0, color="#3b6ea8")
    ax.axhline(result.aggregate.get(measure, 0.0), color="#c0392b", lw=1, label=f"mean {measure}")
    ax.set_xlabel("queries (sorted)")
    ax.set_ylabel(measure)
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
