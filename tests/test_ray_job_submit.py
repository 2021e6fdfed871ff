"""A real local Ray cluster on 127.0.0.1: `ray start --head`, `ray job submit` of jobs/evaluate.py,
with token authentication on (Ray 2.60's default), then `ray stop`."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path: Path):
    import ray

    assert not ray.is_initialized(), "a local ray.init() would be stopped by `ray stop`"
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # the job must use its embedded default store
    gcs, dashboard = free_port(), free_port()
    temp = Path("/tmp") / f"rd-ray-{secrets.token_hex(3)}"  # short: unix socket paths are limited
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=180,
    )
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_job_submit_evaluate_on_local_cluster(ray_cluster, tmp_path: Path):
    env, address = ray_cluster
    out = tmp_path / "job-output"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
           "python", "jobs/evaluate.py", "--config", "configs/evaluate.yaml", f"output_dir={out}"]
    for _ in range(6):  # right after `ray start` the job agent may not be up yet: Ray says to retry
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in proc.stdout + proc.stderr:
            break
        time.sleep(10)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "nDCG@10" in proc.stdout and "succeeded" in proc.stdout + proc.stderr
    assert (out / "run.trec").exists() and (out / "evaluation.json").exists()
    assert (out / "mlruns" / "mlflow.db").exists()

    # without the token the cluster refuses the submission
    bad = dict(env, RAY_AUTH_TOKEN=secrets.token_hex(32))
    refused = subprocess.run(cmd[:5] + ["--", "python", "-c", "print(1)"], env=bad, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0
    assert "uthentication" in refused.stdout + refused.stderr
