"""Where a model named in a config lives, as a local folder ``from_pretrained`` can read.

Users name models three ways, and every loader accepts all three:

- a **local folder** (``save_pretrained`` output): used as is;
- a **storage URI** (``s3://bucket/model``, ``file:///...``, anything ``pyarrow.fs`` resolves):
  copied once per node into ``$RANKDISTILL_MODEL_CACHE`` (default ``~/.cache/rankdistill/models``)
  under a name derived from the URI, so the actors of one node share one copy; a changed source
  (other file sizes or times) is copied again;
- a **Hugging Face Hub id** (``cross-encoder/ms-marco-MiniLM-L-6-v2``): the snapshot in the
  Hugging Face cache (``HF_HOME``), downloaded when the Hub is reachable. With
  ``HF_HUB_OFFLINE=1`` a model missing from the cache is one :class:`ConfigError` line naming the
  id and saying the Hub is offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from rankdistill.errors import ConfigError
from rankdistill.storage import is_uri

#: ``name`` or ``org/name`` of letters, digits, ``-``, ``_``, ``.`` (the Hub's repo id rules)
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_hub_id(name: str | os.PathLike) -> bool:
    """True for a string shaped like a Hub repo id that is not an existing local path or a URI."""
    text = os.fspath(name)
    if is_uri(text) or os.path.exists(text) or text.endswith((".", "-")) or ".." in text or "--" in text:
        return False
    return bool(_HUB_ID.match(text))


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_folder(repo_id: str, key: str = "model") -> Path:
    """The local snapshot folder of Hub model ``repo_id`` (downloaded unless already cached)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, repo_type="model"))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if hub_offline():
            raise ConfigError(f"model '{repo_id}' is not a local folder nor in the Hugging Face cache, and the Hub "
                              f"is offline (HF_HUB_OFFLINE=1); put it in HF_HOME or name a folder / storage URI",
                              key) from None
        raise ConfigError(f"model '{repo_id}' is not a local folder and the Hugging Face Hub cannot be reached "
                          f"to download it", key) from None
    except GatedRepoError:
        raise ConfigError(f"model '{repo_id}' is gated on the Hugging Face Hub: log in (HF_TOKEN) with access",
                          key) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ConfigError(f"model '{repo_id}' is not a local folder nor a model on the Hugging Face Hub", key) from None


def model_cache_root() -> Path:
    return Path(os.environ.get("RANKDISTILL_MODEL_CACHE") or Path.home() / ".cache" / "rankdistill" / "models")


def _fingerprint(uri: str) -> list[list]:
    """``[[relative path, size, mtime_ns], ...]`` of every file under the URI folder."""
    from pyarrow import fs

    from rankdistill.storage import filesystem

    filesystem_, root = filesystem(uri)
    infos = filesystem_.get_file_info(fs.FileSelector(root.rstrip("/"), recursive=True, allow_not_found=True))
    base = root.rstrip("/") + "/"
    return sorted([info.path.removeprefix(base), info.size,
                   info.mtime_ns or 0] for info in infos if info.type == fs.FileType.File)


def node_cache_folder(uri: str, key: str = "model") -> Path:
    """A local copy of the model folder at storage URI ``uri``, shared by every process of this
    node (copied under a file lock; a source whose files changed is copied again)."""
    from filelock import FileLock
    from pyarrow import fs

    from rankdistill.storage import filesystem

    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", uri.rstrip("/").rsplit("/", 1)[-1].split("?")[0]) or "model"
    root = model_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{digest}"
    marker = target / ".rankdistill-source.json"
    with FileLock(str(root / f"{name}-{digest}.lock")):
        files = _fingerprint(uri)
        if not files:
            raise ConfigError(f"'{uri}' holds no files (not a model folder)", key)
        if marker.is_file():
            try:
                if json.loads(marker.read_text()).get("files") == files:
                    return target
            except (OSError, ValueError):
                pass
        staging = root / f".{name}-{digest}.{os.getpid()}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        filesystem_, path = filesystem(uri)
        fs.copy_files(path, str(staging), source_filesystem=filesystem_, destination_filesystem=fs.LocalFileSystem())
        (staging / marker.name).write_text(json.dumps({"uri": uri, "files": files}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    return target


def local_model_folder(name: str | os.PathLike, key: str = "model") -> Path:
    """A local folder holding the model ``name`` names (a folder, a storage URI or a Hub id)."""
    text = os.fspath(name)
    if not text:
        raise ConfigError("a model is needed (a folder, a storage URI or a Hugging Face Hub id)", key)
    if is_uri(text):
        return node_cache_folder(text, key)
    if os.path.isdir(text):
        return Path(text)
    if is_hub_id(text):
        return hub_folder(text, key)
    raise ConfigError(f"'{text}' is not a folder, a storage URI (s3://...) nor a Hugging Face Hub id", key)
