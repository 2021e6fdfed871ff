"""The ``gpu`` extra resolves: ``pip install --dry-run --report`` of ``.[gpu]`` against PyPI picks
exactly the pinned versions and never backtracks into a release whose dependencies are missing.

Needs the package index (PyPI, or ``RANKDISTILL_TEST_INDEX_URL``); skips, saying why, when it is
unreachable. Only metadata is fetched (PEP 658), not the ~4 GB of CUDA wheels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
INDEX = os.environ.get("RANKDISTILL_TEST_INDEX_URL", "https://pypi.org/simple")
GPU = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]]


def test_every_gpu_requirement_is_pinned():
    for req in GPU:
        (spec,) = req.specifier
        assert spec.operator == "==" and "*" not in spec.version, req


def _reachable(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/vllm/", timeout=15) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except OSError as exc:
        return str(exc)


@pytest.mark.slow
@pytest.mark.network
def test_the_gpu_extra_resolves_to_the_pins(tmp_path):
    problem = _reachable(INDEX)
    if problem:
        pytest.skip(f"package index {INDEX} unreachable ({problem})")
    report = tmp_path / "report.json"
    # the machine's pip config (local wheel folders, constraints) must not steer the resolution
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--index-url", INDEX,
         "--report", str(report), f"{REPO}[gpu]"],
        check=False, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    for req in GPU:
        assert req.specifier.contains(resolved[canonicalize_name(req.name)]), (req, resolved.get(req.name))
    assert resolved["ray"].startswith("2.60.")
    print("resolved:", ", ".join(f"{name} {resolved[name]}" for name in
                                 ("vllm", "torch", "transformers", "ray", "deepspeed", "faiss-gpu-cu12",
                                  "flashinfer-python")))
