"""Folders at a local path or a storage URI (``file://``, ``s3://``, ``gs://``, ... anything
``pyarrow.fs`` resolves), so what one node writes another can read: indexes, job outputs, models.

Writers build the folder locally and copy it to the URI; readers copy a URI folder to a local
temporary folder first (faiss and ``from_pretrained`` read local files only). A folder on the
driver's own disk reaches workers on other nodes through the Ray object store
(:func:`ship_folder` → :func:`local_folder`). S3-compatible servers: pyarrow reads
``AWS_ENDPOINT_URL`` (and the usual ``AWS_*`` credentials) from the environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankdistill.errors import RankdistillError


class StorageError(RankdistillError, OSError):
    """A storage location that cannot be used (unknown scheme, unreachable store): names the URI."""


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def _filesystem(uri: str):
    """``(filesystem, path)`` of a URI; an unknown scheme or an unreachable store is a
    :class:`~rankdistill.errors.StorageError` naming the URI (not a pyarrow traceback)."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise StorageError(f"cannot open storage URI '{uri}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def check_folder_location(location: str | os.PathLike, key: str) -> None:
    """Before any work: the folder ``key`` names can be used. A URI's scheme is known and its
    store answers (an S3 URI with no server behind it fails here, in one line); a local path is
    not a file. Errors are :class:`~rankdistill.errors.ConfigError` naming the key and location."""
    from rankdistill.errors import ConfigError

    if is_uri(location):
        try:
            filesystem_, path = _filesystem(str(location))
            info = filesystem_.get_file_info(path)
        except StorageError as exc:
            raise ConfigError(str(exc), key) from None
        except OSError as exc:
            raise ConfigError(f"storage URI '{location}' cannot be reached: {_first_line(exc)}", key) from None
        from pyarrow import fs

        if info.type == fs.FileType.File:
            raise ConfigError(f"'{location}' is a file, not a folder", key)
        return
    path = Path(location).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"'{location}' is a file, not a folder", key)
    for parent in path.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"'{location}' lies under '{parent}', which is a file", key)
            break


@contextlib.contextmanager
def writable_folder(location: str | os.PathLike) -> Iterator[Path]:
    """A local folder to write into; a URI location receives its files when the block ends."""
    if not is_uri(location):
        folder = Path(location)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    from pyarrow import fs

    with tempfile.TemporaryDirectory(prefix="rankdistill-staging-") as tmp:
        yield Path(tmp)
        filesystem, path = _filesystem(str(location))
        filesystem.create_dir(path, recursive=True)
        fs.copy_files(tmp, path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


@contextlib.contextmanager
def readable_folder(location: str | os.PathLike) -> Iterator[Path]:
    """A local folder holding the files of ``location`` (copied there when it is a URI)."""
    if not is_uri(location):
        yield Path(location)
        return
    from pyarrow import fs

    filesystem, path = _filesystem(str(location))
    with tempfile.TemporaryDirectory(prefix="rankdistill-index-") as tmp:
        fs.copy_files(path, tmp, source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
        yield Path(tmp)


def copy_folder(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy a folder between any two locations (local paths or URIs)."""
    with readable_folder(source) as src, writable_folder(destination) as dst:
        shutil.copytree(src, dst, dirs_exist_ok=True)


def filesystem(location: str | os.PathLike):
    """``(pyarrow filesystem, path inside it)`` of a local path or a storage URI."""
    if is_uri(location):
        return _filesystem(str(location))
    from pyarrow import fs

    return fs.LocalFileSystem(), str(Path(location).absolute())


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location/part/...`` for a local path or a URI (a URI's query string stays at the end)."""
    text = str(location)
    base, _, query = text.partition("?") if is_uri(text) else (text, "", "")
    joined = "/".join([base.rstrip("/"), *parts]) if is_uri(text) else str(Path(base, *parts))
    return f"{joined}?{query}" if query else joined


def pack_folder(folder: str | os.PathLike) -> bytes:
    """A local folder as the bytes of an uncompressed tar (model weights barely compress)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=".")
    return buffer.getvalue()


def unpack_folder(data: bytes, destination: str | os.PathLike) -> Path:
    import io
    import tarfile

    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(destination, filter="data")
    return destination


@dataclass(frozen=True)
class ShippedFolder:
    """A folder handed to Ray workers on any node: a storage URI they read themselves, or (for a
    folder on the driver's disk) its bytes in the Ray object store. Open it with :func:`local_folder`."""

    location: str  # where it came from (for messages)
    ref: Any = None  # ObjectRef of the tar bytes; None: ``location`` is a URI

    def __str__(self) -> str:
        return self.location


def ship_folder(location: str | os.PathLike) -> ShippedFolder:
    """Make ``location`` (a local folder on this process's machine, or a URI) reachable from every
    node: a local folder is packed into the object store (needs Ray initialised)."""
    if is_uri(location):
        return ShippedFolder(str(location))
    import ray

    folder = Path(location)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    return ShippedFolder(str(folder), ray.put(pack_folder(folder)))


@contextlib.contextmanager
def local_folder(folder: ShippedFolder | str | os.PathLike) -> Iterator[Path]:
    """A local copy of a shipped folder (or a URI, or a local path as is) while the block runs."""
    if not isinstance(folder, ShippedFolder):
        with readable_folder(folder) as path:
            yield path
        return
    if folder.ref is None:
        with readable_folder(folder.location) as path:
            yield path
        return
    import ray

    with tempfile.TemporaryDirectory(prefix="rankdistill-shipped-") as tmp:
        yield unpack_folder(ray.get(folder.ref), tmp)


def remove_folder(location: str | os.PathLike) -> None:
    """Delete a folder (local path or URI) and everything in it; a missing folder is fine."""
    if not is_uri(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    if exists(location):
        filesystem, path = _filesystem(str(location))
        filesystem.delete_dir(path)


def publish(local: str | os.PathLike, location: str | os.PathLike) -> None:
    """Copy a local file or folder to ``location`` (a URI, or a local path; the same path: nothing)."""
    local = Path(local)
    if not is_uri(location) and Path(location).resolve() == local.resolve():
        return
    if local.is_dir():
        copy_folder(local, location)
        return
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, location)
        return
    filesystem, path = _filesystem(str(location))
    parent = path.rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(local.read_bytes())


def exists(location: str | os.PathLike) -> bool:
    """Whether a file or folder exists at a local path or a URI."""
    if not is_uri(location):
        return Path(location).exists()
    from pyarrow import fs

    filesystem, path = _filesystem(str(location))
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 over a local folder's file names and bytes (what identifies a saved model)."""
    import hashlib

    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
