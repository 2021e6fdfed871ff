"""YAML configs with key.sub=value overrides; unknown keys and bad values are errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rankdistill.config import flatten, load_config, to_dict
from rankdistill.errors import ConfigError
from rankdistill.workflows.evaluate import EvaluateConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_file_and_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: {name: scifact}\nretrieval: {k: 50, bm25: {k1: 1.2}}\n")
    config = load_config(EvaluateConfig, path, ["retrieval.k=10", "evaluation.measures=[nDCG@10,AP]",
                                                 "tracking.enabled=false", "ray.num_cpus=2"])
    assert config.dataset.name == "scifact"
    assert config.retrieval.k == 10 and config.retrieval.bm25.k1 == 1.2 and config.retrieval.bm25.b == 0.4
    assert config.evaluation.measures == ["nDCG@10", "AP"]
    assert config.tracking.enabled is False and config.ray.num_cpus == 2
    assert flatten(to_dict(config))["retrieval.bm25.k1"] == 1.2


@pytest.mark.parametrize(
    "overrides,key,problem",
    [
        (["retrieval.kk=3"], "retrieval.kk", "unknown key"),
        (["nosuch=1"], "nosuch", "unknown key"),
        (["retrieval.k=many"], "retrieval.k", "expected int"),
        (["retrieval.k=2.5"], "retrieval.k", "expected an integer"),
        (["tracking.enabled=maybe"], "tracking.enabled", "expected true/false"),
        (["retrieval.bm25=3"], "retrieval.bm25", "expected a mapping"),
        (["retrieval"], None, "must look like key.sub=value"),
    ],
)
def test_bad_overrides(overrides, key, problem):
    with pytest.raises(ConfigError) as info:
        load_config(EvaluateConfig, None, overrides)
    assert problem in str(info.value)
    if key:
        assert info.value.key == key


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset:\n  nmae: demo\n")
    with pytest.raises(ConfigError) as info:
        load_config(EvaluateConfig, path)
    assert str(path) in str(info.value) and "dataset.nmae" in str(info.value)
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="bad YAML"):
        load_config(EvaluateConfig, path)


def _job_config_class(path: Path):
    from rankdistill.workflows.evaluate import EvaluateConfig
    from rankdistill.workflows.label import LabelConfig
    from rankdistill.workflows.pairdistill import PairDistillConfig
    from rankdistill.workflows.train_reranker import TrainRerankerConfig

    jobs = {"evaluate": EvaluateConfig, "label": LabelConfig, "train_reranker": TrainRerankerConfig,
            "pairdistill": PairDistillConfig, "quickstart": PairDistillConfig}
    return jobs[path.stem.split("-")[0]]  # a config no job reads is an error too (KeyError)


SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_shipped_configs_for_every_job():
    assert len(SHIPPED) >= 10
    assert {p.stem.split("-")[0] for p in SHIPPED} == {"evaluate", "label", "train_reranker", "pairdistill",
                                                        "quickstart"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path):
    import yaml

    config = load_config(_job_config_class(path), path)
    # every key the file sets arrived in the config (nothing silently dropped or defaulted)
    from rankdistill.config import flatten, to_dict

    loaded = flatten(to_dict(config))
    for key, value in flatten(yaml.safe_load(path.read_text())).items():
        if isinstance(value, dict):  # an empty mapping, e.g. options: {}
            continue
        assert key in loaded, key
        expected = list(value) if isinstance(value, (list, tuple)) else value
        got = list(loaded[key]) if isinstance(loaded[key], (list, tuple)) else loaded[key]
        assert _sets(got, expected), (key, got, expected)


def _sets(got, expected) -> bool:
    """``got`` holds everything ``expected`` (a YAML value) sets: equal scalars, lists item by item,
    and for a mapping (e.g. an ensemble member) every key it names, the rest being defaults."""
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(k in got and _sets(got[k], v) for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(expected) and all(
            _sets(g, e) for g, e in zip(got, expected, strict=True))
    return got == expected


def test_cli_exits_2_with_the_key_on_bad_config():
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), "retrieval.nope=1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "retrieval.nope" in proc.stderr and "unknown key" in proc.stderr
