"""Under CI (``CI=true``) a test that cannot reach ../shared/data fails instead of skipping; on a
developer machine it skips with the reason. Runs a tiny suite beside a copy of tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SUITE = '''
from conftest import shared_dataset
from rankdistill.data import datasets
from rankdistill.data.datasets import DatasetUnavailable


def test_raises_dataset_unavailable():
    raise DatasetUnavailable("dataset 'scifact' is not on this machine")


def test_shared_dataset_helper(monkeypatch):
    monkeypatch.setattr(datasets, "shared_data_roots", lambda: [])
    shared_dataset("scifact")
'''


def run_suite(tmp_path: Path, ci: str | None) -> str:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    return proc.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_missing_data_fails(tmp_path: Path, ci):
    out = run_suite(tmp_path, ci)
    assert "2 failed" in out and "skipped" not in out, out
    assert "CI=true but needs the shared data collection 'scifact'" in out


def test_without_ci_missing_data_skips(tmp_path: Path):
    out = run_suite(tmp_path, None)
    assert "2 skipped" in out and "failed" not in out, out
