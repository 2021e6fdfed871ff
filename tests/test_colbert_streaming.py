"""ColbertIndex.from_shards streams token shards from where they live (issue 28, items 1, 3, 5):
no local copy of a storage folder, faiss trained on a sample drawn across every shard, a refusal
under faiss's 39 vectors per list, and ``ndocs`` following ``k``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rankdistill.errors import ConfigError
from rankdistill.retrieval.colbert_index import (
    ColbertIndex,
    ColbertIndexConfig,
    sample_tokens,
    shard_token_counts,
)

DIM = 8


@pytest.fixture
def s3_bucket(monkeypatch):
    """moto's S3 server on 127.0.0.1 with a bucket of its own; moto keeps buckets in the process,
    so the server's state is reset at the end (other tests list their buckets' objects)."""
    pytest.importorskip("moto.server", reason="needs moto's server mode: pip install 'moto[server]'")
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="rankdistill-shards")
    try:
        yield "s3://rankdistill-shards"
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()
# three shards of 40, 30 and 50 passages with 2..5 tokens each
SHARDS = (40, 30, 50)


def _write_shards(folder: Path) -> tuple[list[str], np.ndarray, list[int]]:
    """Token vectors whose first coordinate is the shard number (0, 1, 2), the rest random."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    docids, matrices, tokens = [], [], []
    for shard, passages in enumerate(SHARDS):
        counts = rng.integers(2, 6, size=passages)
        vectors = [np.concatenate([np.full((n, 1), float(shard)), rng.normal(size=(n, DIM - 1))], axis=1).astype(np.float32)
                   for n in counts]
        ids = [f"s{shard}-p{i}" for i in range(passages)]
        pq.write_table(pa.table({
            "docid": pa.array(ids, pa.string()),
            "n_tokens": pa.array([int(n) for n in counts], pa.int32()),
            "embedding": pa.array([v.reshape(-1) for v in vectors], pa.list_(pa.float32())),
        }), folder / f"shard-{shard:03d}.parquet")
        docids += ids
        matrices += vectors
        tokens.append(int(counts.sum()))
    return docids, np.concatenate(matrices), tokens


def _upload(local: Path, uri: str) -> None:
    from rankdistill.storage import copy_folder

    copy_folder(local, uri)


def test_sample_is_uniform_across_every_shard_and_of_the_configured_size(tmp_path: Path):
    _, matrix, tokens = _write_shards(tmp_path / "shards")
    assert shard_token_counts(tmp_path / "shards") == tokens
    sample, total = sample_tokens(tmp_path / "shards", 150, seed=3)
    assert total == sum(tokens) and sample.shape == (150, DIM)
    shards_hit = set(sample[:, 0].astype(int).tolist())
    assert shards_hit == {0, 1, 2}  # not the first batch only
    # every sampled row is a row of the corpus, no row twice, and the draw is seeded
    rows = {tuple(r) for r in matrix.round(5).tolist()}
    assert all(tuple(r) in rows for r in sample.round(5).tolist())
    assert len({tuple(r) for r in sample.tolist()}) == 150
    again, _ = sample_tokens(tmp_path / "shards", 150, seed=3)
    assert np.array_equal(sample, again)
    # asking for more than the corpus holds gives the whole corpus
    everything, _ = sample_tokens(tmp_path / "shards", 10_000)
    assert np.array_equal(everything, matrix)


def test_from_shards_on_s3_streams_without_a_local_copy(s3_bucket, tmp_path: Path, monkeypatch):
    from rankdistill import storage

    docids, matrix, tokens = _write_shards(tmp_path / "shards")
    _upload(tmp_path / "shards", f"{s3_bucket}/shards")
    config = ColbertIndexConfig(factory="centroids", storage="IVF4,SQ8", nprobe=4, ndocs=1000, train_tokens=200)
    local = ColbertIndex.from_shards(tmp_path / "shards", config)

    def no_copy(*args, **kwargs):
        raise AssertionError("readable_folder copies the shard folder to local disk")

    monkeypatch.setattr(storage, "readable_folder", no_copy)
    remote = ColbertIndex.from_shards(f"{s3_bucket}/shards", config)
    assert remote.docids == docids and remote.num_tokens == sum(tokens) == len(matrix)
    assert remote.train_tokens_used == 200  # the configured size, drawn across all shards
    q = matrix[[0, 5, 9]]
    assert np.array_equal(remote.candidates(q, 10), local.candidates(q, 10))
    run_remote = remote.search(["q"], q[None], k=5)
    run_local = local.search(["q"], q[None], k=5)
    assert run_remote == run_local


def test_too_few_training_tokens_for_the_lists_is_refused_naming_both_keys(tmp_path: Path):
    _write_shards(tmp_path / "shards")
    # 16 lists want 39 x 16 = 624 training vectors; the corpus has ~420 tokens
    config = ColbertIndexConfig(factory="centroids", storage="IVF16,SQ8", train_tokens=100_000)
    with pytest.raises(ConfigError, match=r"index.train_tokens.*index.factory / index.storage") as info:
        ColbertIndex.from_shards(tmp_path / "shards", config)
    assert "under the 39 per list it needs (624)" in str(info.value)


def test_ndocs_follows_k():
    index = ColbertIndex(DIM, ColbertIndexConfig(factory="centroids", storage="IVF4,SQ8", ndocs=1024))
    assert index.ndocs_for(10) == 1024 and index.ndocs_for(256) == 1024 and index.ndocs_for(1000) == 4000
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=(3, DIM)).astype(np.float32) for _ in range(60)]
    few = ColbertIndex(DIM, ColbertIndexConfig(factory="centroids", storage="IVF4,SQ8", nprobe=4, ndocs=2))
    few.add([f"p{i}" for i in range(60)], vectors)
    q = vectors[0]
    assert len(few.candidates(q)) == 2  # k unknown: ndocs
    assert len(few.candidates(q, k=5)) == 20  # 4 x k
    assert len(few.search(["q"], q[None], k=5)["q"]) == 5
