"""Token-level faiss index for ColBERT with exact MaxSim re-scoring (ColBERTv1's end-to-end
retrieval, Khattab & Zaharia 2020 §3.6).

1. Every passage token vector (punctuation dropped, as the model's ``encode_passages``) goes into
   one faiss index (any ``index_factory`` string; inner product; default ``"Flat"``, for large
   corpora e.g. ``"IVF4096,PQ32"``), with a token -> passage map.
2. Search: each query token asks faiss for its ``candidates_per_token`` nearest passage tokens;
   the union of their passages is the candidate set.
3. Every candidate is re-scored **exactly** with MaxSim over its full-precision token vectors
   (``rankdistill.models.maxsim``, the code the model trains with), and the top k are returned.

**PLAID is not implemented**: no centroid interaction or pruning, no residual compression
(ColBERTv2 / PLAID, Santhanam et al. 2022), so the index keeps every token vector in float32
(``vectors.npy``, memory-mapped on load). With a ``Flat`` index and enough candidates the result
equals brute-force MaxSim over the whole corpus.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rankdistill.data.records import Run
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.models.maxsim import maxsim


@dataclass
class ColbertIndexConfig:
    """Args:
    factory: faiss ``index_factory`` string for the token vectors (inner product).
    search_params: ``faiss.ParameterSpace`` string (e.g. ``"nprobe=32"``).
    candidates_per_token: faiss hits per query token (ColBERT's k').
    rescore_batch: candidate passages re-scored per MaxSim call.
    """

    factory: str = "Flat"
    search_params: str | None = None
    candidates_per_token: int = 64
    rescore_batch: int = 256


class ColbertIndex:
    """``ColbertIndex(dim).add(docids, token_vectors)``, ``search(qids, query_vectors, k)``,
    ``save(folder_or_uri)`` / ``ColbertIndex.load(folder_or_uri)``."""

    FILE = "tokens.faiss"
    VECTORS = "vectors.npy"
    OFFSETS = "offsets.npy"
    META = "rankdistill_colbert.json"

    def __init__(self, dim: int, config: ColbertIndexConfig | None = None):
        self.dim = int(dim)
        self.config = config or ColbertIndexConfig()
        self.docids: list[str] = []
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._index = self._make()

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
        if self.config.search_params:
            import faiss

            faiss.ParameterSpace().set_index_parameters(index, self.config.search_params)

    @property
    def size(self) -> int:
        """Number of passages."""
        return len(self.docids)

    @property
    def num_tokens(self) -> int:
        return int(self._offsets[-1])

    def add(self, docids: Sequence[str], token_vectors: Sequence[np.ndarray | torch.Tensor] | np.ndarray,
            offsets: np.ndarray | None = None) -> None:
        """Add passages: a list of ``[n_i, dim]`` arrays, or one ``[T, dim]`` matrix with
        ``offsets [N + 1]`` (as :class:`~rankdistill.retrieval.encode.EmbeddingShards`).
        An untrained index (IVF, PQ) is trained on the first batch added."""
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
        if not self._index.is_trained:
            try:
                self._index.train(matrix)
            except RuntimeError as exc:
                raise ConfigError(f"faiss could not train '{self.config.factory}' on {len(matrix)} token "
                                  f"vectors: {str(exc).strip().splitlines()[-1]}", "index.factory") from exc
        self._index.add(matrix)
        self._vectors = np.concatenate([np.asarray(self._vectors), matrix])
        self._offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(counts)])
        self.docids.extend(str(d) for d in docids)

    @classmethod
    def from_shards(cls, location: str | os.PathLike, config: ColbertIndexConfig | None = None) -> ColbertIndex:
        """Index the ColBERT token shards written by :func:`~rankdistill.retrieval.encode.encode_corpus`."""
        from rankdistill.retrieval.encode import read_embedding_shards

        shards = read_embedding_shards(location)
        if not shards.token_level:
            raise DataFormatError("these are single-vector shards; use build_dense_index", Path(str(location)))
        index = cls(shards.embeddings.shape[1], config)
        index.add(shards.docids, shards.embeddings, shards.offsets)
        return index

    # ---- search ---------------------------------------------------------------------------------

    def _token_owner(self) -> np.ndarray:
        if getattr(self, "_owner", None) is None or len(self._owner) != self.num_tokens:
            self._owner = np.repeat(np.arange(self.size, dtype=np.int64), np.diff(self._offsets))
        return self._owner

    def candidates(self, query_vectors: np.ndarray) -> np.ndarray:
        """Passage indices whose tokens are among each query token's nearest (``[Nq, dim]`` in)."""
        q = np.ascontiguousarray(np.asarray(query_vectors, dtype=np.float32))
        k = min(self.config.candidates_per_token, max(self.num_tokens, 1))
        _, hits = self._index.search(q, k)
        hits = hits[hits >= 0]
        return np.unique(self._token_owner()[hits])

    def rescore(self, query_vectors: np.ndarray | torch.Tensor, passages: np.ndarray) -> np.ndarray:
        """Exact MaxSim of one query (``[Nq, dim]``, every row counts) against passages (indices)."""
        q = torch.as_tensor(np.asarray(query_vectors, dtype=np.float32))[None]
        q_mask = torch.ones(q.shape[:2], dtype=torch.bool)
        out = np.empty(len(passages), dtype=np.float32)
        for start in range(0, len(passages), self.config.rescore_batch):
            chunk = passages[start : start + self.config.rescore_batch]
            lengths = self._offsets[chunk + 1] - self._offsets[chunk]
            width = int(lengths.max())
            docs = np.zeros((len(chunk), width, self.dim), dtype=np.float32)
            mask = np.zeros((len(chunk), width), dtype=bool)
            for row, (p, n) in enumerate(zip(chunk, lengths, strict=True)):
                docs[row, :n] = self._vectors[self._offsets[p] : self._offsets[p] + n]
                mask[row, :n] = True
            scores = maxsim(q, q_mask, torch.from_numpy(docs), torch.from_numpy(mask), paired=False)[0]
            out[start : start + len(chunk)] = scores.numpy()
        return out

    def search(self, qids: Sequence[str], query_vectors: np.ndarray | torch.Tensor, k: int = 100) -> Run:
        """``query_vectors``: ``[Q, Nq, dim]`` (``ColBERT.encode_queries``). Returns a Run with the
        exact MaxSim scores of the top k candidates per query."""
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim != 3 or queries.shape[2] != self.dim or len(queries) != len(qids):
            raise DataFormatError(f"query vectors must be [{len(qids)}, Nq, {self.dim}], got {queries.shape}")
        run = Run()
        for qid, q in zip(qids, queries, strict=True):
            cands = self.candidates(q)
            if len(cands) == 0:
                run[qid] = {}
                continue
            scores = self.rescore(q, cands)
            top = np.argsort(-scores, kind="stable")[:k]
            run[qid] = {self.docids[int(cands[i])]: float(scores[i]) for i in top}
        return run

    # ---- save / load ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> str | Path:
        """Token index, vectors, offsets and ids to a local folder or storage URI."""
        import faiss

        from rankdistill.storage import is_uri, writable_folder

        with writable_folder(folder) as local:
            faiss.write_index(self._index, str(local / self.FILE))
            np.save(local / self.VECTORS, np.asarray(self._vectors))
            np.save(local / self.OFFSETS, self._offsets)
            meta = {"dim": self.dim, "config": asdict(self.config), "docids": self.docids}
            (local / self.META).write_text(json.dumps(meta))
        return folder if is_uri(folder) else Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ColbertIndex:
        import faiss

        from rankdistill.storage import is_uri, readable_folder

        with readable_folder(folder) as local:
            meta_path = local / cls.META
            if not meta_path.exists():
                raise DataFormatError("not a rankdistill ColBERT index (no metadata file)",
                                      Path(str(folder)) / cls.META)
            meta = json.loads(meta_path.read_text())
            index = cls.__new__(cls)
            index.dim, index.config = int(meta["dim"]), ColbertIndexConfig(**meta["config"])
            index.docids = list(meta["docids"])
            index._index = faiss.read_index(str(local / cls.FILE))
            index._apply_search_params(index._index)
            # a local folder is memory-mapped; a URI's temporary copy is read into memory
            index._vectors = np.load(local / cls.VECTORS, mmap_mode=None if is_uri(folder) else "r")
            index._offsets = np.load(local / cls.OFFSETS)
            index._owner = None
        if len(index._offsets) != len(index.docids) + 1 or index._index.ntotal != index.num_tokens:
            raise DataFormatError(f"index holds {index._index.ntotal} tokens / {len(index._offsets) - 1} passages "
                                  f"but {len(index.docids)} ids", meta_path)
        return index
