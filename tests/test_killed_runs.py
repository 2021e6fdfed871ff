"""A killed job leaves no MLflow run RUNNING: SIGTERM ends its runs as FAILED in order, and a
harder kill (SIGKILL) is cleaned up — marked KILLED — when the job starts again on the same output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankdistill.tracking import TrackingConfig, close_stale_runs, tracking_uri

PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def _dead_run(client, experiment_id: str, tags: dict[str, str]) -> tuple[str, str]:
    """A parent run with one nested child, both left RUNNING as a SIGKILLed job leaves them."""
    parent = client.create_run(experiment_id, tags=tags)
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id, "job": "x iteration 1"})
    return parent.info.run_id, child.info.run_id


def test_stale_runs_of_the_same_output_are_marked_killed_and_others_left_alone():
    config = TrackingConfig(experiment="killed-runs")
    client = _client()
    experiment_id = client.create_experiment("killed-runs")
    mine = _dead_run(client, experiment_id, {"job": "pairdistill", "output_dir": "/data/out's"})
    other = _dead_run(client, experiment_id, {"job": "pairdistill", "output_dir": "/data/other"})
    finished = client.create_run(experiment_id, tags={"job": "pairdistill", "output_dir": "/data/out's"})
    client.set_terminated(finished.info.run_id, "FINISHED")

    closed = close_stale_runs(config, {"job": "pairdistill", "output_dir": "/data/out's"})

    assert sorted(closed) == sorted(mine)
    status = {r: client.get_run(r).info.status for r in (*mine, *other, finished.info.run_id)}
    assert [status[r] for r in mine] == ["KILLED", "KILLED"]
    assert [status[r] for r in other] == ["RUNNING", "RUNNING"]
    assert status[finished.info.run_id] == "FINISHED"
    assert close_stale_runs(config, {"job": "pairdistill", "output_dir": "/data/out's"}) == []


def test_no_experiment_yet_and_disabled_tracking_close_nothing():
    assert close_stale_runs(TrackingConfig(experiment="never-created"), {"output_dir": "/x"}) == []
    assert close_stale_runs(TrackingConfig(enabled=False), {"output_dir": "/x"}) == []


SCRIPT = """
import sys, time
from rankdistill.interrupt import sigterm_as_exit
from rankdistill.tracking import TrackingConfig, start_run
with sigterm_as_exit():
    try:
        with start_run(TrackingConfig(experiment="sigterm"), tags={"job": "sleeper"}) as run:
            print(run.run_id, flush=True)
            time.sleep(120)
    finally:
        print("finally ran", flush=True)
"""


def test_sigterm_ends_the_run_as_failed_and_runs_finally_blocks():
    env = {**os.environ, "PYTHONPATH": PLATFORM + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, "the child did not start its run"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert "finally ran" in out
    assert _client().get_run(run_id).info.status == "FAILED"


def test_outside_the_main_thread_sigterm_as_exit_is_a_no_op():
    import threading

    from rankdistill.interrupt import sigterm_as_exit

    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with sigterm_as_exit():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before


@pytest.fixture(autouse=True)
def _no_global_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
