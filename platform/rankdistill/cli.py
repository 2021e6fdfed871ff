"""The command line shared by every job: ``--config FILE`` plus ``key.sub=value`` overrides.

Every :class:`~rankdistill.errors.RankdistillError` a job raises (while parsing its config, before
Ray starts, or inside a Ray Data / Ray Train worker, where Ray wraps it) ends the job with one
line on stderr naming the file/line or config key, and exit status 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TypeVar

from rankdistill.config import load_config
from rankdistill.errors import ConfigError, RankdistillError

T = TypeVar("T")


def parse_args(cls: type[T], argv: list[str] | None = None, description: str | None = None,
               require_config: str | None = None) -> T:
    """``require_config``: a job whose defaults alone are no runnable job names an example config
    here, and ``--config`` is then required (exit 2 with a line naming the example)."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides: any config key as key.sub=value, e.g. retrieval.k=100 tracking.experiment=demo",
    )
    parser.add_argument("--config", help="YAML config file (see configs/)"
                        + (f"; required, e.g. {require_config}" if require_config else ""))
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    if require_config and not args.config:
        parser.error(f"--config is required: this job's defaults alone describe no runnable job (its teachers, "
                     f"data and splits come from a config file), e.g. --config {require_config}")
    return load_config(cls, args.config, args.overrides)


def _is_ray_wrapper(exc: BaseException) -> bool:
    """Ray's task errors subclass the user's exception class but print a remote traceback."""
    return any(c.__name__ in ("RayTaskError", "RayActorError") for c in type(exc).__mro__)


def find_rankdistill_error(exc: BaseException) -> RankdistillError | None:
    """The :class:`RankdistillError` behind ``exc``: itself, or one Ray wrapped (``RayTaskError.cause``,
    Ray Data's ``UserCodeException``, Ray Train's ``WorkerGroupError.worker_failures``), found
    through ``__cause__`` / ``__context__``."""
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(current, RankdistillError) and not _is_ray_wrapper(current):
            return current
        if isinstance(cause, BaseException):
            queue.append(cause)
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            queue.extend(f for f in failures.values() if isinstance(f, BaseException))
        queue.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return _from_remote_traceback(exc, seen)


class RemoteError(RankdistillError):
    """A RankdistillError raised in a Ray worker that reached the driver only as traceback text
    (Ray Data's ``UserCodeException`` keeps the user's exception as text, not as an object)."""

    def __init__(self, class_name: str, message: str, is_config: bool):
        super().__init__(message)
        self.class_name = class_name
        self.is_config = is_config


_REMOTE = re.compile(r"^(rankdistill(?:\.\w+)+)\.(\w+): (.+)$", re.MULTILINE)


def _from_remote_traceback(exc: BaseException, seen: set[int]) -> RankdistillError | None:
    """The last ``rankdistill.<module>.<Error>: message`` line in a Ray error's text, when that
    class is a RankdistillError."""
    import importlib

    texts = [str(exc)] + [str(getattr(exc, "cause", "") or "")]
    for text in texts:
        for module, name, message in reversed(_REMOTE.findall(text)):
            try:
                cls = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
            if isinstance(cls, type) and issubclass(cls, RankdistillError):
                return RemoteError(name, message.strip(), issubclass(cls, ConfigError))
    return None


def error_line(error: RankdistillError) -> str:
    config = isinstance(error, ConfigError) or getattr(error, "is_config", False)
    kind = "configuration error" if config else "error"
    return f"{kind}: {' '.join(str(error).split())}"


def run_job(cls: type[T], main, argv: list[str] | None = None, description: str | None = None,
            require_config: str | None = None) -> None:
    """Parse the config and call ``main(config)``; every RankdistillError (however deep in Ray it
    was raised) exits 2 with one line naming the problem. ``require_config``: see :func:`parse_args`."""
    try:
        config = parse_args(cls, argv, description, require_config)
        main(config)
    except Exception as exc:
        error = find_rankdistill_error(exc)
        if error is None:
            raise
        print(error_line(error), file=sys.stderr, flush=True)
        raise SystemExit(2) from None
