"""One error type per concern; every message names the file and line, the field, or the request."""

from __future__ import annotations

from pathlib import Path


class RankdistillError(Exception):
    """Base class of every error the library raises on purpose."""


class DataFormatError(RankdistillError, ValueError):
    """Bad input data: names the file, the 1-based line (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None):
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(f"{where}{problem}")


class ConfigError(RankdistillError, ValueError):
    """A bad configuration: names the file (when known) and the dotted key."""

    def __init__(self, problem: str, key: str | None = None, path: str | Path | None = None):
        self.problem = problem
        self.key = key
        self.path = str(path) if path is not None else None
        parts = [p for p in (self.path, key) if p]
        super().__init__(f"{': '.join(parts)}: {problem}" if parts else problem)


class TeacherOutputError(RankdistillError, ValueError):
    """A teacher's response that cannot be used even after repair (names the query and window)."""


class MissingExtraError(RankdistillError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'rankdistill[{extra}]'"
        )


def require(module: str, extra: str, purpose: str):
    """Import an optional module lazily, or raise MissingExtraError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module, extra, purpose) from exc
