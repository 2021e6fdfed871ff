"""Kill jobs/label.py with SIGKILL mid-run, run it again: the store equals an uninterrupted run's,
with no partial file and no duplicate row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from rankdistill.teachers import LabelStore
from teacher_fixtures import tiny_causal_lm

REPO = Path(__file__).resolve().parents[1]


def job_args(store: Path, output: Path, model: str) -> list[str]:
    # batch_size 1 and one thread: every prompt is computed alone, so the scores do not depend on
    # which prompts share a batch (the resumed run batches the remaining prompts differently)
    return [
        sys.executable, str(REPO / "jobs" / "label.py"), "--config", str(REPO / "configs" / "label.yaml"),
        f"store={store}", f"output_dir={output}", "dataset.split=train", "dataset.max_queries=null",
        "candidates.k=12", "pointwise.top_k=12", "teacher.id=tiny-llama", "teacher.template=monot5",
        "teacher.template_overrides={}", f"teacher.backend.model={model}", "teacher.backend.batch_size=1",
        "teacher.backend.num_threads=1", "pipeline.batch_size=6", "pipeline.progress=false",
        "tracking.enabled=false",
    ]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    e.pop("RAY_ADDRESS", None)
    return e


def run_job(args: list[str], log: Path) -> None:
    with open(log, "w") as out:
        proc = subprocess.run(args, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT, timeout=600,
                              check=False)
    assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path):
    model = str(tiny_causal_lm())
    killed_store, reference_store = tmp_path / "killed", tmp_path / "reference"

    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(job_args(killed_store, tmp_path / "o1", model), cwd=REPO, env=env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(LabelStore(killed_store).files("pointwise")) < 3:
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed: " + (tmp_path / "killed.log").read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)  # the job's driver, which writes the store
        proc.wait(timeout=30)
    finally:
        time.sleep(1.0)
        try:  # the local Ray processes the killed job had started (its own session only)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
    store = LabelStore(killed_store)
    partial = store.files("pointwise")
    assert partial, "nothing was written before the kill"
    for path in partial:
        assert pq.read_table(path).num_rows > 0  # whole files only
    written_before = len(store.read("pointwise", dedupe=False))

    run_job(job_args(killed_store, tmp_path / "o2", model), tmp_path / "resumed.log")
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert f"{written_before} already stored" in resumed_log, resumed_log[-2000:]
    run_job(job_args(reference_store, tmp_path / "o3", model), tmp_path / "reference.log")

    raw = LabelStore(killed_store).read("pointwise", dedupe=False)
    assert not raw.duplicated(["teacher", "template_hash", "qid", "docid"]).any()
    resumed, reference = LabelStore(killed_store).read("pointwise"), LabelStore(reference_store).read("pointwise")
    assert len(reference) > written_before
    pd.testing.assert_frame_equal(resumed, reference, check_exact=True)
