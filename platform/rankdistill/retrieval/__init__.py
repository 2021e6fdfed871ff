"""First stage and indexes: BM25 (bm25s), faiss dense indexes (any ``index_factory`` string),
ColBERT token index with exact MaxSim, corpus encoding on a Ray Data actor pool."""

from rankdistill.retrieval.bm25 import BM25Config, BM25Index
from rankdistill.retrieval.colbert_index import ColbertIndex, ColbertIndexConfig
from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig
from rankdistill.retrieval.dense_retrieve import retrieve
from rankdistill.retrieval.encode import (
    EmbeddingShards,
    EncodeConfig,
    build_dense_index,
    encode_corpus,
    read_embedding_shards,
)

__all__ = [
    "BM25Config",
    "BM25Index",
    "ColbertIndex",
    "ColbertIndexConfig",
    "DenseIndex",
    "DenseIndexConfig",
    "EmbeddingShards",
    "EncodeConfig",
    "build_dense_index",
    "encode_corpus",
    "read_embedding_shards",
    "retrieve",
]
