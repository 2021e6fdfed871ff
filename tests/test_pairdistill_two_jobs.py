"""Issue 31: two main jobs at once on one machine, each with the local Ray instance it starts.
Ray internals that look for "the" local cluster (Ray Train's PlacementGroupCleaner asks the state
API) found two and died with ``ConnectionError: Found multiple active Ray instances``; the job
now points every process of its instance at it (``RAY_ADDRESS``). Both finish, with no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_jobs_at_once_on_one_machine_both_finish_without_a_ray_traceback(tmp_path: Path):
    from test_pairdistill_job import tiny_models, tiny_overrides

    models = tiny_models(tmp_path / "models")
    jobs = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        env = {**os.environ, "RANKDISTILL_HOME": str(root / "home"),
               "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}
        env.pop("RAY_ADDRESS", None)  # each job starts its own local instance
        env.pop("MLFLOW_TRACKING_URI", None)
        args = [sys.executable, str(REPO / "jobs" / "pairdistill.py"), "--config", str(REPO / "configs" / "quickstart.yaml"),
                *tiny_overrides(root, models), "iterations=1", "evaluate_teacher=false", "training.max_steps=2",
                "ray.num_cpus=2"]
        log = (root / "console.log").open("w")
        jobs.append((root, log, subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)))
    try:
        for _, _, proc in jobs:
            proc.wait(timeout=1200)
    finally:
        for _, log, proc in jobs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for root, _, proc in jobs:
        console = (root / "console.log").read_text()
        assert proc.returncode == 0, console[-3000:]
        assert "Found multiple active Ray instances" not in console, console[-3000:]
        assert "Traceback" not in console, console[-3000:]
        summary = json.loads((root / "out" / "summary.json").read_text())
        assert [s["name"] for s in summary["stages"]][-1] == "student iteration 1"
