"""rankdistill.storage and the label store on an S3 URI (moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rankdistill.storage import join, pack_folder, unpack_folder


def test_join_keeps_uris_and_their_query_strings():
    assert join("s3://bucket/out", "model") == "s3://bucket/out/model"
    assert join("s3://bucket/out/", "ray_train", "run") == "s3://bucket/out/ray_train/run"
    assert join("s3://b/o?endpoint_override=h:1", "model") == "s3://b/o/model?endpoint_override=h:1"
    assert join("/tmp/out", "model") == str(Path("/tmp/out/model"))


def test_a_folder_travels_as_bytes(tmp_path: Path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"a": 1}')
    (source / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    copy = unpack_folder(pack_folder(source), tmp_path / "copy")
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == ["config.json", "sub", "sub/weights.bin"]
    assert (copy / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 10


@pytest.fixture
def s3_bucket(monkeypatch):
    pytest.importorskip("moto.server", reason="needs moto's server mode: pip install 'moto[server]'")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="rankdistill-test")
    yield "s3://rankdistill-test"
    server.stop()


def _point(qid: str, docid: str, score: float) -> dict:
    return {"teacher": "t", "template_id": "monot5", "template_hash": "h1", "qid": qid, "docid": docid, "rank": 1,
            "score": score, "logprob_yes": score, "logprob_no": -1.0}


def test_label_store_on_s3_reads_what_it_wrote_earliest_first(s3_bucket: str, tmp_path: Path):
    import boto3
    from rankdistill.storage import copy_folder
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(f"{s3_bucket}/labels")
    assert store.files("pointwise") == [] and store.count("pointwise") == 0
    first = store.write("pointwise", [_point("q1", "d1", -0.5), _point("q1", "d2", -2.0)])
    store.write("pointwise", [_point("q1", "d1", -9.0)])  # a later duplicate key: the earliest wins
    assert str(first).startswith(f"{s3_bucket}/labels/pointwise/part-")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="rankdistill-test")["Contents"]
            if not o["Key"].endswith("/")]  # pyarrow's empty folder markers
    assert len(keys) == 2 and all(k.startswith("labels/pointwise/part-") for k in keys)  # no temporary files
    df = store.read("pointwise")
    assert list(df.docid) == ["d1", "d2"] and list(df.score) == [-0.5, -2.0]
    assert store.unit_keys("pointwise", "t", "h1") == {("q1", "d1"), ("q1", "d2")}
    # the same files, copied to a local folder, are the same store
    copy_folder(f"{s3_bucket}/labels", tmp_path / "labels")
    assert LabelStore(tmp_path / "labels").read("pointwise").equals(df)
    assert os.path.exists(tmp_path / "labels" / "pointwise")


def test_a_replay_recording_is_read_from_s3(s3_bucket: str):
    import boto3
    from rankdistill.errors import DataFormatError
    from rankdistill.teachers.backends.replay import read_recording

    lines = [{"qid": "1", "docids": ["a", "b"], "response": "[2] > [1]"},
             {"qid": "1", "docids": ["a"], "logprobs": {"yes": -0.1, "no": -2.3}}]
    body = "\n".join(json.dumps(line) for line in lines) + "\n"
    boto3.client("s3").put_object(Bucket="rankdistill-test", Key="teacher/rec.jsonl", Body=body.encode())
    responses, logprobs = read_recording(f"{s3_bucket}/teacher/rec.jsonl")
    assert responses == {("1", ("a", "b")): "[2] > [1]"}
    assert logprobs == {("1", ("a",)): {"yes": -0.1, "no": -2.3}}
    boto3.client("s3").put_object(Bucket="rankdistill-test", Key="teacher/bad.jsonl", Body=b'{"qid": "1"}\n')
    with pytest.raises(DataFormatError, match=r"s3://rankdistill-test/teacher/bad.jsonl:1: .*needs .qid. and .docids."):
        read_recording(f"{s3_bucket}/teacher/bad.jsonl")


def test_a_model_folder_in_object_storage_passes_the_pre_ray_check(s3_bucket: str):
    """A teacher / backbone given as an s3:// folder is accepted when it holds config.json, and
    refused naming the key when it does not (the check runs before Ray starts)."""
    import boto3
    from rankdistill.errors import ConfigError
    from rankdistill.models.registry import check_model_folder

    bucket = s3_bucket.removeprefix("s3://").split("/")[0]
    boto3.client("s3").put_object(Bucket=bucket, Key="models/mono/config.json", Body=b"{}")
    check_model_folder(f"s3://{bucket}/models/mono", "teacher.backend.model")
    with pytest.raises(ConfigError, match=r"teacher.backend.model: 's3://.*/models/none' is not a model folder"):
        check_model_folder(f"s3://{bucket}/models/none", "teacher.backend.model")


@pytest.mark.shared_data
def test_the_evaluate_job_writes_its_outputs_to_s3(s3_bucket: str, monkeypatch):
    """``output_dir`` on S3: the run file and the evaluation land in the bucket, and the run read
    back from there scores TREC DL 2019's published BM25 figure (0.5058 nDCG@10, as the local job)."""
    import ir_measures
    from conftest import shared_dataset
    from pyarrow import fs
    from rankdistill.config import load_config
    from rankdistill.storage import readable_folder
    from rankdistill.workflows.evaluate import EvaluateConfig, run_evaluate

    _, data = shared_dataset("trec-dl-2019-passage")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = Path(__file__).resolve().parents[1]
    config = load_config(EvaluateConfig, repo / "configs" / "evaluate-trec-dl-2019.yaml",
                         ["retrieval.run=bm25.trec", f"output_dir={s3_bucket}/evaluate/dl19"])
    run_evaluate(config)
    filesystem, path = fs.FileSystem.from_uri(f"{s3_bucket}/evaluate/dl19")
    names = {info.base_name for info in filesystem.get_file_info(fs.FileSelector(path))}
    assert names == {"run.trec", "evaluation.json"}
    with readable_folder(f"{s3_bucket}/evaluate/dl19") as folder:
        stored = json.loads((folder / "evaluation.json").read_text())
        qrels = {qid: dict(docs) for qid, docs in data.qrels("test").items()}
        measured = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels,
                                              list(ir_measures.read_trec_run(str(folder / "run.trec"))))
    assert round(measured[ir_measures.nDCG @ 10], 4) == 0.5058
    assert round(stored["aggregate"]["nDCG@10"], 4) == 0.5058


def test_publish_exists_and_remove_on_s3(s3_bucket: str, tmp_path: Path):
    from rankdistill.storage import exists, publish, readable_folder, remove_folder

    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text('{"a": 1}')
    (tmp_path / "run" / "table.txt").write_text("nDCG@10 0.5\n")
    target = f"{s3_bucket}/jobs/run"
    assert not exists(target)
    publish(tmp_path / "run" / "model", join(target, "model"))  # a folder
    publish(tmp_path / "run" / "table.txt", join(target, "table.txt"))  # a file
    assert exists(join(target, "model", "config.json")) and exists(join(target, "table.txt"))
    with readable_folder(target) as folder:
        assert (folder / "table.txt").read_text() == "nDCG@10 0.5\n"
        assert json.loads((folder / "model" / "config.json").read_text()) == {"a": 1}
    remove_folder(join(target, "model"))
    assert not exists(join(target, "model", "config.json")) and exists(join(target, "table.txt"))
    remove_folder(join(target, "model"))  # already gone: fine
    # a local target is a plain copy; publishing a folder onto itself does nothing
    publish(tmp_path / "run", tmp_path / "copy")
    assert (tmp_path / "copy" / "model" / "config.json").read_text() == '{"a": 1}'
    publish(tmp_path / "run", tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model", "table.txt"]


def test_folder_digest_follows_names_and_bytes(tmp_path: Path):
    import shutil

    from rankdistill.storage import folder_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "weights.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "a" / "config.json").write_text("{}")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")  # a copy: same student
    (tmp_path / "b" / "weights.bin").write_bytes(b"\x00\x01\x03")
    assert folder_digest(tmp_path / "a") != folder_digest(tmp_path / "b")  # one byte changed
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    (tmp_path / "c" / "config.json").rename(tmp_path / "c" / "other.json")
    assert folder_digest(tmp_path / "a") != folder_digest(tmp_path / "c")  # same bytes, another name


@pytest.mark.shared_data
def test_a_data_root_in_object_storage(s3_bucket: str, tmp_path: Path, monkeypatch):
    """``RANKDISTILL_DATA=s3://...``: a collection is found by name in the bucket, copied once into
    the node's cache, read as the local one is, and copied again when a stored file changes."""
    from conftest import shared_dataset
    from rankdistill.data.datasets import resolve
    from rankdistill.errors import ConfigError
    from rankdistill.storage import copy_folder

    _, local = shared_dataset("cranfield")
    copy_folder(local.root, f"{s3_bucket}/data/cranfield")
    monkeypatch.setenv("RANKDISTILL_DATA", f"/nonexistent:{s3_bucket}/data")
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    spec, folder = resolve("cranfield")
    assert Path(spec.folder).is_relative_to(tmp_path / "cache") and spec.name == "cranfield"
    assert folder.queries("test") == local.queries("test")
    assert folder.qrels("test") == local.qrels("test")
    marker = next((tmp_path / "cache" / "data").glob("*/manifest.json"))
    copied_at = marker.stat().st_mtime_ns
    assert resolve("cranfield")[1].queries("test") == local.queries("test")
    assert marker.stat().st_mtime_ns == copied_at  # unchanged files: not copied again

    # a changed file in the bucket: the next resolve copies the collection again
    import boto3

    lines = (local.root / "queries.jsonl").read_text().splitlines()
    boto3.client("s3").put_object(Bucket=s3_bucket[len("s3://"):], Key="data/cranfield/queries.jsonl",
                                  Body="\n".join(lines[:10]).encode())
    assert len(resolve("cranfield")[1].queries("test")) < len(local.queries("test"))
    # a URI given as the dataset itself; a URI that is not a collection is an error naming the key
    assert resolve(f"{s3_bucket}/data/cranfield")[0].name == "cranfield"
    with pytest.raises(ConfigError, match="not a BEIR collection") as error:
        resolve(f"{s3_bucket}/data/nothing-here", key="dataset")
    assert error.value.key == "dataset"
