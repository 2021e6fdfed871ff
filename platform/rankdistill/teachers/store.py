"""The label store: Parquet files under ``<root>/<kind>/``, one file per written batch; ``root``
is a local folder or a storage URI (``s3://...``).

Every label is keyed by teacher id + template hash + query id + doc id(s) (listwise: + the input
list's key, pass and window). Scores keep the teacher's meaning: log-probabilities, named as such.

Crash safety (SIGKILL at any moment): a batch is written to a hidden temporary file in the same
folder, flushed and fsynced, then atomically renamed to ``part-<time>-<uuid>.parquet``; readers
only read ``part-*`` files. A killed job therefore leaves whole batch files and at worst a stale
temporary file (ignored, and removed by :meth:`LabelStore.cleanup`), never a partial one. Readers
drop duplicate keys (the earliest written wins), and jobs skip every stored key before calling a
backend, so a re-run or a later PairDistill iteration only labels what is missing.

Read schemas (:meth:`LabelStore.read` returns a pandas DataFrame sorted by key):

pointwise  teacher, template_id, template_hash, qid, docid, rank, score (= log P(yes | {yes, no})),
           logprob_yes, logprob_no
pairwise   teacher, template_id, template_hash, qid, docid_a, docid_b, rank_a, rank_b,
           logprob_a_wins (= log P(a ≻ b)), p_a_wins, logprob_first_ab, logprob_second_ab,
           logprob_first_ba, logprob_second_ba (null when one order only), seed
listwise   teacher, template_id, template_hash, qid, list_key, pass_index, window_index, start, end,
           window_size, stride, docids_in, ranking_out, response, repair (ok | wrong_format |
           repetition | missing), n_out_of_range, n_repeats, n_missing, ranking_after, mode
           (generate | first), identifier_logprobs (mode first: log p(identifier) of each of
           docids_in, in prompt order: FIRST's soft listwise label; null for generated windows)

Columns added after a kind's first release (listwise ``mode``, ``identifier_logprobs``) read as
null from older batch files, so a store written before them stays readable as it is.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rankdistill.errors import ConfigError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_COMMON = [("teacher", pa.string()), ("template_id", pa.string()), ("template_hash", pa.string()), ("qid", pa.string())]
_LIST = pa.list_(pa.string())
SCHEMAS: dict[str, pa.Schema] = {
    "pointwise": pa.schema(_COMMON + [
        ("docid", pa.string()), ("rank", pa.int32()), ("score", pa.float64()),
        ("logprob_yes", pa.float64()), ("logprob_no", pa.float64()),
    ]),
    "pairwise": pa.schema(_COMMON + [
        ("docid_a", pa.string()), ("docid_b", pa.string()), ("rank_a", pa.int32()), ("rank_b", pa.int32()),
        ("logprob_a_wins", pa.float64()), ("p_a_wins", pa.float64()),
        ("logprob_first_ab", pa.float64()), ("logprob_second_ab", pa.float64()),
        ("logprob_first_ba", pa.float64()), ("logprob_second_ba", pa.float64()), ("seed", pa.int64()),
    ]),
    "listwise": pa.schema(_COMMON + [
        ("list_key", pa.string()), ("pass_index", pa.int32()), ("window_index", pa.int32()),
        ("start", pa.int32()), ("end", pa.int32()), ("window_size", pa.int32()), ("stride", pa.int32()),
        ("docids_in", _LIST), ("ranking_out", _LIST), ("response", pa.string()), ("repair", pa.string()),
        ("n_out_of_range", pa.int32()), ("n_repeats", pa.int32()), ("n_missing", pa.int32()),
        ("ranking_after", _LIST), ("mode", pa.string()), ("identifier_logprobs", pa.list_(pa.float64())),
    ]),
}
# columns a kind gained after its first release: absent from older batch files, read there as null
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"listwise": ("mode", "identifier_logprobs")}
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "pointwise": ("teacher", "template_hash", "qid", "docid"),
    "pairwise": ("teacher", "template_hash", "qid", "docid_a", "docid_b"),
    "listwise": ("teacher", "template_hash", "qid", "list_key", "pass_index", "window_index"),
}
# What a job skips as a whole (a query's listwise windows are written together, in one file).
UNIT_COLUMNS: dict[str, tuple[str, ...]] = {
    "pointwise": ("qid", "docid"),
    "pairwise": ("qid", "docid_a", "docid_b"),
    "listwise": ("qid", "list_key"),
}
KINDS = tuple(SCHEMAS)


def _check_kind(kind: str) -> None:
    if kind not in SCHEMAS:
        raise ConfigError(f"unknown label kind '{kind}' (known: {', '.join(KINDS)})", "kind")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LabelStore:
    """``LabelStore(path).read("pairwise", teacher="flan-t5-xl", template="pairdistill-pairwise")``.

    ``root``: a local folder or a storage URI (``s3://bucket/labels``, anything ``pyarrow.fs``
    resolves), so the store of a cluster job lives where every node reads it. On object storage
    a batch file is one PUT, which appears whole or not at all, so no temporary file is needed.
    """

    def __init__(self, root: str | Path):
        from rankdistill.storage import filesystem, is_uri

        self.uri = is_uri(root)
        self.root = str(root).rstrip("/") if self.uri else Path(root)
        self._fs, self._base = filesystem(root)

    def folder(self, kind: str) -> Path | str:
        _check_kind(kind)
        return f"{self.root}/{kind}" if self.uri else self.root / kind

    def _listing(self, kind: str) -> list[str]:
        """File names in ``<root>/<kind>`` (empty when the folder does not exist)."""
        from pyarrow import fs

        selector = fs.FileSelector(f"{self._base}/{kind}", allow_not_found=True)
        return sorted(info.base_name for info in self._fs.get_file_info(selector) if info.type == fs.FileType.File)

    def files(self, kind: str) -> list[Path] | list[str]:
        """The committed batch files, oldest first (paths, or URIs for a URI store)."""
        folder = self.folder(kind)
        if not self.uri:
            return sorted(folder.glob("part-*.parquet")) if folder.exists() else []
        return [f"{folder}/{name}" for name in self._listing(kind)
                if name.startswith("part-") and name.endswith(".parquet")]

    @property
    def filesystem(self):
        """The store's ``pyarrow.fs`` filesystem (for :meth:`fs_paths`)."""
        return self._fs

    def fs_paths(self, kind: str) -> list[str]:
        """:meth:`files` as paths inside :attr:`filesystem` (what ``pyarrow.dataset`` takes)."""
        if not self.uri:
            return [str(p) for p in self.files(kind)]
        return [f"{self._base}/{kind}/{str(uri).rsplit('/', 1)[1]}" for uri in self.files(kind)]

    # -- writing --------------------------------------------------------------------------------
    def write(self, kind: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> Path | str | None:
        """Write one batch atomically (all rows or none); returns the file, or None when empty."""
        _check_kind(kind)
        schema = SCHEMAS[kind]
        if isinstance(rows, pa.Table):
            table = rows.select(schema.names).cast(schema)
        else:
            table = pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
        if table.num_rows == 0:
            return None
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        if self.uri:
            self._fs.create_dir(f"{self._base}/{kind}", recursive=True)
            pq.write_table(table, f"{self._base}/{kind}/{name}", filesystem=self._fs)
            return f"{self.folder(kind)}/{name}"
        folder = self.folder(kind)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{name}"
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        final = folder / name
        os.replace(tmp, final)
        _fsync_dir(folder)
        return final

    def cleanup(self, min_age_s: float = 600.0) -> int:
        """Remove temporary files left by killed writers (older than ``min_age_s``; a URI store
        has none)."""
        removed = 0
        now = time.time()
        if self.uri:
            return 0
        for kind in KINDS:
            folder = self.root / kind
            if not folder.exists():
                continue
            for tmp in folder.glob(".tmp-part-*.parquet"):
                try:
                    if now - tmp.stat().st_mtime >= min_age_s:
                        tmp.unlink()
                        removed += 1
                except FileNotFoundError:  # pragma: no cover - raced with another cleaner
                    pass
        return removed

    # -- reading --------------------------------------------------------------------------------
    def table(self, kind: str, teacher: str | None = None, template: Any = None, dedupe: bool = True) -> pa.Table:
        _check_kind(kind)
        schema = SCHEMAS[kind]
        tables = [t for t in (self._read_file(path, schema) for path in self.fs_paths(kind)) if t is not None]
        if not tables:
            return schema.empty_table()
        table = pa.concat_tables(tables)
        if teacher is not None:
            table = table.filter(pc.equal(table["teacher"], teacher))
        if template is not None:
            value = getattr(template, "hash", template)
            by_hash = pc.equal(table["template_hash"], value)
            by_id = pc.equal(table["template_id"], value)
            table = table.filter(pc.or_(by_hash, by_id))
        if dedupe and table.num_rows:
            keys = KEY_COLUMNS[kind]
            seen: set[tuple] = set()
            keep = []
            columns = [table[k].to_pylist() for k in keys]
            for i, key in enumerate(zip(*columns, strict=True)):
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            if len(keep) != table.num_rows:
                table = table.take(pa.array(keep, type=pa.int64()))
        return table

    def _read_file(self, path: str, schema: pa.Schema) -> pa.Table | None:
        """One batch file (a path on the store's filesystem), or None after moving an unreadable one
        (truncated or corrupted outside the atomic write, e.g. a copy cut short or a full disk) to
        ``<kind>/quarantine/`` with a warning: its keys then count as missing, so the next labeling
        job re-makes its labels, instead of every later job failing on it."""
        try:
            names = pq.read_schema(path, filesystem=self._fs).names
            optional = OPTIONAL_COLUMNS.get(kind_of(schema), ())
            missing = [n for n in schema.names if n not in names and n not in optional]
            if missing:  # another kind's file, or not a label file at all: its rows would read as nulls
                raise pa.ArrowInvalid(f"not a batch file of this kind (no column(s) {', '.join(missing)})")
            present = pa.schema([f for f in schema if f.name in names])
            table = pq.read_table(path, schema=present, filesystem=self._fs)
            for name in (n for n in optional if n not in names):
                table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
            return table.select(schema.names)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            parent, name = path.rsplit("/", 1)
            target = f"{parent}/quarantine/{name}"
            try:
                self._fs.create_dir(f"{parent}/quarantine", recursive=True)
                self._fs.move(path, target)
            except FileNotFoundError:  # pragma: no cover - another reader moved it first
                return None
            logger.warning("label store: unreadable batch file %s (%s: %s) moved to %s; its labels count as "
                           "missing and a labeling job will re-make them", path, type(exc).__name__, exc, target)
            return None

    def read(self, kind: str, teacher: str | None = None, template: Any = None, dedupe: bool = True) -> pd.DataFrame:
        """Labels of one kind (optionally of one teacher and one template: its hash, its id, or
        the :class:`~rankdistill.teachers.prompts.PromptTemplate`), duplicates dropped, sorted by key."""
        df = self.table(kind, teacher, template, dedupe).to_pandas()
        return df.sort_values(list(KEY_COLUMNS[kind]), kind="stable").reset_index(drop=True)

    def unit_keys(self, kind: str, teacher: str, template_hash: str) -> set[tuple]:
        """The work units already stored for this teacher and template (what a job skips)."""
        table = self.table(kind, teacher, template_hash, dedupe=False)
        columns = [table[c].to_pylist() for c in UNIT_COLUMNS[kind]]
        return set(zip(*columns, strict=True)) if columns and table.num_rows else set()

    def count(self, kind: str, teacher: str | None = None, template: Any = None) -> int:
        return self.table(kind, teacher, template).num_rows

    def pointwise_scores(self, teacher: str, template: str | None) -> dict[str, dict[str, float]]:
        """Pointwise labels of ``teacher`` as ``{qid: {docid: score}}`` (``score`` = log P(yes)).

        ``template``: a template hash, or an id (which may match several hashes, i.e. several
        versions of the template); None: every template. One score per (qid, docid): **the earliest written label
        wins**, as everywhere in the store — the first label the store paid for is the one every
        reader sees, so a re-labelled duplicate (same key, or the same passage under another
        version of the template) never changes a ranking made from the store."""
        table = self.table("pointwise", teacher, template)  # batch files oldest first, keys deduplicated
        scores: dict[str, dict[str, float]] = {}
        for qid, docid, score in zip(table["qid"].to_pylist(), table["docid"].to_pylist(),
                                     table["score"].to_pylist(), strict=True):
            scores.setdefault(str(qid), {}).setdefault(str(docid), float(score))
        return scores

    def final_rankings(self, teacher: str, template: Any) -> dict[str, list[str]]:
        """Listwise: each query's ranking after its last window of its last pass."""
        df = self.read("listwise", teacher, template)
        out: dict[str, list[str]] = {}
        for qid, group in df.groupby("qid", sort=False):
            last = group.sort_values(["pass_index", "window_index"]).iloc[-1]
            out[str(qid)] = list(last["ranking_after"])
        return out

    def window_soft_labels(self, teacher: str, template: Any = None) -> list[dict[str, Any]]:
        """Listwise mode ``first``: every window's soft label, ``{"qid", "docids", "logprobs"}``
        (the passages in prompt order and ``log p(identifier)`` of each), in key order; windows
        without logits (generated ones) are left out."""
        df = self.read("listwise", teacher, template)
        out = []
        for qid, docids, logprobs in zip(df["qid"], df["docids_in"], df["identifier_logprobs"], strict=True):
            if logprobs is not None and len(logprobs):
                out.append({"qid": str(qid), "docids": [str(d) for d in docids], "logprobs": [float(v) for v in logprobs]})
        return out

    def summary(self) -> dict[str, int]:
        return {kind: self.count(kind) for kind in KINDS}


def kind_of(schema: pa.Schema) -> str:
    return next(kind for kind, known in SCHEMAS.items() if known is schema)


def repair_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    from rankdistill.teachers.parsing import REPAIR_KINDS

    counts = dict.fromkeys(REPAIR_KINDS, 0)
    for row in rows:
        counts[row["repair"]] += 1
    return counts
