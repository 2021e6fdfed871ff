"""The dataset registry and loading (every job's data layer): names → BEIR folders with their
evaluation conventions, a split's queries and qrels, and run files named in configs.

All are the real collections of ``../shared/data``, read in place (found through
``$RANKDISTILL_DATA`` or the ``shared/data`` folder beside the repository); a fresh clone does not
have them, and :func:`resolve` then says so (tests skip on :class:`DatasetUnavailable`).
``demo`` is a small fixed slice of SciFact (:class:`~rankdistill.data.beir.SubsetFolder`: 32 train
and 16 test queries, their judged documents plus 300 more) for quickstarts and fast tests.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rankdistill.config import check_range
from rankdistill.data.beir import BeirFolder, SubsetFolder, check_qrels_against_corpus
from rankdistill.data.records import Qrels, Query
from rankdistill.errors import ConfigError, DataFormatError, RankdistillError

logger = logging.getLogger(__name__)
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
    # the qrels judge documents that are not in the shipped corpus (TREC DL: the full official
    # qrels over a top-100 candidate corpus); they still count in the ideal DCG
    partial_corpus: bool = False
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
                    partial_corpus=True,
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


def _looks_like_path(name: str) -> bool:
    return any(sep in name for sep in ("/", os.sep)) or name.startswith((".", "~"))


def spec(name: str, key: str = "dataset.name") -> DatasetSpec:
    if name not in REGISTRY:
        if _looks_like_path(name):
            raise ConfigError(f"dataset folder '{name}' does not exist", key)
        raise ConfigError(f"unknown dataset '{name}' (known: {', '.join(REGISTRY)}; or give the path of a "
                          "BEIR folder)", key)
    return REGISTRY[name]


def resolve(name_or_path: str, key: str = "dataset.name") -> tuple[DatasetSpec, BeirFolder]:
    """A registered name, or a path to any BEIR folder (evaluated with default conventions).
    ``key``: the config field that named it (errors name it)."""
    if name_or_path not in REGISTRY and Path(name_or_path).expanduser().is_dir():
        path = Path(name_or_path).expanduser()
        return DatasetSpec(path.name, str(path)), BeirFolder(path)
    s = spec(name_or_path, key)
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

    def __post_init__(self) -> None:
        check_range("max_queries", self.max_queries, minimum=1)


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    folder: BeirFolder
    queries: dict[str, Query]
    qrels: Qrels


def load_dataset(config: DatasetConfig, name_key: str = "dataset.name") -> LoadedDataset:
    """The split's queries and qrels (the first ``max_queries`` judged queries by id, if set).

    Judgements of documents missing from the corpus (see :func:`check_judged_documents`) are an
    error, except on a collection registered with ``partial_corpus`` (TREC DL), where they are
    expected and counted in a warning. ``name_key``: the config field naming the dataset."""
    spec, folder = resolve(config.name, name_key)
    qrels = folder.qrels(config.split)
    check_judged_documents(spec, folder, qrels, config.split)
    queries = folder.queries(config.split)
    check_judged_queries(folder, qrels, queries, config.split)
    if config.max_queries is not None:
        keep = sorted(queries)[: config.max_queries]
        queries = {q: queries[q] for q in keep}
        qrels = qrels.restricted_to(keep)
    return LoadedDataset(spec, folder, queries, qrels)


def check_judged_documents(spec: DatasetSpec, folder: BeirFolder, qrels: Qrels, split: str) -> int:
    """The documented rule for qrels that judge documents absent from the corpus.

    Such judgements still enter the ideal DCG and the recall base, so a corpus that lost
    documents (or qrels of another collection) silently lowers nDCG, AP and recall. On a complete
    collection (every BEIR folder) that is an error naming the first such qrel line; on a
    collection registered with ``partial_corpus`` (TREC DL: official qrels over a candidate
    corpus, the published way to evaluate it) it is a warning with the counts. Returns the
    number of such judgements."""
    known = {doc.docid for doc in folder.iter_corpus()}
    missing = [(q, d) for q, docs in qrels.items() for d in docs if d not in known]
    if not missing:
        return 0
    if not spec.partial_corpus:
        check_qrels_against_corpus(qrels, known, folder.qrels_path(split))  # raises, naming the line
    relevant = sum(1 for q, d in missing if qrels[q][d] > 0)
    logger.warning(
        "%s: %d of %d judgements (%d relevant) name documents outside the corpus; as documented for "
        "'%s' they count in the ideal DCG and recall base but cannot be retrieved",
        folder.qrels_path(split), len(missing), qrels.num_judgements(), relevant, spec.name,
    )
    return len(missing)


def check_judged_queries(folder: BeirFolder, qrels: Qrels, queries: dict[str, Query], split: str) -> None:
    """A judged query without text in ``queries.jsonl`` can never be answered, yet it counts (as 0)
    in every mean: an error naming the first such qrel line."""
    missing = [q for q in qrels if q not in queries]
    if not missing:
        return
    path = folder.qrels_path(split)
    from rankdistill.data.textio import iter_lines

    for line, text in iter_lines(path):
        if text.split("\t")[0] in missing:
            raise DataFormatError(f"qrels judge query '{text.split(chr(9))[0]}', which is not in {folder.queries_path} "
                                  f"({len(missing)} such queries)", path, line)
    raise DataFormatError(f"{len(missing)} judged queries are not in {folder.queries_path}", path)


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
