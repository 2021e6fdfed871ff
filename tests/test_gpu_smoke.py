"""scripts/gpu_smoke.py on a machine without a GPU: every check runs on the CPU, the output says no
GPU was found, each check prints one PASS line (saying what it reduced or skipped without a GPU),
and nothing imports Ray or vLLM (both are made unimportable in the child process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKS = ["teachers", "students", "deepspeed", "serving", "dense-index", "precision", "memory",
          "pairdistill-deepspeed", "saved-dtype", "colbert-index"]
NO_RAY = ("import runpy, sys; sys.modules['ray'] = None; sys.modules['vllm'] = None; "
          "sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
def test_gpu_smoke_runs_every_check_on_the_cpu_without_ray(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "platform"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", NO_RAY, str(REPO / "scripts" / "gpu_smoke.py")], env=env,
                          cwd=tmp_path, check=False, capture_output=True, text=True, timeout=600)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "no GPU found" in lines[0]
    results = {m.group(2): m.group(1) for line in lines if (m := re.match(r"^(PASS|FAIL|SKIP) ([\w-]+): ", line))}
    assert results == dict.fromkeys(CHECKS, "PASS"), done.stdout
    assert lines[-1] == "gpu_smoke: all checks passed on cpu"
    assert "on cpu" in next(line for line in lines if line.startswith("PASS teachers"))
    # what a check could not do without a GPU it says, and why
    memory = next(line for line in lines if line.startswith("PASS memory"))
    assert "no GPU: reduced step" in memory and "skipped: max_memory_allocated needs CUDA" in memory
    assert "A10G 24 GB: fits (" in memory  # the config fits an A10G with >= 20% margin, by the model
    assert "reduced from the config's on cpu" in next(l for l in lines if l.startswith("PASS pairdistill-deepspeed"))
    assert "saved safetensors ['F32'], loaded fp32" in next(l for l in lines if l.startswith("PASS saved-dtype"))


def test_a_failing_check_prints_fail_and_exits_non_zero(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)

    def broken(device, work):
        raise AssertionError("scores differ\nsecond line")

    def missing(device, work):
        raise smoke.Skip("deepspeed not importable")

    monkeypatch.setattr(smoke, "CHECKS", [("teachers", broken), ("deepspeed", missing)])
    assert smoke.main([]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("FAIL teachers: AssertionError: scores differ (") for line in out)
    assert any(line.startswith("SKIP deepspeed: deepspeed not importable") for line in out)
    assert out[-1].startswith("gpu_smoke: FAILED")
