"""A benchmark that cannot measure its main figure (its dataset is missing) exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WITHOUT_DATA = """
import runpy, sys
from rankdistill.data import datasets
datasets.shared_data_roots = lambda: []  # as on a machine without ../shared/data
sys.argv = [{script!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize("script", ["nfcorpus_training.py", "rerankers.py", "scale_model.py"])
def test_a_benchmark_that_skips_its_main_figure_exits_non_zero(script):
    path = str(REPO / "benchmarks" / script)
    proc = subprocess.run([sys.executable, "-c", WITHOUT_DATA.format(script=path)], capture_output=True, text=True,
                          timeout=300, check=False)
    # it says why it measured nothing (SKIP / FAIL ... not on this machine), and exits 1
    assert "SKIP" in proc.stdout or "FAIL" in proc.stdout, proc.stdout + proc.stderr
    assert "not on this machine" in proc.stdout + proc.stderr
    assert proc.returncode == 1
