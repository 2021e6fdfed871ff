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
