"""Index folders at a local path or a storage URI (``file://``, ``s3://``, ``gs://``, ... anything
``pyarrow.fs`` resolves), so an index written by one Ray worker can be read by another.

Writers build the folder locally and copy it to the URI; readers copy a URI folder to a local
temporary folder first (faiss reads local files only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def _filesystem(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


@contextlib.contextmanager
def writable_folder(location: str | os.PathLike) -> Iterator[Path]:
    """A local folder to write into; a URI location receives its files when the block ends."""
    if not is_uri(location):
        folder = Path(location)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    from pyarrow import fs

    with tempfile.TemporaryDirectory(prefix="rankdistill-index-") as tmp:
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
