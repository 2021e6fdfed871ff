"""A faiss index over any encoder's embeddings (inner product): flat, HNSW or IVF.

On a machine with ``faiss-gpu`` (the ``gpu`` extra) and visible GPUs the index is moved to all
GPUs for search; otherwise it stays on the CPU. Save/load keeps the document ids beside the index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankdistill.data.records import Run
from rankdistill.errors import ConfigError, DataFormatError


@dataclass
class DenseIndexConfig:
    kind: str = "flat"  # flat | hnsw | ivf
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 200
    ivf_nlist: int = 256
    ivf_nprobe: int = 16
    use_gpu: bool = True  # only takes effect when faiss has GPUs


def _faiss():
    """faiss comes from exactly one of two extras, which install the same ``faiss`` module:
    ``cpu`` (faiss-cpu) or ``gpu`` (faiss-gpu-cu12)."""
    from rankdistill.errors import require

    return require("faiss", "cpu", "A dense index (faiss; on GPU machines use the 'gpu' extra instead)")


class DenseIndex:
    """Add ``(docids, embeddings)``, search ``(qids, embeddings)``, save and load."""

    FILE = "index.faiss"
    META = "rankdistill_dense.json"

    def __init__(self, dim: int, config: DenseIndexConfig | None = None):
        self.dim = int(dim)
        self.config = config or DenseIndexConfig()
        self.docids: list[str] = []
        self._index = self._make(self.dim, self.config)
        self._search_index = None

    @staticmethod
    def _make(dim: int, config: DenseIndexConfig):
        faiss = _faiss()
        if config.kind == "flat":
            return faiss.IndexFlatIP(dim)
        if config.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
            return index
        if config.kind == "ivf":
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, config.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = config.ivf_nprobe
            return index
        raise ConfigError(f"unknown dense index kind '{config.kind}' (flat, hnsw, ivf)", "index.kind")

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def _check(self, embeddings: np.ndarray, what: str) -> np.ndarray:
        array = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise DataFormatError(f"{what} must have shape (n, {self.dim}), got {array.shape}")
        return array

    def add(self, docids: Sequence[str], embeddings: np.ndarray) -> None:
        array = self._check(embeddings, "document embeddings")
        if len(docids) != len(array):
            raise DataFormatError(f"{len(docids)} document ids for {len(array)} embeddings")
        if not self._index.is_trained:
            if len(array) < self.config.ivf_nlist:
                raise ConfigError(
                    f"IVF with nlist={self.config.ivf_nlist} needs at least that many vectors to train, "
                    f"got {len(array)}",
                    "index.ivf_nlist",
                )
            self._index.train(array)
        self._index.add(array)
        self.docids.extend(docids)
        self._search_index = None

    def _searcher(self):
        if self._search_index is None:
            faiss = _faiss()
            gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
            if self.config.use_gpu and gpus > 0 and self.config.kind != "hnsw":  # pragma: no cover - GPU only
                self._search_index = faiss.index_cpu_to_all_gpus(self._index)
            else:
                self._search_index = self._index
        return self._search_index

    def search_arrays(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        array = self._check(embeddings, "query embeddings")
        return self._searcher().search(array, min(k, max(self.size, 1)))

    def search(self, qids: Sequence[str], embeddings: np.ndarray, k: int = 100) -> Run:
        scores, indices = self.search_arrays(embeddings, k)
        run = Run()
        for qid, idx_row, score_row in zip(qids, indices, scores, strict=True):
            run[qid] = {self.docids[int(i)]: float(s) for i, s in zip(idx_row, score_row) if i >= 0}
        return run

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self._index, str(folder / self.FILE))
        meta = {"dim": self.dim, "config": self.config.__dict__, "docids": self.docids}
        (folder / self.META).write_text(json.dumps(meta))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DenseIndex:
        folder = Path(folder)
        meta_path = folder / cls.META
        if not meta_path.exists():
            raise DataFormatError("not a rankdistill dense index (no metadata file)", meta_path)
        meta = json.loads(meta_path.read_text())
        index = cls(meta["dim"], DenseIndexConfig(**meta["config"]))
        index._index = _faiss().read_index(str(folder / cls.FILE))
        index.docids = list(meta["docids"])
        if index.size != len(index.docids):
            raise DataFormatError(f"index holds {index.size} vectors but {len(index.docids)} ids", meta_path)
        return index
