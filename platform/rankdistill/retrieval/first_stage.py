"""First stages on Ray: BM25 sharded over Ray Data actors, or a given run file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rankdistill.config import check_choice, check_range
from rankdistill.data.datasets import LoadedDataset, resolve_run_path
from rankdistill.data.records import Query, Run
from rankdistill.data.trec import read_trec_run
from rankdistill.errors import ConfigError
from rankdistill.retrieval.bm25 import BM25Config, BM25Index


@dataclass
class FirstStageConfig:
    """``method: bm25`` retrieves on Ray; ``method: run`` reads ``run`` (a TREC file path, or the
    name of a file in the dataset's ``runs/`` folder)."""

    method: str = "bm25"
    run: str | None = None
    k: int = 1000
    bm25: BM25Config = field(default_factory=BM25Config)
    num_shards: int = 2  # Ray Data actors searching in parallel

    def __post_init__(self) -> None:
        check_choice("method", self.method, ("bm25", "run"))
        check_range("k", self.k, minimum=1)
        check_range("num_shards", self.num_shards, minimum=1)


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


def first_stage(config: FirstStageConfig, data: LoadedDataset, use_ray: bool = True, key: str = "retrieval") -> Run:
    """The first-stage run over ``data``'s queries (``config.k`` documents each). ``key``: where
    ``config`` sits in the job's config (``retrieval``, ``candidates``), for error messages."""
    if config.method == "run":
        if not config.run:
            raise ConfigError(f"method 'run' needs {key}.run (a TREC run file)", f"{key}.run")
        run = read_trec_run(resolve_run_path(config.run, data.folder, f"{key}.run"))
        return Run({q: d for q, d in run.top(config.k).items() if q in data.queries})
    if config.method == "bm25":
        index = BM25Index(config.bm25).index(data.folder.iter_corpus())
        queries = list(data.queries.values())
        if use_ray:
            return bm25_search_on_ray(index, queries, config.k, config.num_shards)
        return index.search(queries, config.k)
    raise ConfigError(f"unknown first-stage method '{config.method}' (bm25, run)", f"{key}.method")
