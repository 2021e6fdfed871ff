"""cluster.yaml passes Ray's own cluster-config validation and has the shape the README promises."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_validates_with_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load()
    validate_config(config)  # raises on schema violations
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = [name for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types, "a GPU worker type is required"
    setup = " ".join(prepared["setup_commands"])
    assert "[gpu" in setup and "pip install" in setup


def test_schema_validation_would_catch_a_broken_config():
    from ray.autoscaler._private.util import validate_config

    broken = load()
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "many"
    with pytest.raises(Exception):
        validate_config(broken)


def test_every_node_logs_to_the_heads_mlflow_server_and_reads_shared_data():
    config = load()
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "mlflow server" in head and "--artifacts-destination" in head
    assert "MLFLOW_TRACKING_URI=http://" in head and "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    assert "RANKDISTILL_DATA=" in head and "RANKDISTILL_DATA=" in workers
    # test-only settings stay out of the cluster
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in head + workers
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in head + workers


def _driver_check(tmp_path: Path, driver: str | None, *args: str):
    """Run scripts/check_nvidia_driver.sh with a stand-in ``nvidia-smi`` reporting ``driver``
    (None: no nvidia-smi at all) — no NVIDIA driver exists on this machine."""
    import shutil
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "head", "tr", "hostname"):
        (bin_dir / tool).unlink(missing_ok=True)
        (bin_dir / tool).symlink_to(shutil.which(tool))
    fake = bin_dir / "nvidia-smi"
    fake.unlink(missing_ok=True)
    if driver is not None:
        fake.write_text(f"#!/bin/sh\nprintf '{driver}\\n{driver}\\n'\n")
        fake.chmod(0o755)
    return subprocess.run([str(bin_dir / "bash"), str(REPO / "scripts" / "check_nvidia_driver.sh"), *args],
                          env={"PATH": str(bin_dir)}, check=False, capture_output=True, text=True, timeout=30)


def test_gpu_nodes_check_the_driver_cuda_13_needs(tmp_path):
    config = load()
    assert "check_nvidia_driver.sh --if-present 580" in config["setup_commands"][0]
    assert any("check_nvidia_driver.sh 580" in c
               for c in config["available_node_types"]["gpu_worker"]["worker_setup_commands"])
    old = _driver_check(tmp_path, "575.57.08", "580")
    assert old.returncode == 1 and "575.57.08 is too old" in old.stderr and ">= 580" in old.stderr
    new = _driver_check(tmp_path, "580.65.06", "580")
    assert new.returncode == 0 and "580.65.06 >= 580: OK" in new.stdout
    assert _driver_check(tmp_path, None, "--if-present", "580").returncode == 0  # the CPU head
    missing = _driver_check(tmp_path, None, "580")
    assert missing.returncode == 1 and "no working NVIDIA driver" in missing.stderr
