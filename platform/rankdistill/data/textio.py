"""Opening text files (plain or .gz) and reading JSON lines with errors that name file and line."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rankdistill.errors import DataFormatError


def open_text(path: str | Path, mode: str = "r") -> IO[str]:
    """Open a UTF-8 text file for reading or writing; ``.gz`` files are (de)compressed. Reading
    drops a leading byte-order mark (``utf-8-sig``: editors on Windows write one, and it would
    otherwise become part of the first id)."""
    path = Path(path)
    reading = "r" in mode
    if reading and not path.exists():
        raise DataFormatError("file does not exist", path)
    encoding = "utf-8-sig" if reading else "utf-8"
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode.replace("t", "") + "b"), encoding=encoding, newline="")
    return open(path, mode, encoding=encoding, newline="")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, without the newline), skipping blank lines."""
    number = 0
    try:
        with open_text(path) as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from exc
    except (OSError, EOFError, zlib.error) as exc:
        if Path(path).suffix == ".gz" or isinstance(exc, gzip.BadGzipFile) or "gzip" in str(exc).lower():
            where = f" after line {number}" if number else ""
            raise DataFormatError(f"corrupt or truncated gzip file{where} ({type(exc).__name__}: {exc})", path) from exc
        raise


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line; each line must be a JSON object."""
    for number, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"bad JSON ({exc.msg} at column {exc.colno})", path, number) from exc
        if not isinstance(obj, dict):
            raise DataFormatError(f"expected a JSON object, got {type(obj).__name__}", path, number)
        yield number, obj


def require_field(obj: dict[str, Any], name: str, path: str | Path, line: int, kind: type = str) -> Any:
    """``obj[name]``, checked to exist and to be of ``kind`` (numbers are accepted as ids)."""
    if name not in obj:
        raise DataFormatError(f"missing field '{name}'", path, line)
    value = obj[name]
    if kind is str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DataFormatError(f"field '{name}' must be a string, got {type(value).__name__}", path, line)
        return str(value)
    if not isinstance(value, kind):
        raise DataFormatError(
            f"field '{name}' must be {kind.__name__}, got {type(value).__name__}", path, line
        )
    return value
