"""The dataset registry and loading (every job's data layer): names → BEIR folders with their
evaluation conventions, a split's queries and qrels, and run files named in configs.

All are the real collections of ``../shared/data``, read in place (found through
``$RANKDISTILL_DATA`` or the ``shared/data`` folder beside the repository); a fresh clone does not
have them, and :func:`resolve` then says so (tests skip on :class:`DatasetUnavailable`).

A data root (an entry of ``$RANKDISTILL_DATA``) or a dataset path may also be a storage URI
(``s3://bucket/data``; anything ``pyarrow.fs`` opens): the collection's files are then copied once
per node into ``$RANKDISTILL_CACHE/data`` (default ``~/.cache/rankdistill/data``) and read from
there, and copied again when the stored files change (names, sizes or modification times).
``demo`` is a small fixed slice of SciFact (:class:`~rankdistill.data.beir.SubsetFolder`: 32 train
and 16 test queries, their judged documents plus 300 more) for quickstarts and fast tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from rankdistill.config import check_range
from rankdistill.data.beir import BeirFolder, SubsetFolder, check_qrels_against_corpus
from rankdistill.data.records import Document, Qrels, Query
from rankdistill.errors import ConfigError, DataFormatError, RankdistillError
from rankdistill.storage import is_uri

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
    dev_split: str | None = None
    relevance_threshold: int = 1
    runs: tuple[str, ...] = ()
    # the qrels judge documents that are not in the shipped corpus (TREC DL: the full official
    # qrels over a top-100 candidate corpus); they still count in the ideal DCG
    partial_corpus: bool = False
    description: str = ""
    card: str | None = None  # the dataset card the conventions came from, if any


CARD_FILE = "dataset.yaml"
CARD_FIELDS = ("name", "description", "relevance_threshold", "test_split", "train_split", "dev_split", "runs")

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("demo", "scifact", subset=True,
                    description="a small slice of BEIR SciFact (32 train / 16 test queries), read in place"),
        DatasetSpec("scifact", "scifact", runs=("bm25.test.trec", "bm25.train.trec"),
                    description="BEIR SciFact"),
        DatasetSpec("nfcorpus", "nfcorpus", dev_split="dev",
                    runs=("bm25.test.trec", "bm25.dev.trec", "bm25.train.trec"), description="BEIR NFCorpus"),
        DatasetSpec("cranfield", "cranfield", train_split=None, runs=("bm25.test.trec",),
                    description="Cranfield 1400"),
        DatasetSpec("trec-dl-2019-passage", "trec-dl-2019-passage", train_split=None, relevance_threshold=2,
                    partial_corpus=True,
                    runs=("bm25.trec", "bm25.rankvicuna-7b.trec", "bm25-rm3.trec", "tasb.trec",
                          "splade-pp-ed.trec", "openai-ada2.trec"),
                    description="TREC DL 2019 passage (43 judged queries, top-100 candidates)"),
    )
}


def shared_data_roots() -> list[Path | str]:
    """Where collections are looked up by name: ``$RANKDISTILL_DATA`` (``:``-separated folders or
    storage URIs, e.g. ``/mnt/shared/data:s3://bucket/data``), then ``shared/data`` beside the
    repository."""
    value = os.environ.get("RANKDISTILL_DATA", "")
    entries = re.split(rf"{re.escape(os.pathsep)}(?!//)", value) if value else []
    roots: list[Path | str] = [p.rstrip("/") if is_uri(p) else Path(p) for p in entries if p]
    roots.append(REPO_ROOT.parent / "shared" / "data")
    return roots


def _is_collection(folder: Path | str) -> bool:
    if is_uri(folder):
        from rankdistill.storage import exists, join

        return exists(join(str(folder), "queries.jsonl")) or exists(join(str(folder), "queries.jsonl.gz"))
    folder = Path(folder)
    return (folder / "queries.jsonl").exists() or (folder / "queries.jsonl.gz").exists()


def data_cache() -> Path:
    return Path(os.environ.get("RANKDISTILL_CACHE", "~/.cache/rankdistill")).expanduser() / "data"


def _manifest(uri: str) -> dict[str, list[int]]:
    """``relative path -> [size, mtime_ns]`` of every file under ``uri``."""
    from pyarrow import fs

    from rankdistill.storage import filesystem

    fsys, path = filesystem(uri)
    infos = fsys.get_file_info(fs.FileSelector(path, recursive=True))
    return {i.path[len(path):].lstrip("/"): [int(i.size or 0), int(i.mtime_ns or 0)]
            for i in infos if i.type == fs.FileType.File}


def local_collection(uri: str) -> Path:
    """A local copy of the collection at ``uri`` in :func:`data_cache` (copied when absent or when
    the stored files changed; the copy is complete or not there at all)."""
    from rankdistill.storage import copy_folder

    manifest = _manifest(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    target = data_cache() / hashlib.sha256(uri.encode()).hexdigest()[:16] / name
    marker = target.parent / "manifest.json"
    if marker.exists() and target.is_dir() and json.loads(marker.read_text()) == {"uri": uri, "files": manifest}:
        return target
    staging = target.parent / f".{name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    copy_folder(uri, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    marker.write_text(json.dumps({"uri": uri, "files": manifest}))
    logger.info("copied the collection %s to %s", uri, target)
    return target


def read_card(folder: Path, base: DatasetSpec) -> DatasetSpec:
    """``base`` with the fields of ``folder``'s dataset card (``dataset.yaml``) applied, if it has one.

    A card holds any of ``name``, ``description``, ``relevance_threshold`` (binary measures count
    grade ≥ this as relevant), ``test_split``, ``train_split``, ``dev_split`` (null: none) and ``runs``
    (file names under ``runs/``); unknown fields are errors naming the card."""
    import yaml

    path = folder / CARD_FILE
    if not path.exists():
        return base
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("a dataset card is a mapping of fields", path=str(path))
    unknown = sorted(set(data) - set(CARD_FIELDS))
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} (known: {', '.join(CARD_FIELDS)})", path=str(path))
    fields: dict = {}
    for key, value in data.items():
        if key == "relevance_threshold":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"relevance_threshold must be an integer >= 1, got {value!r}", key, str(path))
        elif key == "runs":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError("runs must be a list of file names", key, str(path))
            value = tuple(value)
        elif key in ("train_split", "dev_split"):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key} must be a split name or null", key, str(path))
        elif not isinstance(value, str):
            raise ConfigError(f"{key} must be a string", key, str(path))
        fields[key] = value
    return replace(base, **fields, card=str(path))


def _by_folder(folder: Path) -> DatasetSpec:
    """A folder given by path: its card, else the registered conventions of a folder of that name
    (a copy of ``trec-dl-2019-passage`` keeps threshold 2), else defaults, with a warning."""
    base = next((s for s in REGISTRY.values() if s.folder == folder.name and not s.subset), None)
    base = replace(base, folder=str(folder)) if base else DatasetSpec(folder.name, str(folder))
    spec = read_card(folder, base)
    if spec.card is None and base.name == folder.name and folder.name not in REGISTRY:
        warnings.warn(f"{folder} has no {CARD_FILE}: evaluating with relevance threshold 1 and the split names "
                      "test/train; write a card to set them (see the README's dataset cards)", stacklevel=3)
    return spec


def _under(root: Path | str, name: str) -> Path | str:
    if is_uri(root):
        from rankdistill.storage import join

        return join(str(root), name)
    return Path(root) / name


def _under_local(root: Path | str, name: str) -> Path:
    """``root/name`` on this machine (a URI root's collection is copied to the cache first)."""
    return local_collection(str(_under(root, name))) if is_uri(root) else Path(root) / name


def _looks_like_path(name: str) -> bool:
    return any(sep in name for sep in ("/", os.sep)) or name.startswith((".", "~"))


def resolve(name_or_path: str, key: str = "dataset.name") -> tuple[DatasetSpec, BeirFolder]:
    """A registered name, the name of any collection folder under the data roots, or a path to a
    BEIR folder; its evaluation conventions come from its card, else the registry, else defaults.
    ``key``: the config field that named it (errors name it)."""
    if is_uri(name_or_path):
        if not _is_collection(name_or_path):
            raise ConfigError(f"'{name_or_path}' is not a BEIR collection (no queries.jsonl there)", key)
        local = local_collection(name_or_path)
        return _by_folder(local), BeirFolder(local)
    path = Path(name_or_path).expanduser()
    if name_or_path not in REGISTRY and path.is_dir():
        if not _is_collection(path):
            raise ConfigError(f"'{path}' is a folder but not a BEIR collection (no queries.jsonl)", key)
        return _by_folder(path), BeirFolder(path)
    roots = shared_data_roots()
    tried = ", ".join(str(r) for r in roots)
    if name_or_path in REGISTRY:
        s = REGISTRY[name_or_path]
        for root in roots:
            if _is_collection(_under(root, s.folder)):
                folder = _under_local(root, s.folder)
                return read_card(folder, replace(s, folder=str(folder))), (SubsetFolder if s.subset else BeirFolder)(folder)
        raise DatasetUnavailable(f"dataset '{name_or_path}' is not on this machine (looked in {tried}); "
                                 "set RANKDISTILL_DATA to the folder holding it")
    if _looks_like_path(name_or_path):
        raise ConfigError(f"dataset folder '{name_or_path}' does not exist", key)
    for root in roots:
        if _is_collection(_under(root, name_or_path)):
            folder = _under_local(root, name_or_path)
            return _by_folder(folder), BeirFolder(folder)
    found = sorted({p.name for r in roots if not is_uri(r) and Path(r).is_dir() for p in Path(r).iterdir()
                    if _is_collection(p)})
    raise ConfigError(f"unknown dataset '{name_or_path}': not registered ({', '.join(REGISTRY)}) and no folder of "
                      f"that name in {tried} (found there: {', '.join(found) or 'none'})", key)


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
    queries, qrels = load_split(spec, folder, config.split)
    if config.max_queries is not None:
        keep = sorted(queries)[: config.max_queries]
        queries = {q: queries[q] for q in keep}
        qrels = qrels.restricted_to(keep)
    return LoadedDataset(spec, folder, queries, qrels)


def load_split(spec: DatasetSpec, folder: BeirFolder, split: str,
               known: set[str] | None = None) -> tuple[dict[str, Query], Qrels]:
    """A split's queries and qrels, checked as every job checks them: judgements of documents
    outside the corpus (:func:`check_judged_documents`) and judged queries without text
    (:func:`check_judged_queries`). ``known``: the corpus's document ids, when the caller has them."""
    qrels = folder.qrels(split)
    check_judged_documents(spec, folder, qrels, split, known)
    queries = folder.queries(split)
    check_judged_queries(folder, qrels, queries, split)
    return queries, qrels


def check_judged_documents(spec: DatasetSpec, folder: BeirFolder, qrels: Qrels, split: str,
                           known: set[str] | None = None) -> int:
    """The documented rule for qrels that judge documents absent from the corpus.

    Such judgements still enter the ideal DCG and the recall base, so a corpus that lost
    documents (or qrels of another collection) silently lowers nDCG, AP and recall. On a complete
    collection (every BEIR folder) that is an error naming the first such qrel line; on a
    collection registered with ``partial_corpus`` (TREC DL: official qrels over a candidate
    corpus, the published way to evaluate it) it is a warning with the counts. Returns the
    number of such judgements."""
    if known is None:
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


def corpus_digest(corpus: dict[str, Document]) -> str:
    """sha256 over every document's id, title and text, in id order: what identifies a corpus
    (an index or a resumed run built on it), so that an edit in place is seen."""
    import hashlib

    digest = hashlib.sha256()
    for docid in sorted(corpus):
        doc = corpus[docid]
        digest.update(f"{docid}\0{doc.title}\0{doc.text}\0".encode())
    return digest.hexdigest()
