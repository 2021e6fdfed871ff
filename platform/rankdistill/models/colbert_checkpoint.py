"""The trained projection (and settings) of a ColBERT checkpoint folder, in either home format.

- **colbert-ai** (stanford-futuredata/ColBERT, e.g. ``colbert-ir/colbertv2.0``): one Hugging Face
  folder whose ``config.json`` names ``HF_ColBERT``; the weights hold the encoder under ``bert.``
  and the projection as ``linear.weight [dim, hidden]`` (no bias). ``artifact.metadata`` holds
  ``dim``, ``query_maxlen`` / ``doc_maxlen`` (all tokens, ``[CLS] [Q] ... [SEP]`` included), the
  marker tokens ``query_token_id`` / ``doc_token_id``, ``attend_to_mask_tokens``,
  ``mask_punctuation`` and ``similarity``.
- **pylate** (sentence-transformers layout, e.g. ``lightonai/colbertv2.0``): ``modules.json`` lists
  the Transformer at the root, then a ``pylate.models.Dense.Dense`` (or sentence-transformers
  ``Dense``) folder such as ``1_Dense/`` with ``config.json`` (``in_features``, ``out_features``,
  ``bias``, ``activation_function``) and ``linear.weight``. ``config_sentence_transformers.json``
  holds ``query_prefix`` / ``document_prefix`` (the markers), ``query_length`` /
  ``document_length`` (all tokens), ``attend_to_expansion_tokens``, ``skiplist_words`` and
  ``do_query_expansion``.

:func:`read_projection` returns the projection weight and the :class:`~rankdistill.models.colbert.
ColBERT` options those settings mean (our lengths count text tokens only, so both libraries'
totals lose 3: ``[CLS]``, the marker and ``[SEP]``), or ``None`` when the folder has no
projection (a plain encoder such as all-MiniLM-L6-v2).
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rankdistill.errors import ConfigError, DataFormatError

#: ``[CLS]``, the ``[Q]`` / ``[D]`` marker and ``[SEP]``: in both libraries' lengths, not in ours
SPECIAL_TOKENS = 3
_IDENTITY = ("torch.nn.modules.linear.Identity", "Identity")


@dataclass
class ColbertProjection:
    """``weight``: ``float [dim, hidden]``; ``source``: ``"colbert-ai"`` or ``"pylate"``;
    ``options``: the ColBERT options the checkpoint sets (dim, lengths, markers, ...);
    ``file``: where the weight was read."""

    weight: torch.Tensor
    source: str
    file: Path
    options: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataFormatError(f"not valid JSON ({exc})", path) from None


def _tensor_from(folder: Path, name: str) -> tuple[torch.Tensor, Path] | None:
    """Tensor ``name`` from a folder's safetensors (single or sharded) or ``pytorch_model.bin``."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.exists():
        shard = _read_json(index).get("weight_map", {}).get(name)
        candidates = [folder / shard] if shard else []
    else:
        candidates = [folder / "model.safetensors"]
    for path in candidates:
        if path.exists():
            with safe_open(str(path), framework="pt") as fh:
                if name in fh.keys():  # noqa: SIM118 (safe_open has no __contains__)
                    return fh.get_tensor(name), path
            return None
    legacy = folder / "pytorch_model.bin"
    if legacy.exists():
        state = torch.load(legacy, map_location="cpu", weights_only=True, mmap=True)
        return (state[name].clone(), legacy) if name in state else None
    return None


def _colbert_ai(folder: Path) -> ColbertProjection | None:
    config = folder / "config.json"
    architectures = (_read_json(config).get("architectures") or []) if config.exists() else []
    found = _tensor_from(folder, "linear.weight")
    if found is None:
        if "HF_ColBERT" in architectures:
            raise ConfigError(f"'{folder}' is a colbert-ai checkpoint (HF_ColBERT) without 'linear.weight' in its "
                              "weights", key="backbone")
        return None
    weight, file = found
    options: dict[str, Any] = {"dim": int(weight.shape[0])}
    meta_file = folder / "artifact.metadata"
    if meta_file.exists():
        meta = _read_json(meta_file)
        if meta.get("similarity", "cosine") != "cosine":
            raise ConfigError(f"similarity '{meta['similarity']}' is not supported (ColBERT here scores by cosine "
                              "MaxSim)", path=meta_file, key="similarity")
        if "dim" in meta and int(meta["dim"]) != options["dim"]:
            raise DataFormatError(f"dim {meta['dim']} but linear.weight has {options['dim']} rows", meta_file)
        for ours, theirs in (("query_length", "query_maxlen"), ("passage_length", "doc_maxlen")):
            if meta.get(theirs) is not None:
                options[ours] = int(meta[theirs]) - SPECIAL_TOKENS
        for ours, theirs in (("query_marker", "query_token_id"), ("document_marker", "doc_token_id"),
                             ("attend_to_mask_tokens", "attend_to_mask_tokens"),
                             ("skip_punctuation", "mask_punctuation")):
            if meta.get(theirs) is not None:
                options[ours] = meta[theirs]
    else:  # colbert-ai's defaults
        options.update(query_marker="[unused0]", document_marker="[unused1]", attend_to_mask_tokens=False)
    return ColbertProjection(weight.float(), "colbert-ai", file, options)


def _pylate(folder: Path) -> ColbertProjection | None:
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return None
    modules = _read_json(modules_file)
    dense = [m for m in modules if str(m.get("type", "")).endswith(".Dense")]
    if not dense:
        return None
    if len(dense) > 1 or len(modules) != 2:
        raise ConfigError(f"{len(modules)} modules with {len(dense)} Dense layers; only Transformer -> one "
                          "bias-free linear Dense is supported", path=modules_file, key="modules")
    sub = folder / str(dense[0].get("path", ""))
    config_file = sub / "config.json"
    config = _read_json(config_file) if config_file.exists() else {}
    if config.get("bias"):
        raise ConfigError("a Dense projection with a bias is not supported", path=config_file, key="bias")
    if config.get("activation_function", _IDENTITY[0]) not in _IDENTITY:
        raise ConfigError(f"activation '{config['activation_function']}' is not supported (Identity only)",
                          path=config_file, key="activation_function")
    found = _tensor_from(sub, "linear.weight")
    if found is None:
        raise ConfigError(f"the Dense folder '{sub}' holds no 'linear.weight'", key="backbone")
    weight, file = found
    options: dict[str, Any] = {"dim": int(weight.shape[0])}
    st_file = folder / "config_sentence_transformers.json"
    st = _read_json(st_file) if st_file.exists() else {}
    if st.get("do_query_expansion") is False:
        raise ConfigError("ColBERT here always expands queries with [MASK]", path=st_file, key="do_query_expansion")
    for ours, theirs, default in (("query_marker", "query_prefix", "[Q] "), ("document_marker", "document_prefix", "[D] ")):
        marker = st.get(theirs, default)
        if not marker:
            raise ConfigError("an empty marker is not supported", path=st_file, key=theirs)
        options[ours] = marker
    for ours, theirs, default in (("query_length", "query_length", 32), ("passage_length", "document_length", 180)):
        options[ours] = int(st.get(theirs) or default) - SPECIAL_TOKENS
    options["attend_to_mask_tokens"] = bool(st.get("attend_to_expansion_tokens", False))
    skiplist = st.get("skiplist_words", list(string.punctuation))
    if set(skiplist) not in (set(string.punctuation), set()):
        raise ConfigError("only the punctuation skiplist (or none) is supported", path=st_file, key="skiplist_words")
    options["skip_punctuation"] = bool(skiplist)
    return ColbertProjection(weight.float(), "pylate", file, options)


def read_projection(path: str | os.PathLike) -> ColbertProjection | None:
    """The projection of the ColBERT checkpoint in local folder ``path`` (pylate's ``1_Dense`` or
    colbert-ai's ``linear.weight``) with the options its settings mean, or ``None``."""
    folder = Path(os.fspath(path))
    return _pylate(folder) or _colbert_ai(folder)
