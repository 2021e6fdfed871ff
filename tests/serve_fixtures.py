"""Starting and stopping the Serve app on 127.0.0.1 for the serve tests (real Ray, real HTTP)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{url}/healthz", timeout=5)
            if r.status_code == 200:
                return
            last = r.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url}/healthz did not answer 200 within {timeout} s (last: {last})")


@contextlib.contextmanager
def running_app(args: dict, num_cpus: int = 4, env: dict[str, str] | None = None,
                metrics_port: int | None = None) -> Iterator[str]:
    """Start local Ray + Serve on a free 127.0.0.1 port with ``serve.app.build_app(args)``; yields the
    base URL; shuts Serve and the Ray it started down afterwards."""
    from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
    from ray import serve

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    # replicas import serve.app and rankdistill from the worktree
    pythonpath = os.pathsep.join([str(REPO), str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"] = pythonpath
    started = init_ray(RayConfig(num_cpus=num_cpus, metrics_export_port=metrics_port))  # logical CPUs: replicas fit, the machine is shared
    port = free_port()
    try:
        from serve.app import build_app

        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="rankdistill", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        shutdown_ray(started)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
