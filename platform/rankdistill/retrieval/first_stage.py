"""The first stage of every job: BM25 (sharded over Ray Data actors, or in process) or a given
run file, over any set of queries of one corpus (:class:`FirstStage`). ``jobs/evaluate.py`` and
``jobs/label.py`` retrieve a dataset split with it (:func:`first_stage`), ``jobs/pairdistill.py``
its training candidates and the first-stage row of its table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from rankdistill.config import check_choice, check_range
from rankdistill.data.datasets import LoadedDataset, resolve_run_path
from rankdistill.data.records import Document, Query, Run
from rankdistill.data.trec import read_trec_run
from rankdistill.errors import ConfigError
from rankdistill.retrieval.bm25 import BM25Config, BM25Index

if TYPE_CHECKING:  # pragma: no cover
    from rankdistill.data.beir import BeirFolder

METHODS = ("bm25", "run")


@dataclass
class FirstStageConfig:
    """``method: bm25`` retrieves on Ray; ``method: run`` reads ``run`` (a TREC file path, or the
    name of a file in the dataset's ``runs/`` folder). ``k``: documents per query."""

    METHODS: ClassVar[tuple[str, ...]] = METHODS  # a job's config extending this one may add its own

    method: str = "bm25"
    run: str | None = None
    k: int = 1000
    bm25: BM25Config = field(default_factory=BM25Config)
    num_shards: int = 2  # Ray Data actors searching in parallel

    def __post_init__(self) -> None:
        check_choice("method", self.method, self.METHODS)
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


class FirstStage:
    """One first stage over one corpus, for any set of queries: BM25 (the index built once, on
    first use; searched on Ray Data actors, ``num_shards`` of them, or in process) or a run file
    (read once; each query's top ``k``). ``corpus``: the documents when the job holds them already
    (else read from ``folder``); ``key``: where the config sits in the job's config (``retrieval``,
    ``candidates``), for error messages."""

    def __init__(self, config: FirstStageConfig, folder: BeirFolder, corpus: Mapping[str, Document] | None = None,
                 use_ray: bool = True, key: str = "retrieval", show_progress: bool = True):
        if config.method not in METHODS:
            raise ConfigError(f"unknown first-stage method '{config.method}' ({', '.join(METHODS)})", f"{key}.method")
        if config.method == "run" and not config.run:
            raise ConfigError(f"method 'run' needs {key}.run (a TREC run file)", f"{key}.run")
        self.config, self.folder, self.corpus = config, folder, corpus
        self.use_ray, self.key, self.show_progress = use_ray, key, show_progress
        self._index: BM25Index | None = None
        self._run: Run | None = None

    @property
    def name(self) -> str:
        """``BM25`` or ``run <file>`` (a table row's name)."""
        return "BM25" if self.config.method == "bm25" else f"run {self.config.run}"

    def search(self, queries: Mapping[str, Query], k: int | None = None) -> Run:
        """The top ``k`` (default ``config.k``) documents of every query in ``queries``."""
        k = self.config.k if k is None else k
        if self.config.method == "run":
            return Run({q: d for q, d in self._read_run().top(k).items() if q in queries})
        index = self._bm25_index()
        listed = list(queries.values())
        if self.use_ray:
            return bm25_search_on_ray(index, listed, k, self.config.num_shards)
        return index.search(listed, k)

    def search_many(self, requests: Sequence[tuple[Mapping[str, Query], int]]) -> list[Run]:
        """Several ``(queries, k)`` searches in one pass (one Ray Data actor pool, not one per
        request): the union of the queries at the largest ``k``, each request's run then cut to its
        own ``k``. Requests whose query ids clash (one id, two texts) are searched one by one."""
        union: dict[str, Query] = {}
        for queries, _ in requests:
            for qid, query in queries.items():
                if union.setdefault(qid, query).text != query.text:
                    return [self.search(q, k) for q, k in requests]
        if not union:
            return [Run() for _ in requests]
        run = self.search(union, max(k for _, k in requests))
        return [Run({qid: dict(run.ranked(qid)[:k]) for qid in queries if qid in run}) for queries, k in requests]

    def run_path(self):
        """The run file ``method: run`` reads (a :class:`ConfigError` naming ``<key>.run`` when absent)."""
        return resolve_run_path(self.config.run, self.folder, f"{self.key}.run")

    def read_run(self) -> Run:
        """The whole run file ``method: run`` reads (read once)."""
        return self._read_run()

    def _read_run(self) -> Run:
        if self._run is None:
            self._run = read_trec_run(self.run_path())
        return self._run

    def _bm25_index(self) -> BM25Index:
        if self._index is None:
            documents: Iterable[Document] = (self.corpus.values() if self.corpus is not None
                                             else self.folder.iter_corpus())
            self._index = BM25Index(self.config.bm25).index(documents, show_progress=self.show_progress)
        return self._index


def first_stage(config: FirstStageConfig, data: LoadedDataset, use_ray: bool = True, key: str = "retrieval") -> Run:
    """The first-stage run over ``data``'s queries (``config.k`` documents each). ``key``: where
    ``config`` sits in the job's config (``retrieval``, ``candidates``), for error messages."""
    return FirstStage(config, data.folder, use_ray=use_ray, key=key).search(data.queries)
