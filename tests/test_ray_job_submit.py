"""A real local Ray cluster on 127.0.0.1: `ray start --head`, `ray job submit` of jobs/evaluate.py,
with token authentication on (Ray 2.60's default); the test stops only the cluster it started.

The main job through `ray job submit` (`jobs/pairdistill.py --config configs/quickstart.yaml`, then
its parent run, one child per iteration and a registered version loaded by `mlflow.pyfunc`) is
tested on a two-node cluster with an MLflow server in tests/test_cluster_multinode.py."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from ray_cluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    assert not ray.is_initialized()
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.env.pop("MLFLOW_TRACKING_URI", None)  # the job must use the machine's embedded store
    try:
        cluster.start_head(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_ray_job_submit_evaluate_on_local_cluster(ray_cluster, tmp_path: Path, rankdistill_home: Path):
    out = tmp_path / "job-output"
    env = json.dumps({"env_vars": {"RANKDISTILL_HOME": str(rankdistill_home)}})
    proc = ray_cluster.submit(["python", "jobs/evaluate.py", "--config", "configs/evaluate.yaml",
                               f"output_dir={out}"], working_dir=REPO, runtime_env_json=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "nDCG@10" in proc.stdout and "succeeded" in proc.stdout + proc.stderr
    assert (out / "run.trec").exists() and (out / "evaluation.json").exists()
    assert (rankdistill_home / "mlruns" / "mlflow.db").exists()  # the machine's one store
    env, address = ray_cluster.env, ray_cluster.dashboard
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO)]

    # without the token the cluster refuses the submission
    bad = dict(env, RAY_AUTH_TOKEN=secrets.token_hex(32))
    refused = subprocess.run(cmd[:5] + ["--", "python", "-c", "print(1)"], env=bad, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0
    assert "uthentication" in refused.stdout + refused.stderr
