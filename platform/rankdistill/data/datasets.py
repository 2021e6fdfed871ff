"""The dataset registry and loading (every job's data layer): names → BEIR folders with their
evaluation conventions, a split's queries and qrels, and run files named in configs.

All are the real collections of ``../shared/data``, read in place (found through
``$RANKDISTILL_DATA`` or the ``shared/data`` folder beside the repository); a fresh clone does not
have them, and :func:`resolve` then says so (tests skip on :class:`DatasetUnavailable`).
``demo`` is a small fixed slice of SciFact (:class:`~rankdistill.data.beir.SubsetFolder`: 32 train
and 16 test queries, their judged documents plus 300 more) for quickstarts and fast tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rankdistill.data.beir import BeirFolder, SubsetFolder
from rankdistill.data.records import Qrels, Query
from rankdistill.errors import ConfigError, RankdistillError

REPO_ROOT = Path(__file__).resolve().parents[3]


class DatasetUnavailable(RankdistillError, FileNotFoundError):
    """A registered dataset whose files are not on this machine."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and evaluate a collection."""

    name: str
    folder: str
    subset: bool = False  # a SubsetFolder slice of the folder (the demo)
    test_split: str = "test"
    train_split: str | None = "train"
    relevance_threshold: int = 1
    runs: tuple[str, ...] = ()
    description: str = ""


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("demo", "scifact", subset=True,
                    description="a small slice of BEIR SciFact (32 train / 16 test queries), read in place"),
        DatasetSpec("scifact", "scifact", runs=("bm25.test.trec", "bm25.train.trec"),
                    description="BEIR SciFact"),
        DatasetSpec("nfcorpus", "nfcorpus", runs=("bm25.test.trec", "bm25.dev.trec", "bm25.train.trec"),
                    description="BEIR NFCorpus"),
        DatasetSpec("cranfield", "cranfield", train_split=None, runs=("bm25.test.trec",),
                    description="Cranfield 1400"),
        DatasetSpec("trec-dl-2019-passage", "trec-dl-2019-passage", train_split=None, relevance_threshold=2,
                    runs=("bm25.trec", "bm25.rankvicuna-7b.trec", "bm25-rm3.trec", "tasb.trec",
                          "splade-pp-ed.trec", "openai-ada2.trec"),
                    description="TREC DL 2019 passage (43 judged queries, top-100 candidates)"),
    )
}


def shared_data_roots() -> list[Path]:
    roots = []
    if os.environ.get("RANKDISTILL_DATA"):
        roots.append(Path(os.environ["RANKDISTILL_DATA"]))
    roots.append(REPO_ROOT.parent / "shared" / "data")
    return roots


def spec(name: str) -> DatasetSpec:
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset '{name}' (known: {', '.join(REGISTRY)})", "dataset.name")
    return REGISTRY[name]


def resolve(name_or_path: str) -> tuple[DatasetSpec, BeirFolder]:
    """A registered name, or a path to any BEIR folder (evaluated with default conventions)."""
    if name_or_path not in REGISTRY and Path(name_or_path).is_dir():
        path = Path(name_or_path)
        return DatasetSpec(path.name, str(path)), BeirFolder(path)
    s = spec(name_or_path)
    for root in shared_data_roots():
        if (root / s.folder / "queries.jsonl").exists():
            return s, (SubsetFolder if s.subset else BeirFolder)(root / s.folder)
    tried = ", ".join(str(r) for r in shared_data_roots())
    raise DatasetUnavailable(
        f"dataset '{name_or_path}' is not on this machine (looked in {tried}); "
        "set RANKDISTILL_DATA to the folder holding it"
    )


@dataclass
class DatasetConfig:
    """Which collection and split. ``name``: a registry name (demo, scifact, nfcorpus, cranfield,
    trec-dl-2019-passage) or a path to any BEIR folder."""

    name: str = "demo"
    split: str = "test"
    max_queries: int | None = None  # evaluate on the first N judged queries (by id) only


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    folder: BeirFolder
    queries: dict[str, Query]
    qrels: Qrels


def load_dataset(config: DatasetConfig) -> LoadedDataset:
    """The split's queries and qrels (the first ``max_queries`` judged queries by id, if set)."""
    spec, folder = resolve(config.name)
    qrels = folder.qrels(config.split)
    queries = folder.queries(config.split)
    if config.max_queries is not None:
        keep = sorted(queries)[: config.max_queries]
        queries = {q: queries[q] for q in keep}
        qrels = qrels.restricted_to(keep)
    return LoadedDataset(spec, folder, queries, qrels)


def resolve_run_path(run: str, folder: BeirFolder, key: str) -> Path:
    """A run file named in a config: a path, or the name of a file in the dataset's ``runs/``
    folder. ``key`` is the config field that named it (the error names it)."""
    path = Path(run)
    if path.exists():
        return path
    candidate = folder.root / "runs" / run
    if candidate.exists():
        return candidate
    raise ConfigError(f"run file '{run}' not found (nor in {folder.root / 'runs'})", key)
