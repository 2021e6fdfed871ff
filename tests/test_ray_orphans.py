"""A job killed hard (SIGKILL: a scheduler's last resort, an OOM kill) leaves no Ray processes of
the local instance it started behind (GCS, raylet, agents, workers): Ray fate-shares them with
the driver. This pins that behaviour of the Ray version we run, for init_ray's local instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")

SCRIPT = """
import os, time, psutil, ray
from rankdistill.ray_runtime import RayConfig, init_ray
init_ray(RayConfig(num_cpus=1))
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
me = psutil.Process()
print(" ".join(str(p.pid) for p in me.children(recursive=True)), flush=True)
time.sleep(300)
"""


def test_sigkill_of_the_driver_leaves_no_ray_process_of_its_local_instance():
    env = {**os.environ, "PYTHONPATH": PLATFORM + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert pids, "the driver started no Ray processes"
        procs = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 90
        while True:  # exited processes whose new parent does not reap them stay as zombies: gone
            left = [(p.pid, p.name()) for p in procs if _running(p)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not left, f"Ray processes left behind by a SIGKILLed driver: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
