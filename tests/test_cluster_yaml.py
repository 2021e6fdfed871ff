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
