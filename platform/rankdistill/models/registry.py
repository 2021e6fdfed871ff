"""Name -> reranker class, and loading a saved student without knowing its class."""

from __future__ import annotations

import json
import os
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.models.base import Reranker
from rankdistill.models.celi import CELI
from rankdistill.models.duo import DuoCrossEncoder
from rankdistill.models.listconranker import ListConRanker
from rankdistill.models.mono import MonoCrossEncoder
from rankdistill.models.set_encoder import SetEncoder

RERANKERS: dict[str, type[Reranker]] = {
    cls.registry_name: cls for cls in (MonoCrossEncoder, CELI, SetEncoder, ListConRanker, DuoCrossEncoder)
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


def get_reranker_class(name: str) -> type[Reranker]:
    """``"mono" | "celi" | "set-encoder" | "listconranker" | "duo"`` -> class."""
    key = name.strip().lower().replace("_", "-")
    if key not in RERANKERS:
        raise ConfigError(f"unknown reranker '{name}'; known: {', '.join(sorted(RERANKERS))}", key="model.name")
    return RERANKERS[key]


def build_reranker(name: str, backbone: str | os.PathLike, **config: Any) -> Reranker:
    """A fresh student of architecture ``name`` on the encoder in ``backbone`` (local directory)."""
    return get_reranker_class(name).from_backbone(backbone, **config)


def load_reranker(path: str | os.PathLike, **kwargs: Any) -> Reranker:
    """Load a saved student; the class comes from ``config.json``'s ``model_type``. A plain Hugging
    Face sequence-classification checkpoint (e.g. a sentence-transformers ``CrossEncoder`` folder)
    loads as a mono cross-encoder, a lightning-ir Set-Encoder checkpoint (``model_type:
    set-encoder``) through :meth:`SetEncoder.from_lightning_ir`."""
    config_file = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_file, encoding="utf-8") as fh:
            model_type = json.load(fh).get("model_type")
    except OSError as exc:
        raise ConfigError(f"no readable config.json ({exc})", path=config_file) from exc
    if model_type == "set-encoder":  # a lightning-ir checkpoint (webis/set-encoder-*)
        return SetEncoder.from_lightning_ir(path, **kwargs)
    cls = _BY_MODEL_TYPE.get(model_type, MonoCrossEncoder)
    return cls.from_pretrained(path, **kwargs)
