"""Name -> reranker class, and loading a saved student without knowing its class."""

from __future__ import annotations

import json
import os
from typing import Any

from rankdistill.errors import ConfigError, DataFormatError, RankdistillError
from rankdistill.models.base import Reranker
from rankdistill.models.bi_encoder import BiEncoder
from rankdistill.models.celi import CELI
from rankdistill.models.colbert import ColBERT
from rankdistill.models.duo import DuoCrossEncoder
from rankdistill.models.listconranker import ListConRanker
from rankdistill.models.mono import MonoCrossEncoder
from rankdistill.models.set_encoder import SetEncoder

RERANKERS: dict[str, type[Reranker]] = {
    cls.registry_name: cls
    for cls in (MonoCrossEncoder, CELI, SetEncoder, ListConRanker, DuoCrossEncoder, BiEncoder, ColBERT)
}
_BY_MODEL_TYPE = {cls.config_class.model_type: cls for cls in RERANKERS.values()}


def _register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` know the rankdistill model types (idempotent)."""
    from transformers import AutoConfig, AutoModel

    for cls in RERANKERS.values():
        try:
            AutoConfig.register(cls.config_class.model_type, cls.config_class, exist_ok=True)
            AutoModel.register(cls.config_class, cls, exist_ok=True)
        except (TypeError, ValueError):  # pragma: no cover - older transformers without exist_ok
            pass


_register_auto_classes()


def get_reranker_class(name: str, key: str = "student.architecture") -> type[Reranker]:
    """``"mono" | "celi" | "set-encoder" | "listconranker" | "duo" | "bi-encoder" | "colbert"`` -> class; ``key``: the config
    field that named it."""
    normalized = name.strip().lower().replace("_", "-")
    if normalized not in RERANKERS:
        raise ConfigError(f"unknown reranker architecture '{name}'; known: {', '.join(sorted(RERANKERS))}", key=key)
    return RERANKERS[normalized]


def check_model_folder(path: str | os.PathLike, key: str, weights: bool = True) -> None:
    """A local Hugging Face model folder: it exists, has a readable ``config.json`` and (with
    ``weights``) a weights file; a storage URI holding a ``config.json``; or a Hugging Face Hub id
    (checked in its cached / downloaded snapshot). Errors name the config ``key`` and the path."""
    from rankdistill.model_source import hub_folder, is_hub_id
    from rankdistill.storage import filesystem, is_uri

    folder = os.fspath(path)
    if is_hub_id(folder):
        folder = str(hub_folder(folder, key))
    if is_uri(folder):  # a model in object storage: its config.json must be there
        import pyarrow.fs as pafs

        fs, inner = filesystem(folder)
        if fs.get_file_info(f"{inner.rstrip('/')}/config.json").type != pafs.FileType.File:
            raise ConfigError(f"'{folder}' is not a model folder (no config.json there)", key)
        return
    if not os.path.isdir(folder):
        raise ConfigError(f"'{folder}' is not a folder", key)
    config_file = os.path.join(folder, "config.json")
    try:
        with open(config_file, encoding="utf-8") as fh:
            content = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"'{folder}' is not a model folder (no config.json)", key) from None
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"unreadable model config ({exc})", config_file) from None
    if not isinstance(content, dict):
        raise DataFormatError("model config is not a JSON object", config_file)
    names = set(os.listdir(folder))
    if weights and not any(n.endswith((".safetensors", ".bin", ".safetensors.index.json"))
                           for n in names):
        raise ConfigError(f"'{folder}' has no model weights (*.safetensors or pytorch_model.bin)", key)


def _loading(path: str | os.PathLike, load):
    """Run ``load()``; a corrupt or truncated weights file becomes a DataFormatError naming it."""
    try:
        return load()
    except RankdistillError:
        raise
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError" and not isinstance(exc, (OSError, EOFError)):
            raise
        weights = [n for n in sorted(os.listdir(path)) if n.endswith((".safetensors", ".bin"))] if os.path.isdir(path) else []
        where = os.path.join(os.fspath(path), weights[0]) if len(weights) == 1 else os.fspath(path)
        raise DataFormatError(f"cannot load the model weights ({type(exc).__name__}: {exc})", where) from None


def build_reranker(name: str, backbone: str | os.PathLike, **config: Any) -> Reranker:
    """A fresh student of architecture ``name`` on the encoder in ``backbone`` (a local folder, a
    storage URI or a Hugging Face Hub id)."""
    from rankdistill.model_source import local_model_folder

    cls = get_reranker_class(name)
    backbone = local_model_folder(backbone, "student.backbone")
    check_model_folder(backbone, "student.backbone")
    return _loading(backbone, lambda: cls.from_backbone(backbone, **config))


def load_reranker(path: str | os.PathLike, **kwargs: Any) -> Reranker:
    """Load a saved student; the class comes from ``config.json``'s ``model_type``. A plain Hugging
    Face sequence-classification checkpoint (e.g. a sentence-transformers ``CrossEncoder`` folder)
    loads as a mono cross-encoder, a lightning-ir Set-Encoder checkpoint (``model_type:
    set-encoder``) through :meth:`SetEncoder.from_lightning_ir`. ``path``: a local folder, a
    storage URI (copied once per node) or a Hugging Face Hub id."""
    from rankdistill.model_source import local_model_folder

    path = local_model_folder(path, "model")
    config_file = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_file, encoding="utf-8") as fh:
            model_type = json.load(fh).get("model_type")
    except OSError as exc:
        raise ConfigError(f"no readable config.json ({exc})", path=config_file) from exc
    if model_type == "set-encoder":  # a lightning-ir checkpoint (webis/set-encoder-*)
        return SetEncoder.from_lightning_ir(path, **kwargs)
    cls = _BY_MODEL_TYPE.get(model_type)
    if cls is None:  # a plain Hugging Face checkpoint: a mono cross-encoder if its head was trained
        return _loading(path, lambda: _plain_cross_encoder(path))
    return _loading(path, lambda: cls.from_pretrained(path, **kwargs))


def _plain_cross_encoder(path: str | os.PathLike) -> MonoCrossEncoder:
    """A sequence-classification checkpoint as a mono cross-encoder; a checkpoint without its
    head's weights (a plain encoder) is refused, naming the folder and the keys."""
    from rankdistill.models.backbone import load_trained_sequence_classifier

    model = MonoCrossEncoder.from_backbone_model(load_trained_sequence_classifier(path),
                                                 MonoCrossEncoder._load_hf_tokenizer(path))
    return model.eval()


def load_student(path: str | os.PathLike, **kwargs: Any):
    """Any saved student (a reranker or a dense retriever), by ``config.json``'s ``model_type``."""
    return load_reranker(path, **kwargs)
