"""Token-level index for ColBERT: candidate generation, then MaxSim re-scoring from a token store
that is exact (float32), near-exact (float16) or compressed (ColBERTv2-style residuals).

1. **Token store** (``storage``): every passage token vector (punctuation dropped, as the model's
   ``encode_passages``) is kept for re-scoring, either as ``float32`` (exact), ``float16`` or as a
   faiss codec's code (any IVF ``index_factory`` string used as a standalone codec,
   ``sa_encode`` / ``sa_decode``): ``"IVF1024,SQ4"`` stores the nearest of 1024 centroids (2 bytes)
   and the residual to it at 4 bits per dimension, which is ColBERTv2's residual compression
   (Santhanam et al., NAACL 2022, §3.2: centroid id + 1 or 2 bits per dimension) with faiss's
   scalar quantiser; ``"IVF1024,PQ32"`` stores the residual as 32 product-quantiser bytes.
2. **Candidates** (``factory``):
   - a faiss ``index_factory`` string over all token vectors (default ``"Flat"``; e.g.
     ``"IVF4096,PQ32"``): each query token asks for its ``candidates_per_token`` nearest passage
     tokens and the union of their passages is the candidate set (ColBERTv1 end-to-end, §3.6);
   - ``"centroids"``: no second index at all. Each query token probes the ``nprobe`` nearest
     centroids of the storage codec; the passages that have a token in a probed centroid are
     candidates (PLAID stage 1, Santhanam et al., CIKM 2022), scored approximately by the sum over
     query tokens of their best probed centroid score, a token whose centroids miss the passage
     counting its lowest probed score (XTR's missing-similarity imputation, Lee et al., 2023).
     The best ``ndocs`` go to re-scoring. The centroid -> passage lists hold one 4-byte passage
     number per distinct (centroid, passage) pair.
3. **Re-scoring**: MaxSim over the stored token vectors (decoded when compressed), with
   :func:`rankdistill.models.maxsim.maxsim`, the code the model trains with; the top k return.

PLAID's centroid-interaction pruning thresholds and its C++ kernels are not implemented (see the
README: "ColBERT index memory" for why faiss and not fast-plaid / pylate). With ``Flat`` tokens,
``float32`` storage and enough candidates the result equals brute-force MaxSim over the corpus.

Memory: :func:`memory_model` gives the bytes per passage of every setting; the README's table uses
it for MS MARCO.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankdistill.data.records import Run
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.models.maxsim import maxsim

logger = logging.getLogger(__name__)

RAW_STORAGE = {"float32": np.float32, "float16": np.float16}
CENTROIDS = "centroids"


@dataclass
class ColbertIndexConfig:
    """Args:
    factory: candidate generation: a faiss ``index_factory`` string over the token vectors (inner
        product), or ``"centroids"`` (the storage codec's centroids; needs an IVF ``storage``).
    search_params: ``faiss.ParameterSpace`` string for the token index (e.g. ``"nprobe=32"``).
    candidates_per_token: faiss hits per query token (ColBERT's k'), token-index candidates.
    storage: ``"float32"`` | ``"float16"`` | a faiss IVF codec (``"IVF<n>,SQ4"``, ``"IVF<n>,SQ8"``,
        ``"IVF<n>,PQ<m>"``) for the token vectors that MaxSim re-scores.
    nprobe: centroids probed per query token with ``factory: centroids``.
    ndocs: passages re-scored per query after the centroid scores (``factory: centroids``); a
        search for k passages re-scores at least ``4 × k`` (:meth:`ColbertIndex.ndocs_for`), as
        PLAID does past k = 100 (``max(4k, 4096)`` there; the 4096 floor is this setting here).
    train_tokens: token vectors that train faiss: :meth:`ColbertIndex.from_shards` draws a seeded
        uniform sample of this size across every shard (fewer when the corpus has fewer), and
        refuses a sample under faiss's 39 vectors per centroid; :meth:`ColbertIndex.add` trains
        an untrained index on a sample of the batch it is given.
    rescore_batch: candidate passages re-scored per MaxSim call.
    """

    factory: str = "Flat"
    search_params: str | None = None
    candidates_per_token: int = 64
    storage: str = "float32"
    nprobe: int = 4
    ndocs: int = 1024
    train_tokens: int = 131_072
    rescore_batch: int = 256

    def __post_init__(self) -> None:
        for key in ("candidates_per_token", "nprobe", "ndocs", "train_tokens", "rescore_batch"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", f"index.{key}")
        if self.factory == CENTROIDS and self.storage in RAW_STORAGE:
            raise ConfigError(f"'centroids' candidates need an IVF codec as storage (e.g. 'IVF1024,SQ4'), "
                              f"not '{self.storage}'", "index.factory")

    @classmethod
    def from_dict(cls, values: dict) -> ColbertIndexConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------------------------------
# memory model
# --------------------------------------------------------------------------------------------


def _codec(dim: int, storage: str):
    import faiss

    try:
        codec = faiss.index_factory(dim, storage, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"faiss cannot build '{storage}' for dimension {dim}: "
                          f"{str(exc).strip().splitlines()[-1]}", "index.storage") from exc
    if not hasattr(codec, "quantizer") or not hasattr(codec, "nlist"):
        raise ConfigError(f"'{storage}' is not an IVF codec (use 'IVF<n>,SQ4', 'IVF<n>,PQ<m>', ...)", "index.storage")
    return codec


def storage_bytes_per_token(storage: str, dim: int) -> int:
    """Bytes one token vector takes in the re-scoring store (faiss ``sa_code_size`` for codecs)."""
    if storage in RAW_STORAGE:
        return dim * np.dtype(RAW_STORAGE[storage]).itemsize
    return int(_codec(dim, storage).sa_code_size())


def candidate_bytes_per_token(factory: str, dim: int) -> int:
    """Bytes per token of candidate generation: ``centroids``: at most one 4-byte passage number
    per token (one per distinct centroid of a passage); a faiss token index: its code plus the
    8-byte id faiss keeps per vector in IVF lists (a Flat index: the float32 vector) plus our
    4-byte token -> passage map."""
    if factory == CENTROIDS:
        return 4
    import faiss

    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    code = int(getattr(index, "code_size", 4 * dim))
    ids = 8 if hasattr(index, "nlist") else 0
    return code + ids + 4


@dataclass
class MemoryEstimate:
    """Bytes per passage of one setting: ``store`` (re-scoring vectors), ``candidates`` (token
    index or centroid lists), ``offsets`` (8), ``per_passage`` (their sum) and the ``fixed``
    bytes independent of the corpus size (codec centroids and tables)."""

    store: float
    candidates: float
    offsets: float
    fixed: int

    @property
    def per_passage(self) -> float:
        return self.store + self.candidates + self.offsets

    def total(self, passages: int) -> float:
        return self.per_passage * passages + self.fixed


def memory_model(config: ColbertIndexConfig, dim: int, tokens_per_passage: float) -> MemoryEstimate:
    """Predicted index memory (RAM when loaded; the store is memory-mapped, so it may stay on
    disk) for passages of ``tokens_per_passage`` tokens on average. Candidate bytes of
    ``centroids`` are an upper bound (one entry per token; distinct (centroid, passage) pairs are
    fewer)."""
    fixed = 0
    if config.storage not in RAW_STORAGE:
        codec = _codec(dim, config.storage)
        fixed = 4 * dim * int(codec.nlist) + 4 * dim * 2  # centroids + SQ ranges (PQ: codebooks, below)
        if hasattr(codec, "pq"):
            fixed = 4 * dim * int(codec.nlist) + 4 * dim * (1 << int(codec.pq.nbits))
    return MemoryEstimate(
        store=tokens_per_passage * storage_bytes_per_token(config.storage, dim),
        candidates=tokens_per_passage * candidate_bytes_per_token(config.factory, dim),
        offsets=8.0,
        fixed=fixed,
    )


# --------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------


class ColbertIndex:
    """``ColbertIndex(dim, config).add(docids, token_vectors)``, ``search(qids, query_vectors, k)``,
    ``save(folder_or_uri)`` / ``ColbertIndex.load(folder_or_uri)``, ``memory_bytes()``."""

    FILE = "tokens.faiss"
    CODEC = "codec.faiss"
    VECTORS = "vectors.npy"
    OFFSETS = "offsets.npy"
    LIST_OFFSETS = "centroid_offsets.npy"
    LIST_PIDS = "centroid_pids.npy"
    META = "rankdistill_colbert.json"

    def __init__(self, dim: int, config: ColbertIndexConfig | None = None):
        self.dim = int(dim)
        self.config = config or ColbertIndexConfig()
        self.docids: list[str] = []
        raw = RAW_STORAGE.get(self.config.storage)
        self._codec = None if raw is not None else _codec(self.dim, self.config.storage)
        width = self.dim if raw is not None else int(self._codec.sa_code_size())
        self._store_parts: list[np.ndarray] = []
        self._store = np.zeros((0, width), dtype=raw if raw is not None else np.uint8)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._index = None if self.config.factory == CENTROIDS else self._make()
        self._pairs: list[np.ndarray] = []  # (centroid, passage) pairs not yet in the lists
        self._list_offsets: np.ndarray | None = None
        self._list_pids: np.ndarray | None = None
        self._owner: np.ndarray | None = None

    def _make(self):
        import faiss

        try:
            index = faiss.index_factory(self.dim, self.config.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"faiss cannot build '{self.config.factory}' for dimension {self.dim}: "
                              f"{str(exc).strip().splitlines()[-1]}", "index.factory") from exc
        self._apply_search_params(index)
        return index

    def _apply_search_params(self, index) -> None:
        if self.config.search_params and index is not None:
            import faiss

            faiss.ParameterSpace().set_index_parameters(index, self.config.search_params)

    @property
    def size(self) -> int:
        """Number of passages."""
        return len(self.docids)

    @property
    def num_tokens(self) -> int:
        return int(self._offsets[-1])

    # ---- build ----------------------------------------------------------------------------------

    @property
    def needs_training(self) -> bool:
        return any(t is not None and not t.is_trained for t in (self._index, self._codec))

    def nlist(self) -> int:
        """The most IVF lists among the index and the codec (0: no IVF part)."""
        import faiss

        counts = [0]
        for target in (self._index, self._codec):
            if target is not None:
                ivf = faiss.try_extract_index_ivf(target)
                if ivf is not None:
                    counts.append(int(ivf.nlist))
        return max(counts)

    def ndocs_for(self, k: int) -> int:
        """Passages re-scored for a search of ``k`` (``factory: centroids``): ``max(ndocs, 4 k)``."""
        return max(self.config.ndocs, 4 * int(k))

    def _train(self, matrix: np.ndarray) -> None:
        if not self.needs_training:
            return
        sample = matrix
        if len(matrix) > self.config.train_tokens:
            rows = np.random.default_rng(0).choice(len(matrix), self.config.train_tokens, replace=False)
            sample = matrix[np.sort(rows)]
        self.train_on(sample)

    def train_on(self, sample: np.ndarray) -> None:
        """Train the untrained faiss parts on ``sample`` (``float32 [n, dim]``), refusing fewer than
        faiss's 39 vectors per IVF list (it would only warn, and candidates get silently worse)."""
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        nlist = self.nlist()
        if self.needs_training and nlist and len(sample) < 39 * nlist:
            raise ConfigError(
                f"faiss would train {nlist} IVF lists on {len(sample)} token vectors, under the 39 per list it "
                f"needs ({39 * nlist}); raise index.train_tokens (now {self.config.train_tokens}, and the corpus must "
                f"hold that many tokens) or lower the lists in index.factory / index.storage "
                f"('{self.config.factory}', '{self.config.storage}')", "index.train_tokens")
        self.train_tokens_used = len(sample)
        for name, target, key in (("factory", self._index, "index.factory"), ("storage", self._codec, "index.storage")):
            if target is None or target.is_trained:
                continue
            try:
                target.train(sample)
            except RuntimeError as exc:
                raise ConfigError(f"faiss could not train '{getattr(self.config, name)}' on {len(sample)} token "
                                  f"vectors: {str(exc).strip().splitlines()[-1]}", key) from exc

    def add(self, docids: Sequence[str], token_vectors: Sequence[np.ndarray | torch.Tensor] | np.ndarray,
            offsets: np.ndarray | None = None) -> None:
        """Add passages: a list of ``[n_i, dim]`` arrays, or one ``[T, dim]`` matrix with
        ``offsets [N + 1]`` (as :class:`~rankdistill.retrieval.encode.EmbeddingShards`).
        Untrained faiss parts (IVF, PQ, SQ) are trained on a sample of the first batch added."""
        if offsets is None:
            parts = [np.asarray(v, dtype=np.float32).reshape(-1, self.dim) for v in token_vectors]
            counts = np.array([len(p) for p in parts], dtype=np.int64)
            matrix = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        else:
            matrix = np.asarray(token_vectors, dtype=np.float32)
            counts = np.diff(np.asarray(offsets, dtype=np.int64))
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise DataFormatError(f"token vectors must have shape (n, {self.dim}), got {matrix.shape}")
        if len(counts) != len(docids):
            raise DataFormatError(f"{len(docids)} document ids for {len(counts)} passages")
        if (counts == 0).any():
            raise DataFormatError(f"passage '{docids[int(np.argmax(counts == 0))]}' has no token vectors")
        matrix = np.ascontiguousarray(matrix)
        self._train(matrix)
        if self._index is not None:
            self._index.add(matrix)
        if self._codec is None:
            self._store_parts.append(matrix.astype(self._store.dtype, copy=False))
        else:
            self._store_parts.append(self._codec.sa_encode(matrix))
            if self.config.factory == CENTROIDS:
                _, centroid = self._codec.quantizer.search(matrix, 1)
                passage = self.size + np.repeat(np.arange(len(counts), dtype=np.int64), counts)
                self._pairs.append(np.unique(centroid[:, 0].astype(np.int64) * (1 << 32) + passage))
        self._offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(counts)])
        self.docids.extend(str(d) for d in docids)

    def _finish(self) -> None:
        """Fold the added batches into the store and the centroid lists."""
        if self._store_parts:
            self._store = np.concatenate([np.asarray(self._store), *self._store_parts])
            self._store_parts = []
        if self._pairs:
            old = []
            if self._list_pids is not None and len(self._list_pids):
                centroid_of = np.repeat(np.arange(len(self._list_offsets) - 1), np.diff(self._list_offsets))
                old = [centroid_of.astype(np.int64) * (1 << 32) + self._list_pids]
            pairs = np.unique(np.concatenate([*old, *self._pairs]))
            centroid, pids = pairs >> 32, (pairs & 0xFFFFFFFF).astype(np.int32)
            counts = np.bincount(centroid, minlength=int(self._codec.nlist))
            self._list_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._list_pids = pids
            self._pairs = []

    @classmethod
    def from_shards(cls, location: str | os.PathLike, config: ColbertIndexConfig | None = None) -> ColbertIndex:
        """Index the ColBERT token shards written by :func:`~rankdistill.retrieval.encode.encode_corpus`
        (a local folder or a storage URI), streamed one Parquet record batch at a time from where
        they live: no copy of the shard folder is made, and a compressed store never holds the
        float32 corpus. faiss trains first, on a seeded uniform sample of ``train_tokens`` token
        vectors drawn across every shard (:func:`sample_tokens`)."""
        config = config or ColbertIndexConfig()
        dim = _shard_dim(location)
        index = cls(dim, config)
        if index.needs_training:
            sample, total = sample_tokens(location, config.train_tokens)
            index.train_on(sample)
            nlist = index.nlist()
            logger.info("colbert index: faiss trained on %d of %d token vectors (%.1f per IVF list, %d lists)",
                        len(sample), total, len(sample) / max(nlist, 1), nlist)
            del sample
        added = False
        for docids, matrix, offsets in _token_batches(location):
            index.add(docids, matrix, offsets)
            added = True
        if not added:
            raise DataFormatError("no passages in these shards", Path(str(location)))
        index._finish()
        return index

    # ---- search ---------------------------------------------------------------------------------

    def _token_owner(self) -> np.ndarray:
        if self._owner is None or len(self._owner) != self.num_tokens:
            self._owner = np.repeat(np.arange(self.size, dtype=np.int32), np.diff(self._offsets))
        return self._owner

    def candidates(self, query_vectors: np.ndarray, k: int = 0) -> np.ndarray:
        """Passage indices to re-score for one query (``[Nq, dim]`` in) searched for ``k``."""
        self._finish()
        q = np.ascontiguousarray(np.asarray(query_vectors, dtype=np.float32))
        if self.config.factory == CENTROIDS:
            return self._centroid_candidates(q, self.ndocs_for(k))
        k = min(self.config.candidates_per_token, max(self.num_tokens, 1))
        _, hits = self._index.search(q, k)
        hits = hits[hits >= 0]
        return np.unique(self._token_owner()[hits])

    def _centroid_candidates(self, q: np.ndarray, ndocs: int) -> np.ndarray:
        nprobe = min(self.config.nprobe, int(self._codec.nlist))
        scores, cells = self._codec.quantizer.search(q, nprobe)  # [Nq, nprobe]
        starts, ends = self._list_offsets[cells], self._list_offsets[cells + 1]
        sizes = (ends - starts).ravel()
        if sizes.sum() == 0:
            return np.zeros(0, dtype=np.int64)
        rows = np.repeat(np.arange(sizes.size), sizes)
        flat = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes) + np.repeat(starts.ravel(), sizes)
        pids = self._list_pids[flat].astype(np.int64)
        token, score = rows // nprobe, scores.ravel()[rows]
        # best probed centroid per (query token, passage), then the sum over tokens with imputation
        key = token * self.size + pids
        order = np.lexsort((-score, key))
        first = np.concatenate([[True], key[order][1:] != key[order][:-1]])
        best_key, best = key[order][first], score[order][first]
        floor = scores[:, -1]  # each token's lowest probed score
        passages, inverse = np.unique(best_key % self.size, return_inverse=True)
        gain = np.bincount(inverse, weights=best - floor[best_key // self.size], minlength=len(passages))
        approx = gain + floor.sum()
        if len(passages) > ndocs:
            passages = passages[np.argpartition(-approx, ndocs - 1)[:ndocs]]
        return np.sort(passages)

    def _token_rows(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths = self._offsets[chunk + 1] - self._offsets[chunk]
        starts = self._offsets[chunk]
        rows = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
        return rows, lengths

    def token_vectors(self, rows: np.ndarray) -> np.ndarray:
        """``float32 [len(rows), dim]`` stored token vectors (decoded when compressed)."""
        self._finish()
        stored = np.asarray(self._store[rows])
        if self._codec is None:
            return stored.astype(np.float32, copy=False)
        return self._codec.sa_decode(np.ascontiguousarray(stored))

    def rescore(self, query_vectors: np.ndarray | torch.Tensor, passages: np.ndarray) -> np.ndarray:
        """MaxSim of one query (``[Nq, dim]``, every row counts) against passages (indices), over
        the stored token vectors (exact with float32 storage)."""
        q = torch.as_tensor(np.asarray(query_vectors, dtype=np.float32))[None]
        q_mask = torch.ones(q.shape[:2], dtype=torch.bool)
        out = np.empty(len(passages), dtype=np.float32)
        for start in range(0, len(passages), self.config.rescore_batch):
            chunk = np.asarray(passages[start : start + self.config.rescore_batch], dtype=np.int64)
            rows, lengths = self._token_rows(chunk)
            width = int(lengths.max())
            mask = np.arange(width)[None, :] < lengths[:, None]
            docs = np.zeros((len(chunk), width, self.dim), dtype=np.float32)
            docs[mask] = self.token_vectors(rows)
            scores = maxsim(q, q_mask, torch.from_numpy(docs), torch.from_numpy(mask), paired=False)[0]
            out[start : start + len(chunk)] = scores.numpy()
        return out

    def search(self, qids: Sequence[str], query_vectors: np.ndarray | torch.Tensor, k: int = 100) -> Run:
        """``query_vectors``: ``[Q, Nq, dim]`` (``ColBERT.encode_queries``). Returns a Run with the
        MaxSim scores of the top k candidates per query."""
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim != 3 or queries.shape[2] != self.dim or len(queries) != len(qids):
            raise DataFormatError(f"query vectors must be [{len(qids)}, Nq, {self.dim}], got {queries.shape}")
        run = Run()
        for qid, q in zip(qids, queries, strict=True):
            cands = self.candidates(q, k)
            if len(cands) == 0:
                run[qid] = {}
                continue
            scores = self.rescore(q, cands)
            top = np.argsort(-scores, kind="stable")[:k]
            run[qid] = {self.docids[int(cands[i])]: float(scores[i]) for i in top}
        return run

    # ---- memory ---------------------------------------------------------------------------------

    def memory_bytes(self) -> dict[str, int]:
        """Measured bytes of the parts :func:`memory_model` predicts: ``store``, ``candidates``
        (token index codes + ids + token -> passage map, or the centroid lists), ``offsets``."""
        self._finish()
        if self.config.factory == CENTROIDS:
            candidates = int(self._list_pids.nbytes + self._list_offsets.nbytes)
        else:
            import faiss

            candidates = int(faiss.serialize_index(self._index).nbytes) + 4 * self.num_tokens
        return {"store": int(np.asarray(self._store).nbytes), "candidates": candidates,
                "offsets": int(self._offsets.nbytes)}

    # ---- save / load ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> str | Path:
        """Token index or codec, store, offsets, centroid lists and ids to a local folder or URI."""
        import faiss

        from rankdistill.storage import is_uri, writable_folder

        self._finish()
        with writable_folder(folder) as local:
            if self._index is not None:
                faiss.write_index(self._index, str(local / self.FILE))
            if self._codec is not None:
                faiss.write_index(self._codec, str(local / self.CODEC))
            np.save(local / self.VECTORS, np.asarray(self._store))
            np.save(local / self.OFFSETS, self._offsets)
            if self._list_pids is not None:
                np.save(local / self.LIST_OFFSETS, self._list_offsets)
                np.save(local / self.LIST_PIDS, self._list_pids)
            meta = {"dim": self.dim, "config": asdict(self.config), "docids": self.docids}
            (local / self.META).write_text(json.dumps(meta))
        return folder if is_uri(folder) else Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ColbertIndex:
        """A saved index; a local folder's store is memory-mapped (a URI's copy is read in)."""
        import faiss

        from rankdistill.storage import is_uri, readable_folder

        with readable_folder(folder) as local:
            meta_path = local / cls.META
            if not meta_path.exists():
                raise DataFormatError("not a rankdistill ColBERT index (no metadata file)",
                                      Path(str(folder)) / cls.META)
            meta = json.loads(meta_path.read_text())
            index = cls.__new__(cls)
            index.dim, index.config = int(meta["dim"]), ColbertIndexConfig.from_dict(meta["config"])
            index.docids = list(meta["docids"])
            index._index = faiss.read_index(str(local / cls.FILE)) if (local / cls.FILE).exists() else None
            index._apply_search_params(index._index)
            index._codec = faiss.read_index(str(local / cls.CODEC)) if (local / cls.CODEC).exists() else None
            mmap = None if is_uri(folder) else "r"
            index._store = np.load(local / cls.VECTORS, mmap_mode=mmap)
            index._store_parts, index._pairs, index._owner = [], [], None
            index._offsets = np.load(local / cls.OFFSETS)
            has_lists = (local / cls.LIST_PIDS).exists()
            index._list_offsets = np.load(local / cls.LIST_OFFSETS) if has_lists else None
            index._list_pids = np.load(local / cls.LIST_PIDS, mmap_mode=mmap) if has_lists else None
        indexed = index._index.ntotal if index._index is not None else len(index._store)
        if len(index._offsets) != len(index.docids) + 1 or indexed != index.num_tokens \
                or len(index._store) != index.num_tokens:
            raise DataFormatError(f"index holds {indexed} tokens / {len(index._offsets) - 1} passages "
                                  f"but {len(index.docids)} ids", meta_path)
        return index


def _shard_files(location: str | os.PathLike) -> tuple[Any, list[str]]:
    """``(pyarrow filesystem, sorted *.parquet paths in it)`` of a local folder or a storage URI:
    listed where the shards live, never copied."""
    from pyarrow import fs

    from rankdistill.storage import filesystem

    filesys, base = filesystem(location)
    infos = filesys.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == fs.FileType.File and i.path.endswith(".parquet"))
    if not files:
        raise DataFormatError("no embedding shards (*.parquet) in this folder", Path(str(location)))
    return filesys, files


def _open_shard(filesys, path: str, location):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(filesys.open_input_file(path))
    if "n_tokens" not in parquet.schema_arrow.names:
        raise DataFormatError("these are single-vector shards; use build_dense_index", Path(str(location)) / Path(path).name)
    return parquet


def _shard_dim(location: str | os.PathLike) -> int:
    """The token vectors' dimension, from the first non-empty record batch."""
    filesys, files = _shard_files(location)
    for path in files:
        for batch in _open_shard(filesys, path, location).iter_batches(batch_size=64, columns=["n_tokens", "embedding"]):
            total = int(np.asarray(batch.column("n_tokens").to_numpy(zero_copy_only=False), dtype=np.int64).sum())
            if total:
                return len(batch.column("embedding").values) // total
    raise DataFormatError("no passages in these shards", Path(str(location)))


def _token_batches(location: str | os.PathLike) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """``(docids, float32 [T, dim], offsets [N + 1])`` per Parquet record batch of token shards,
    read from where they live (a local folder or a storage URI), one batch in memory at a time."""
    filesys, files = _shard_files(location)
    for path in files:
        for batch in _open_shard(filesys, path, location).iter_batches(batch_size=4096):
            counts = np.asarray(batch.column("n_tokens").to_numpy(zero_copy_only=False), dtype=np.int64)
            values = batch.column("embedding").values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            total = int(counts.sum())
            dim = values.size // max(total, 1)
            yield ([str(d) for d in batch.column("docid").to_pylist()], values.reshape(total, dim),
                   np.concatenate([[0], np.cumsum(counts)]))


def shard_token_counts(location: str | os.PathLike) -> list[int]:
    """Token vectors per shard file (reads the ``n_tokens`` column only)."""
    filesys, files = _shard_files(location)
    counts = []
    for path in files:
        parquet = _open_shard(filesys, path, location)
        counts.append(sum(int(np.asarray(b.column("n_tokens").to_numpy(zero_copy_only=False)).sum())
                          for b in parquet.iter_batches(batch_size=65536, columns=["n_tokens"])))
    return counts


def sample_tokens(location: str | os.PathLike, size: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``(float32 [min(size, T), dim] sample, T)``: a seeded uniform sample without replacement of
    the token vectors of every shard (``T`` in all), in shard order. A first pass counts tokens
    from the ``n_tokens`` column; the second reads batch by batch and keeps the drawn rows, so
    memory holds the sample and one batch."""
    total = sum(shard_token_counts(location))
    take = min(int(size), total)
    chosen = np.sort(np.random.default_rng(seed).choice(total, take, replace=False)) if take < total else None
    parts, seen = [], 0
    for _, matrix, _ in _token_batches(location):
        if chosen is None:
            parts.append(matrix.copy())
        else:
            lo, hi = np.searchsorted(chosen, [seen, seen + len(matrix)])
            if hi > lo:
                parts.append(matrix[chosen[lo:hi] - seen])
        seen += len(matrix)
    dim = parts[0].shape[1] if parts else 0
    return (np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)), total


def expected_tokens_per_passage(index: ColbertIndex) -> float:
    """Mean stored tokens per passage (the memory model's input)."""
    return index.num_tokens / max(index.size, 1)


