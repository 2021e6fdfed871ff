"""The platform on a real two-node Ray cluster (all on 127.0.0.1), as ``cluster.yaml`` sets one up:
a head with 0 CPUs (drivers only), one worker node that cannot see the head's disk (a tmpfs over
the folder holding the tiny backbone, in the worker node's own mount namespace), an MLflow
tracking server whose artifacts are proxied to S3, and an S3-compatible server (moto). Two
``train_reranker`` jobs, a ``label`` job and a ``pairdistill`` job (its teachers: the mono
student just trained, read from S3, and a duo model in S3; its student on the head's disk only)
go through ``ray job submit`` with Ray Train storage, outputs and the label store on ``s3://``; every run, metric, artifact and model version is then
found through the MLflow server, a model version loads through ``mlflow.pyfunc``, and the MLflow
UI's compare view of the two training runs is rendered in headless Chromium.

The test stops only what it started: the nodes' process groups, the MLflow server's, moto's thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from ray_cluster import LocalCluster, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "rankdistill"
CHROMIUM = ("chromium-headless-shell", "chromium", "chromium-browser")


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with one bucket; the AWS_* variables that reach it."""
    pytest.importorskip("moto.server", reason="needs moto's server mode: pip install 'moto[server]'")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "MLFLOW_S3_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # this process reads the bucket too (boto3, pyarrow)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(s3, tmp_path_factory):
    """``mlflow server`` on 127.0.0.1, artifacts proxied to s3://rankdistill/mlflow; stopped by PID."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    argv = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{BUCKET}/mlflow"]
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env={**os.environ, **s3}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the MLflow server did not answer in 180 s"
            time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Head (0 CPUs) + a worker node (2 CPUs) that sees ``head_disk`` as an empty tmpfs."""
    head_disk = tmp_path_factory.mktemp("head-disk")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    for key in ("MLFLOW_TRACKING_URI", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "AWS_ENDPOINT_URL"):
        cluster.env.pop(key, None)  # jobs get what they need from the runtime env, as on a cluster
    try:
        cluster.start_head(num_cpus=0)
        cluster.add_node(num_cpus=2, hide=head_disk)
        yield cluster, head_disk
    finally:
        cluster.stop()


def _tiny_backbone(folder: Path) -> Path:
    from test_train_reranker_job import _tiny

    return _tiny(folder)


def _objects(prefix: str) -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_jobs_on_two_nodes_log_everything_to_the_mlflow_server(two_nodes, mlflow_server, s3, tmp_path: Path):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    cluster, head_disk = two_nodes
    backbone = _tiny_backbone(head_disk)
    # the worker node (the only one with CPUs) cannot open the backbone's folder: only the object
    # store can bring the backbone there
    probe = subprocess.run([sys.executable, "-c", _PROBE, cluster.gcs, str(backbone / "config.json")],
                           env=cluster.env, capture_output=True, text=True, timeout=300, check=False)
    assert "driver True worker False" in probe.stdout, probe.stdout[-2000:] + probe.stderr[-2000:]
    # a folder on the head's disk as Ray Train storage is refused early, saying what to set
    assert "ConfigError" in probe.stdout and "1 of the cluster's 2 nodes cannot see" in probe.stdout
    assert "set training.storage_path to a storage URI" in probe.stdout, probe.stdout

    env_vars = {**s3, "MLFLOW_TRACKING_URI": mlflow_server, "RANKDISTILL_DATA": str(REPO.parent / "shared" / "data"),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runtime_env = json.dumps({"env_vars": env_vars})
    tiny = ["student.options={query_length: 16, passage_length: 32}", f"student.backbone={backbone}",
            "training.num_workers=1", "training.batch_size=2", "training.max_steps=2", "training.log_every=1",
            "evaluation.max_queries=3", "evaluation.rerank.depth=5", "evaluation.rerank.num_actors=1",
            "evaluation.rerank.batch_size=8"]
    train = [
        (f"python jobs/train_reranker.py --config configs/train_reranker-mono.yaml {_quote(tiny)} "
         f"training.storage_path=s3://{BUCKET}/ray_train output_dir=s3://{BUCKET}/out/mono "
         "tracking.register_model=tiny-mono"),
        (f"python jobs/train_reranker.py --config configs/train_reranker-set-encoder.yaml {_quote(tiny)} "
         f"output_dir=s3://{BUCKET}/out/set-encoder tracking.register_model=null"),
        # the trained mono student (read from s3 by the actor on the worker node) labels pointwise
        (f"python jobs/label.py --config configs/label.yaml teacher.id=tiny-mono teacher.template=monot5 "
         "'teacher.template_overrides={truncation: {unit: words}}' teacher.backend.name=reranker "
         f"teacher.backend.model=s3://{BUCKET}/out/mono/model teacher.backend.device=cpu dataset.max_queries=2 "
         "candidates.k=4 pointwise.top_k=4 pipeline.num_actors=1 pipeline.progress=false "
         f"store=s3://{BUCKET}/labels output_dir=s3://{BUCKET}/out/label"),
    ]
    # PairDistill: student folder on the head's disk (reaches the worker node through the object
    # store), teachers in S3 (the mono trained above, a tiny duo uploaded here), everything it
    # writes in S3: embedding shards (written by the encoder actor on the worker node), indexes,
    # models, Ray Train checkpoints, labels
    from model_fixtures import tiny_reranker
    from rankdistill.storage import copy_folder

    student = head_disk / "student"
    tiny_reranker("bi-encoder", pooling="mean", similarity="dot").save_pretrained(student)
    tiny_reranker("duo").save_pretrained(tmp_path / "duo")
    copy_folder(tmp_path / "duo", f"s3://{BUCKET}/models/duo")
    pairdistill = [
        f"student.init_from={student}", "pointwise_teacher.id=tiny-mono",
        f"pointwise_teacher.backend={{name: reranker, model: s3://{BUCKET}/out/mono/model}}",
        "pairwise_teacher.id=tiny-duo", f"pairwise_teacher.backend={{name: reranker, model: s3://{BUCKET}/models/duo}}",
        "iterations=1", "splits.dev_queries=4", "splits.max_train_queries=8", "splits.max_test_queries=4",
        "candidates.k=6", "candidates.eval_depth=100", "pointwise.top_k=6",  # R@100 needs 100
        "pairwise={top_k: 6, delta: 3, pairs_per_query: 3, seed: 0}", "examples.passages_per_query=4",
        "training.max_steps=2", "training.batch_size=2", "training.log_every=1", "training.cpus_per_worker=1",
        "pipeline.progress=false",
        f"label_store=s3://{BUCKET}/pairdistill-labels", f"output_dir=s3://{BUCKET}/out/pairdistill",
        "tracking.register_model=tiny-pairdistill",
    ]
    train.append(f"python jobs/pairdistill.py --config configs/quickstart.yaml {_quote(pairdistill)}")
    proc = cluster.submit(["bash", "-c", " && ".join(train)], working_dir=REPO, runtime_env_json=runtime_env,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]

    # outputs, Ray Train checkpoints and labels are in the bucket, not on a node's disk
    assert "out/mono/model/config.json" in _objects("out/mono/")
    assert {"out/mono/summary.json", "out/mono/evaluation.json", "out/mono/rerank.trec"} <= set(_objects("out/mono/"))
    assert any(k.endswith("training_state.json") for k in _objects("ray_train/train/"))
    assert any(k.endswith("training_state.json") for k in _objects("out/set-encoder/ray_train/"))
    labels = [k for k in _objects("labels/pointwise/") if k.endswith(".parquet")]
    assert labels

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("train_reranker")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"train_reranker mono demo", "train_reranker set-encoder demo"}, set(runs)
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert 0.0 <= run.data.metrics["test/nDCG_at_10"] <= 1.0
        assert "first_stage/nDCG_at_10" in run.data.metrics
        # rank 0 on the worker node logged the loss of every step into the server's run
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "runs", "evaluation", "plots"} <= artifacts, artifacts
    # the artifacts went through the server to S3
    assert any(k.endswith("evaluation.json") for k in _objects("mlflow/"))
    mono = runs["train_reranker mono demo"]
    version = client.get_model_version("tiny-mono", "1")
    assert version.run_id == mono.info.run_id and version.tags["architecture"] == "mono"
    assert float(version.tags["nDCG_at_10"]) == pytest.approx(mono.data.metrics["test/nDCG_at_10"], abs=1e-4)

    # the label job's run: its counts agree with the store the actor wrote into on S3
    from rankdistill.teachers.store import LabelStore

    stored = LabelStore(f"s3://{BUCKET}/labels").read("pointwise", teacher="tiny-mono")
    (label_run,) = client.search_runs([client.get_experiment_by_name("label").experiment_id])
    assert label_run.info.run_name.startswith("label pointwise tiny-mono demo")
    assert label_run.data.metrics["stored_labels"] == len(stored) == 2 * 4
    assert {a.path for a in client.list_artifacts(label_run.info.run_id, "labels")} == {"labels/label_summary.json"}

    # the registered version loads through mlflow.pyfunc and scores like the student in the bucket
    from rankdistill.models import load_reranker
    from rankdistill.storage import readable_folder

    model = _load_pyfunc(mlflow_server, "models:/tiny-mono/1")
    frame = pd.DataFrame({"query": ["vitamin d"] * 2, "passage": ["vitamin d deficiency", "a cat purrs"]})
    with readable_folder(f"s3://{BUCKET}/out/mono/model") as folder:
        expected = load_reranker(folder).score("vitamin d", list(frame.passage))
    assert model.predict(frame) == pytest.approx(expected, abs=1e-5)

    # the PairDistill job: everything it wrote is in the bucket, its runs and model on the server
    written = set(_objects("out/pairdistill/"))
    for name in ("summary.json", "table.txt", "iteration-0/index/index.faiss", "iteration-1/index/index.faiss",
                 "iteration-1/model/config.json", "iteration-1/test.trec"):
        assert f"out/pairdistill/{name}" in written, sorted(written)
    assert any(k.startswith("out/pairdistill/iteration-1/embeddings/") and k.endswith(".parquet") for k in written)
    assert any(k.endswith("training_state.json") for k in _objects("out/pairdistill/ray_train/"))
    assert [k for k in _objects("pairdistill-labels/pairwise/") if k.endswith(".parquet")]
    pd_experiment = client.get_experiment_by_name("pairdistill")
    pd_runs = client.search_runs([pd_experiment.experiment_id])
    (pd_parent,) = [r for r in pd_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in pd_runs if r.data.tags.get("mlflow.parentRunId") == pd_parent.info.run_id]
    assert sorted(r.data.tags["iteration"] for r in children) == ["0", "1"]
    trained = next(r for r in children if r.data.tags["iteration"] == "1")
    assert [m.step for m in client.get_metric_history(trained.info.run_id, "train_loss")] == [1, 2]
    pd_version = client.get_model_version("tiny-pairdistill", "1")
    assert pd_version.tags["parent_run"] == pd_parent.info.run_id
    assert pd_version.tags["model_dir"].startswith(f"s3://{BUCKET}/out/pairdistill/iteration-")
    encoder = _load_pyfunc(mlflow_server, "models:/tiny-pairdistill/1")
    vectors = encoder.predict(pd.DataFrame({"text": ["vitamin d"], "kind": ["query"]}))
    with readable_folder(pd_version.tags["model_dir"]) as folder:
        from rankdistill.models import load_student

        expected = load_student(folder).encode_queries(["vitamin d"])[0].tolist()
    assert np.asarray(vectors)[0].tolist() == pytest.approx(expected, abs=1e-5)

    _compare_view(mlflow_server, experiment.experiment_id, list(runs.values()), tmp_path)


def _load_pyfunc(server: str, uri: str):
    """``mlflow.pyfunc.load_model(uri)`` through the tracking server, leaving no tracking URI set."""
    import mlflow.pyfunc

    mlflow.set_tracking_uri(server)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


_PROBE = """
import os, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
sees = ray.remote(num_cpus=1)(os.path.exists)
print("driver", os.path.exists(sys.argv[2]), "worker", ray.get(sees.remote(sys.argv[2])))
from rankdistill.ray_runtime import check_shared_folder
try:  # what fit() does with a local training.storage_path before Ray Train starts
    check_shared_folder(os.path.dirname(sys.argv[2]), "training.storage_path")
except Exception as error:
    print(type(error).__name__, error)
"""


def _quote(overrides: list[str]) -> str:
    return " ".join(f"'{o}'" for o in overrides)


def _compare_view(uri: str, experiment_id: str, runs: list, tmp_path: Path) -> None:
    """The MLflow UI's compare view of ``runs`` in headless Chromium: screenshot + rendered DOM."""
    browser = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if browser is None:
        pytest.skip("the MLflow UI check needs headless Chromium (apt-get install -y chromium-headless-shell; "
                    ".ci/run installs it)")
    ids = json.dumps([r.info.run_id for r in runs], separators=(",", ":"))
    url = f"{uri}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment_id])}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1600,1200", "--virtual-time-budget=30000"]
    with tempfile.TemporaryDirectory(prefix="rd-chromium-") as profile:
        shot = tmp_path / "mlflow-compare-runs.png"
        subprocess.run([browser, *flags, f"--user-data-dir={profile}/a", f"--screenshot={shot}", url],
                       capture_output=True, timeout=180, check=False)
        dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}/b", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180, check=False)
    (tmp_path / "mlflow-compare-runs.html").write_text(dom.stdout)
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot: {dom.stderr[-2000:]}"
    for run in runs:
        assert run.info.run_name in dom.stdout, f"{run.info.run_name} not in the compare view ({tmp_path})"
        assert "test/nDCG_at_10" in dom.stdout
        value = run.data.metrics["test/nDCG_at_10"]
        shown = {f"{value:.3f}", f"{value:.4f}", f"{value:.4g}", str(round(value, 3)), str(value)}
        assert any(text in dom.stdout for text in shown), f"nDCG@10 {value} not in the compare view ({tmp_path})"
