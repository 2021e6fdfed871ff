"""A faiss index over any encoder's embeddings (inner product): flat, HNSW, IVF, or any
``faiss.index_factory`` string (``"Flat"``, ``"HNSW32"``, ``"IVF1024,PQ32"``, ``"OPQ16,IVF256,PQ16"``).

On a machine with ``faiss-gpu`` (the ``gpu`` extra) and visible GPUs the index is moved to all
GPUs for search; otherwise it stays on the CPU. Save/load keeps the document ids beside the index,
at a local folder or a storage URI (``retrieval.storage``).
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
    """``factory`` (a ``faiss.index_factory`` string, inner-product metric) overrides ``kind``;
    ``search_params`` is a ``faiss.ParameterSpace`` string applied after building or loading
    (e.g. ``"nprobe=16"``, ``"efSearch=128"``). A factory index searches with ``ivf_nprobe`` lists
    (IVF) and ``hnsw_ef_search`` (HNSW) unless ``search_params`` sets them: faiss's own default,
    nprobe 1, would search one list of the whole index.

    An IVF index needs at least :data:`MIN_POINTS_PER_LIST` training vectors per list (faiss's
    own minimum for its k-means); fewer is a :class:`ConfigError` naming ``index.factory`` or
    ``index.ivf_nlist``."""

    kind: str = "flat"  # flat | hnsw | ivf (ignored when factory is set)
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 200
    ivf_nlist: int = 256
    ivf_nprobe: int = 16
    use_gpu: bool = True  # only takes effect when faiss has GPUs
    factory: str | None = None
    search_params: str | None = None


def _faiss():
    """faiss comes from exactly one of two extras, which install the same ``faiss`` module:
    ``cpu`` (faiss-cpu) or ``gpu`` (faiss-gpu-cu12)."""
    from rankdistill.errors import require

    return require("faiss", "cpu", "A dense index (faiss; on GPU machines use the 'gpu' extra instead)")


#: faiss warns below this many training points per k-means centroid
MIN_POINTS_PER_LIST = 39


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
        if config.factory:
            try:
                index = faiss.index_factory(dim, config.factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as exc:
                raise ConfigError(f"faiss cannot build '{config.factory}' for dimension {dim}: "
                                  f"{str(exc).strip().splitlines()[-1]}", "index.factory") from exc
            DenseIndex._apply_search_params(index, config)
            return index
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

    @staticmethod
    def _apply_search_params(index, config: DenseIndexConfig) -> None:
        if config.factory:
            DenseIndex._apply_defaults(index, config)
        if config.search_params:
            try:
                _faiss().ParameterSpace().set_index_parameters(index, config.search_params)
            except RuntimeError as exc:
                raise ConfigError(f"faiss rejects '{config.search_params}' for this index: "
                                  f"{str(exc).strip().splitlines()[-1]}", "index.search_params") from exc

    @staticmethod
    def _apply_defaults(index, config: DenseIndexConfig) -> None:
        """``ivf_nprobe`` / ``hnsw_ef_search`` on a factory index (``search_params`` may override)."""
        ivf = _ivf_of(index)
        if ivf is not None:
            ivf.nprobe = min(config.ivf_nprobe, ivf.nlist)
        hnsw = _faiss().downcast_index(index) if not hasattr(index, "hnsw") else index
        if hasattr(hnsw, "hnsw"):
            hnsw.hnsw.efSearch = config.hnsw_ef_search

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def _check(self, embeddings: np.ndarray, what: str) -> np.ndarray:
        array = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise DataFormatError(f"{what} must have shape (n, {self.dim}), got {array.shape}")
        return array

    def check_trainable(self, vectors: int) -> None:
        """A :class:`ConfigError` (naming ``index.factory`` or ``index.ivf_nlist``) when an untrained
        index cannot be trained well on ``vectors`` vectors (an IVF index: too few per list). A job
        calls it with its corpus size before any document is encoded."""
        if self._index.is_trained:
            return
        if not self.config.factory and self.config.kind == "ivf" and vectors < self.config.ivf_nlist:
            raise ConfigError(
                f"IVF with nlist={self.config.ivf_nlist} needs at least that many vectors to train, got {vectors}",
                "index.ivf_nlist",
            )
        ivf = _ivf_of(self._index)
        if ivf is not None and vectors < MIN_POINTS_PER_LIST * ivf.nlist:
            key = "index.factory" if self.config.factory else "index.ivf_nlist"
            raise ConfigError(
                f"{vectors} vectors are too few to train {ivf.nlist} IVF lists (faiss needs "
                f"{MIN_POINTS_PER_LIST * ivf.nlist}, {MIN_POINTS_PER_LIST} per list): each list would hold "
                f"~{vectors / ivf.nlist:.1f} documents and a search would see few of them; use 'Flat' or "
                f"at most {vectors // MIN_POINTS_PER_LIST} lists", key)

    def add(self, docids: Sequence[str], embeddings: np.ndarray) -> None:
        array = self._check(embeddings, "document embeddings")
        if len(docids) != len(array):
            raise DataFormatError(f"{len(docids)} document ids for {len(array)} embeddings")
        if not self._index.is_trained:
            self.check_trainable(len(array))
            try:
                self._index.train(array)
            except RuntimeError as exc:
                raise ConfigError(f"faiss could not train '{self.config.factory or self.config.kind}' on "
                                  f"{len(array)} vectors (train on more, or use a smaller index): "
                                  f"{str(exc).strip().splitlines()[-1]}", "index.factory") from exc
        self._index.add(array)
        self.docids.extend(docids)
        self._search_index = None

    def _searcher(self):
        if self._search_index is None:
            faiss = _faiss()
            gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
            hnsw = self.config.kind == "hnsw" if not self.config.factory else "HNSW" in self.config.factory
            if self.config.use_gpu and gpus > 0 and not hnsw:  # pragma: no cover - GPU only
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

    def save(self, folder: str | Path) -> str | Path:
        """Write ``index.faiss`` + metadata to a local folder or a storage URI; returns it."""
        from rankdistill.storage import is_uri, writable_folder

        with writable_folder(folder) as local:
            _faiss().write_index(self._index, str(local / self.FILE))
            meta = {"dim": self.dim, "config": self.config.__dict__, "docids": self.docids}
            (local / self.META).write_text(json.dumps(meta))
        return folder if is_uri(folder) else Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> DenseIndex:
        """Read an index saved by :meth:`save` (local folder or storage URI)."""
        from rankdistill.storage import readable_folder

        with readable_folder(folder) as local:
            meta_path = local / cls.META
            if not meta_path.exists():
                raise DataFormatError("not a rankdistill dense index (no metadata file)", Path(str(folder)) / cls.META)
            meta = json.loads(meta_path.read_text())
            config = DenseIndexConfig(**meta["config"])
            index = cls.__new__(cls)
            index.dim, index.config, index._search_index = int(meta["dim"]), config, None
            index._index = _faiss().read_index(str(local / cls.FILE))
            cls._apply_search_params(index._index, config)
        index.docids = list(meta["docids"])
        if index.size != len(index.docids):
            raise DataFormatError(f"index holds {index.size} vectors but {len(index.docids)} ids", meta_path)
        return index


def _ivf_of(index):
    """The IVF part of a faiss index (``IVF256,PQ32``, ``OPQ16,IVF256,PQ16``, ...), or None."""
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError):
        return None
