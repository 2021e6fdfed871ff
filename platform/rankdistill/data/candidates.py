"""Join a first-stage run with queries and corpus into candidate lists.

Two forms, one code path: a Python iterator of :class:`CandidateList` (streaming, one query at a
time) and a Ray Dataset whose rows are ``CandidateList.to_dict()`` rows. The corpus is read once
and only the documents the run needs are kept; candidate texts are references to those strings,
so a corpus is never held twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rankdistill.data.records import Candidate, CandidateList, Document, Query, Run
from rankdistill.errors import DataFormatError

if TYPE_CHECKING:  # pragma: no cover
    import ray.data


def needed_documents(corpus: Iterable[Document], docids: Iterable[str]) -> dict[str, Document]:
    """Stream a corpus once, keeping only the documents in ``docids``."""
    wanted = set(docids)
    return {d.docid: d for d in corpus if d.docid in wanted}


def run_docids(run: Run, k: int | None = None) -> set[str]:
    return {d for qid in run for d, _ in (run.ranked(qid)[:k] if k else run[qid].items())}


def candidate_lists(
    run: Run,
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    k: int | None = None,
    strict: bool = True,
) -> Iterator[CandidateList]:
    """Yield one candidate list per query of ``run`` (in run order), best first, top ``k``.

    ``strict``: a run document or query missing from corpus/queries raises DataFormatError;
    otherwise it is skipped.
    """
    for qid, ranked in run.iter_ranked():
        query = queries.get(qid)
        if query is None:
            if strict:
                raise DataFormatError(f"run query '{qid}' is not in the queries")
            continue
        candidates: list[Candidate] = []
        for docid, score in ranked[:k] if k else ranked:
            doc = corpus.get(docid)
            if doc is None:
                if strict:
                    raise DataFormatError(f"run document '{docid}' (query '{qid}') is not in the corpus")
                continue
            candidates.append(Candidate(docid, score, doc.text, doc.title))
        yield CandidateList(query, candidates)


def write_parquet_shards(
    lists: Iterable[CandidateList], folder: str | Path, rows_per_shard: int = 256
) -> list[Path]:
    """Write candidate lists as Parquet shards (streaming: one shard in memory at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    paths: list[Path] = []
    buffer: list[dict] = []

    def flush() -> None:
        if buffer:
            path = folder / f"part-{len(paths):05d}.parquet"
            pq.write_table(pa.Table.from_pylist(buffer), path)
            paths.append(path)
            buffer.clear()

    for cl in lists:
        buffer.append(cl.to_dict())
        if len(buffer) >= rows_per_shard:
            flush()
    flush()
    return paths


def candidate_dataset(
    lists: Iterable[CandidateList], folder: str | Path, rows_per_shard: int = 256
) -> ray.data.Dataset:
    """A Ray Dataset of candidate-list rows, backed by Parquet shards written to ``folder``."""
    import ray.data

    paths = write_parquet_shards(lists, folder, rows_per_shard)
    if not paths:
        raise DataFormatError("no candidate lists to put in a dataset", folder)
    return ray.data.read_parquet([str(p) for p in paths])
