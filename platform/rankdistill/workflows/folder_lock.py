"""One job at a time on a folder: ``jobs/pairdistill.py`` holds ``output_dir`` and
``label_store`` while it runs, so that a second job started on either is refused before Ray,
naming the job that holds it (two jobs at once would pay every label twice and register two
model versions).

The lock is a file, ``<folder>/.rankdistill.lock``, created exclusively (``O_EXCL``) and holding
the holder's pid, host, start time and command. A lock whose holder is gone (same host, its pid
dead or reused by another process: a job killed with SIGKILL) is stale and taken over; a holder on
another host cannot be probed, so the refusal says which file to delete when that job is gone.
Folders on object storage (``s3://...``) are not locked: they have no exclusive create.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from rankdistill.errors import ConfigError

LOCK_FILE = ".rankdistill.lock"


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat``'s fields after the command name (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot; Linux), to tell a reused pid apart."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's holder still runs (a holder on another host is taken to)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def _describe(holder: dict[str, Any]) -> str:
    return (f"{holder.get('job', 'a job')} (pid {holder.get('pid')} on host {holder.get('host')}, since "
            f"{holder.get('since', '?')})")


@dataclass
class FolderLocks:
    """The lock files this job holds; :meth:`release` removes those still its own."""

    paths: list[Path] = field(default_factory=list)

    def release(self) -> None:
        for path in reversed(self.paths):
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                path.unlink(missing_ok=True)
        self.paths.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _acquire(folder: Path, key: str, job: str) -> Path:
    path = folder / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "job": job, "command": " ".join(sys.argv), "process_start": _process_start(os.getpid())}
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                time.sleep(0.1)  # being written by its holder: read it again
                try:
                    holder = json.loads(path.read_text())
                except (OSError, ValueError):
                    holder = {}  # unreadable: a holder killed while writing it
            if holder and _alive(holder):
                raise ConfigError(f"'{folder}' is in use by another job: {_describe(holder)}; two jobs at once would "
                                  f"pay every label twice. Wait for it to end, or set {key} to another folder (if "
                                  f"that job is gone, delete {path})", key) from None
            path.unlink(missing_ok=True)  # stale: its holder is gone
            continue
        with os.fdopen(fd, "w") as stream:
            json.dump(me, stream)
        return path
    raise ConfigError(f"could not take the lock {path}", key)


def lock_folders(folders: list[tuple[str, str]], job: str) -> FolderLocks:
    """Lock every local folder of ``folders`` (``(location, config key)``; created when missing) for
    this process, or refuse (:class:`ConfigError` naming the key and the holder), releasing what
    was taken."""
    from rankdistill.storage import is_uri

    locks = FolderLocks()
    seen: set[Path] = set()
    try:
        for location, key in folders:
            if is_uri(location):
                continue
            folder = Path(location).expanduser().resolve()
            if folder in seen:
                continue
            seen.add(folder)
            folder.mkdir(parents=True, exist_ok=True)
            locks.paths.append(_acquire(folder, key, job))
    except BaseException:
        locks.release()
        raise
    return locks
