"""SIGTERM as an orderly exit.

``ray job stop`` and most schedulers stop a driver with SIGTERM (then SIGKILL after a grace
period). Python's default SIGTERM action ends the process at once: no ``finally`` runs, so the
job's MLflow runs stay RUNNING and a Ray instance it started is left behind. Inside
:func:`sigterm_as_exit` SIGTERM raises ``SystemExit(143)`` instead, so context managers close
(MLflow marks the run FAILED) and ``finally`` blocks shut Ray down.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM."""


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (exit code 143) in the main thread.
    Outside the main thread (where signal handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise Terminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
