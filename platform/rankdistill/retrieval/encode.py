"""Encode a corpus with a dense student on a Ray Data actor pool, into embedding shards.

``encode_corpus(model_path, documents, output)`` -> a folder (local path or storage URI) of
Parquet shards, one row per passage:

- bi-encoder: ``docid`` (string), ``embedding`` (``list<float32>``, D values);
- ColBERT: ``docid``, ``n_tokens`` (int32), ``embedding`` (the ``n_tokens x dim`` token vectors
  flattened row-major; only the tokens MaxSim matches).

Each actor loads the student once (``rankdistill.models.load_reranker``) from what
:func:`rankdistill.storage.ship_folder` made of the model folder: a storage URI the actor copies
locally, or, for a folder on the driver's disk, its bytes in the Ray object store, so actors on
any node find it. The shards are written by the actors too: ``output`` must be a storage URI or a
folder every node sees (on one machine any folder is).

:func:`read_embedding_shards` reads a shard folder back (``docids``, ``float32 [N, D]`` or the
ColBERT token matrix with per-passage offsets); :func:`build_dense_index` /
:func:`rankdistill.retrieval.colbert_index.ColbertIndex.from_shards` turn it into an index.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankdistill.data.records import Document
from rankdistill.errors import DataFormatError


@dataclass
class EncodeConfig:
    """Ray Data settings of :func:`encode_corpus`.

    Args:
        num_actors: encoder actors in the pool (each holds one copy of the student).
        cpus_per_actor: CPUs reserved per actor (also its torch threads).
        gpus_per_actor: GPUs per actor (0 on CPU machines).
        batch_size: passages per ``encode_passages`` call.
        rows_per_shard: at most this many passages per Parquet shard.
        precision: the student's autocast while encoding: ``fp32`` | ``bf16`` | ``fp16`` |
            ``auto`` (bf16 where the actor's device has a bf16 unit, else fp32;
            :mod:`rankdistill.precision`), decided once by :func:`resolve_encode_precision`;
            queries are encoded in the same resolved precision.
    """

    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 64
    rows_per_shard: int = 50_000
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from rankdistill.config import check_range
        from rankdistill.precision import check_precision

        check_precision(self.precision, "precision")

        check_range("num_actors", self.num_actors, minimum=1)
        check_range("cpus_per_actor", self.cpus_per_actor, above=0)
        check_range("gpus_per_actor", self.gpus_per_actor, minimum=0)
        check_range("batch_size", self.batch_size, minimum=1)
        check_range("rows_per_shard", self.rows_per_shard, minimum=1)


class _PassageEncoder:
    """Ray Data actor: loads the student once, encodes ``{"docid", "text"}`` batches."""

    def __init__(self, model: Any, batch_size: int, threads: int, precision: str = "fp32"):
        import torch

        from rankdistill.models import load_reranker
        from rankdistill.storage import local_folder

        torch.set_num_threads(max(1, threads))
        with local_folder(model) as folder:  # a ShippedFolder (object store) or a URI
            self.model = load_reranker(folder)
        if torch.cuda.is_available():  # pragma: no cover - GPU only
            self.model.to("cuda")
        self.model.use_precision(precision)  # auto: decided on this actor's device
        self.batch_size = batch_size
        if not hasattr(self.model, "encode_passages"):
            raise DataFormatError(f"{type(self.model).__name__} is not a dense retriever (no encode_passages)",
                                  str(model))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import pyarrow as pa

        texts = [str(t) for t in batch["text"]]
        encoded = self.model.encode_passages(texts, batch_size=self.batch_size)
        docids = pa.array([str(d) for d in batch["docid"]], pa.string())
        if isinstance(encoded, list):  # ColBERT: token vectors per passage
            flat = [v.numpy().astype(np.float32).reshape(-1) for v in encoded]
            return pa.table({
                "docid": docids,
                "n_tokens": pa.array([int(v.shape[0]) for v in encoded], pa.int32()),
                "embedding": pa.array(flat, pa.list_(pa.float32())),
            })
        array = encoded.numpy().astype(np.float32)
        return pa.table({"docid": docids, "embedding": pa.array(list(array), pa.list_(pa.float32()))})


def _resolve_here(precision: str, gpus: float) -> str:
    import torch

    from rankdistill.precision import has_bf16_unit, resolve_precision

    device_type = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    return resolve_precision(precision, has_bf16_unit(device_type))


def resolve_encode_precision(config: EncodeConfig) -> str:
    """``config.precision`` as the encoding actors run it (``fp32`` | ``bf16`` | ``fp16``).

    ``auto`` is decided once, by a Ray task placed like an encoding actor (its CPUs and GPUs), on
    that device (:func:`rankdistill.precision.resolve_precision`); without Ray, here. The result
    is what the actors encode passages in, what queries are encoded in and what an index cache
    key holds: one rule, one answer, for queries and passages alike (deciding on the driver for
    queries and on the actors for passages gave bf16 passages and fp32 queries on GPU actors with
    a CPU head)."""
    if config.precision != "auto":
        return config.precision
    import ray

    if not ray.is_initialized():
        return _resolve_here(config.precision, config.gpus_per_actor)
    task = ray.remote(_resolve_here).options(num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or 0)
    return str(ray.get(task.remote(config.precision, config.gpus_per_actor)))


def _documents_dataset(documents: Iterable[Document] | Mapping[str, Document] | Any):
    import ray.data

    if isinstance(documents, ray.data.Dataset):
        return documents
    docs = documents.values() if isinstance(documents, Mapping) else documents
    return ray.data.from_items([{"docid": d.docid, "text": d.contents} for d in docs])



def encode_corpus(
    model_path: str | os.PathLike,
    documents: Iterable[Document] | Mapping[str, Document] | Any,
    output: str | os.PathLike,
    config: EncodeConfig | None = None,
    output_key: str = "output",
) -> str:
    """Encode every passage on a Ray Data actor pool and write embedding shards to ``output``.

    Args:
        model_path: a saved dense student (``save_pretrained`` folder on this machine, or a storage
            URI); a local folder reaches the actors through the Ray object store.
        documents: ``Document`` records (list or ``docid -> Document``) or a Ray Dataset with
            ``docid`` and ``text`` columns (large corpora: read it with Ray Data, never on the driver).
        output: shard folder, local path or storage URI (``s3://``, ``gs://``, ``file://``).
        output_key: the config key that set ``output``, named by the error raised when a local
            ``output`` is not seen by every node of a multi-node cluster.

    Returns ``output`` as a string.
    """
    import ray.data

    from rankdistill.storage import ship_folder

    config = config or EncodeConfig()
    precision = resolve_encode_precision(config)  # auto: decided once, where an actor would run
    ds = _documents_dataset(documents)
    encoded = ds.map_batches(
        _PassageEncoder,
        fn_constructor_kwargs={"model": ship_folder(model_path), "batch_size": config.batch_size,
                               "threads": int(max(1, config.cpus_per_actor)), "precision": precision},
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, config.num_actors)),
        num_cpus=config.cpus_per_actor,
        num_gpus=config.gpus_per_actor or None,
    )
    out = os.fspath(output)
    if "://" not in out:
        from rankdistill.ray_runtime import check_shared_folder

        Path(out).mkdir(parents=True, exist_ok=True)
        check_shared_folder(out, output_key)  # the actors write the shards, on whichever node they run
    encoded.write_parquet(out, max_rows_per_file=config.rows_per_shard)
    return out


@dataclass
class EmbeddingShards:
    """Shards read back: ``docids`` (N), ``embeddings`` ``float32 [N, D]`` (bi-encoder) or
    ``float32 [T, dim]`` token vectors with ``offsets`` ``int64 [N + 1]`` (ColBERT: passage n's
    tokens are rows ``offsets[n]:offsets[n+1]``)."""

    docids: list[str]
    embeddings: np.ndarray
    offsets: np.ndarray | None = None

    @property
    def token_level(self) -> bool:
        return self.offsets is not None


def read_embedding_shards(location: str | os.PathLike) -> EmbeddingShards:
    """Read the Parquet shards written by :func:`encode_corpus` (sorted by file name)."""
    import pyarrow.dataset as pads

    from rankdistill.storage import readable_folder

    with readable_folder(location) as folder:
        files = sorted(str(p) for p in Path(folder).rglob("*.parquet"))
        if not files:
            raise DataFormatError("no embedding shards (*.parquet) in this folder", Path(str(location)))
        table = pads.dataset(files, format="parquet").to_table()
    docids = [str(d) for d in table["docid"].to_pylist()]
    values = table["embedding"].combine_chunks()
    flat = values.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if "n_tokens" in table.column_names:
        counts = np.asarray(table["n_tokens"].to_numpy(zero_copy_only=False), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        dim = flat.size // max(int(offsets[-1]), 1)
        return EmbeddingShards(docids, flat.reshape(int(offsets[-1]), dim), offsets)
    n = len(docids)
    return EmbeddingShards(docids, flat.reshape(n, flat.size // max(n, 1)))


def build_dense_index(location: str | os.PathLike, index_config: Any = None):
    """A :class:`~rankdistill.retrieval.dense_index.DenseIndex` over a bi-encoder's shards."""
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    shards = read_embedding_shards(location)
    if shards.token_level:
        raise DataFormatError("these are ColBERT token shards; use ColbertIndex.from_shards", Path(str(location)))
    index = DenseIndex(shards.embeddings.shape[1], index_config or DenseIndexConfig())
    index.add(shards.docids, shards.embeddings)
    return index
