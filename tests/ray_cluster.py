"""A real Ray cluster of one or more nodes on 127.0.0.1, for tests that submit jobs.

Every node is a ``ray start --block`` process in a session of its own, so the cluster is stopped
by signalling exactly those process groups: never ``ray stop``, which stops every Ray on the
machine. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stays set (Ray keeps to loopback); only the
check that refuses a second node under it is lifted, inside the ``ray start`` command of a worker
node (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``). A worker node can be given a mount
namespace of its own (``unshare -m`` + a tmpfs over a folder), so it cannot see the head's files.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent

# `ray start` for a worker node, with the single-node guard lifted in this process only. Lifting
# it also makes Ray resolve the head's 127.0.0.1 to the machine's network address (where the
# head does not listen), so this process keeps the loopback address as its node address.
_JOIN = ("import sys, ray._private.ray_constants as c, ray._private.services as s; c.ENABLE_RAY_CLUSTER = True; "
         "s.get_node_ip_address = lambda address=None: '127.0.0.1'; "
         "from ray.scripts.scripts import main; sys.argv = ['ray'] + sys.argv[1:]; main()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_ports() -> list[str]:
    """Ports of a node's own agents: Ray's fixed defaults (52365, ...) clash between two nodes on
    one machine, and with any other Ray running here."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


@dataclass
class LocalCluster:
    """Start with :meth:`start_head`, add nodes with :meth:`add_node`, end with :meth:`stop`."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    retired: list[subprocess.Popen] = field(default_factory=list)  # nodes that failed to start
    gcs: str = ""
    dashboard: str = ""

    def __post_init__(self) -> None:
        token = self.tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        env = dict(os.environ)
        env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                   RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        self.env = {**env, **self.env}
        # short: unix socket paths are limited to ~107 characters
        self.temp_dir = Path("/tmp") / f"rd-ray-{secrets.token_hex(3)}"

    def _spawn(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        out = open(log, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def start_head(self, num_cpus: int = 2, resources: str | None = None) -> str:
        gcs_port, dash_port = free_port(), free_port()
        argv = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                f"--ray-client-server-port={free_port()}", *_agent_ports()]
        if resources:
            argv.append(f"--resources={resources}")
        self._spawn(argv, self.env, self.tmp / "ray-head.log")
        self.gcs, self.dashboard = f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}"
        self._wait_for_nodes(1)
        return self.dashboard

    def add_node(self, num_cpus: int = 2, hide: Path | None = None, env: dict[str, str] | None = None,
                 resources: str | None = None, attempts: int = 2) -> None:
        """A worker node; ``hide``: a folder this node sees as an empty tmpfs (needs root). On a
        loaded machine a raylet can give up waiting for its (slow to import) dashboard agent; the
        node is then started again, up to ``attempts`` times."""
        node_env = {**self.env, **(env or {})}
        for attempt in range(attempts):
            index = len(self.processes)
            argv = [sys.executable, "-c", _JOIN, "start", "--block", f"--address={self.gcs}",
                    "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--disable-usage-stats",
                    *_agent_ports(),
                    # a session folder of its own: sharing the head's, this node's runtime-env
                    # cleanup would delete the job's working_dir under the running driver
                    f"--temp-dir={self.temp_dir}-n{index}-{attempt}"]
            if resources:
                argv.append(f"--resources={resources}")
            if hide is not None:
                script = f"mount -t tmpfs tmpfs {hide} && exec \"$@\""
                argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]
            proc = self._spawn(argv, node_env, self.tmp / f"ray-node-{index}-{attempt}.log")
            try:
                self._wait_for_nodes(len(self.processes))
                return
            except RuntimeError:
                if proc.poll() is None or attempt == attempts - 1:
                    raise
                self.processes.remove(proc)  # it exited: try once more (stop() still ends its group)
                self.retired.append(proc)

    def _wait_for_nodes(self, count: int, timeout: float = 120.0) -> None:
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a Ray node exited ({dead[0].args}); see the logs in {self.tmp}")
            if self.gcs:
                out = subprocess.run([sys.executable, "-c", probe, self.gcs], env=self.env, capture_output=True,
                                     text=True, timeout=60)
                if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
                    return
            time.sleep(1.0)
        raise TimeoutError(f"the Ray cluster did not reach {count} node(s) in {timeout:.0f} s (logs in {self.tmp})")

    def submit(self, args: list[str], working_dir: Path, timeout: float = 900, env: dict | None = None,
               runtime_env_json: str | None = None) -> subprocess.CompletedProcess:
        """``ray job submit`` (retried while the job agent starts, as Ray asks)."""
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--working-dir", str(working_dir)]
        if runtime_env_json:
            cmd += ["--runtime-env-json", runtime_env_json]
        cmd += ["--", *args]
        deadline = time.monotonic() + 300  # the agent can take minutes on a loaded 2-core machine
        while True:
            proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                                  timeout=timeout)
            if "No available agent to submit job" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
                return proc
            time.sleep(5)

    def stop(self) -> None:
        """SIGTERM each node's process group (``--block`` shuts its node down), then SIGKILL what is left."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in [*self.processes, *self.retired]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
