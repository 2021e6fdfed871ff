"""First stage and indexes: BM25 (bm25s) and faiss dense indexes."""

from rankdistill.retrieval.bm25 import BM25Config, BM25Index
from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

__all__ = ["BM25Config", "BM25Index", "DenseIndex", "DenseIndexConfig"]
