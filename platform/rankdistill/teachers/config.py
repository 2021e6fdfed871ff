"""What a teacher is in a job's config (:class:`TeacherConfig`), the id its labels are stored
under (:func:`teacher_id`), and the checks every job that labels runs on it: before Ray starts
(:func:`check_teacher`) and, on a cluster, that its files reach every node (:func:`check_backend_files`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.teachers.backends import BackendConfig


@dataclass
class TeacherConfig:
    id: str | None = None  # the teacher id stored with every label (default: from the model / recording)
    template: str = "rankzephyr"  # a shipped template name or a YAML path
    template_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {chat: tokenizer}
    backend: BackendConfig = field(default_factory=BackendConfig)


def teacher_id(config: TeacherConfig, key: str = "teacher") -> str:
    """``teacher.id``, else one derived from what the teacher is, so that two different teachers
    never share labels: a recording's file name, a ``package:`` model's name, a storage URI or Hub
    id in full, and a local model folder's name plus the digest of its files (every trained
    student's folder is called ``model``: the name alone would give them all one id)."""
    if config.id:
        return config.id
    backend = config.backend
    source = backend.replay_file if backend.name == "replay" else backend.model
    if not source:
        raise ConfigError(f"set {key}.id (or a model / replay_file to derive it from)", f"{key}.id")
    if source.startswith("package:"):
        return source.split(":", 1)[1]
    if backend.name == "replay":
        return Path(source).name.split(".")[0] or source
    from rankdistill.storage import folder_digest, is_uri

    if is_uri(source) or not Path(source).is_dir():  # a URI or a Hub id names the model in full
        return source
    folder = Path(source).resolve()
    return f"{folder.name}-{folder_digest(folder)[:12]}"


def check_teacher(teacher: TeacherConfig, kind: str, template, key: str) -> None:
    """The teacher ``key`` (``teacher``, ``pointwise_teacher``...) can give ``kind`` labels with
    ``template``: the template is of that kind, a ``reranker`` model is a saved model of the right
    architecture whose scoring head is in its weights, a replay backend has its recording.
    Every job that labels runs it before Ray starts."""
    if template.kind != kind:
        raise ConfigError(f"template '{template.id}' is a {template.kind} template, but this teacher gives "
                          f"{kind} labels", f"{key}.template")
    backend = teacher.backend
    if backend.name == "reranker":
        from rankdistill.models.registry import check_model_folder
        from rankdistill.storage import is_uri

        if not backend.model:
            raise ConfigError("the reranker backend needs a trained student folder", f"{key}.backend.model")
        if kind == "listwise":
            raise ConfigError("the reranker backend cannot give listwise labels (use hf or vllm)", f"{key}.backend.name")
        check_model_folder(backend.model, f"{key}.backend.model")
        if not is_uri(backend.model):  # a folder, or a Hub id's cached snapshot
            from rankdistill.model_source import hub_folder, is_hub_id

            local = str(hub_folder(backend.model, f"{key}.backend.model")) if is_hub_id(backend.model) else backend.model
            _check_reranker_teacher(local, kind, f"{key}.backend.model")
    if backend.name == "replay" and not backend.replay_file:
        raise ConfigError("the replay backend needs a recording", f"{key}.backend.replay_file")
    if backend.name == "ensemble":
        _check_ensemble(backend, kind, template, key)


def _check_ensemble(backend: BackendConfig, kind: str, template, key: str) -> None:
    """An ensemble gives pointwise labels; its teacher members pass :func:`check_teacher` as
    pointwise teachers and a saved dense member is a model folder, each error naming the member."""
    from rankdistill.models.registry import check_model_folder

    if kind != "pointwise":
        raise ConfigError(f"the ensemble backend fuses pointwise scores and cannot give {kind} labels",
                          f"{key}.backend.name")
    for n, member in enumerate(backend.members):
        where = f"{key}.backend.members[{n}]"
        if member.kind == "teacher":
            check_teacher(TeacherConfig(template=template.id, backend=member.backend), "pointwise", template, where)
        elif member.kind == "dense" and member.model:
            check_model_folder(member.model, f"{where}.model")


def _check_reranker_teacher(folder: str, kind: str, key: str) -> None:
    """A pairwise reranker teacher is a duo cross-encoder; every reranker teacher loads with its
    trained head (:func:`rankdistill.models.load_reranker` refuses a head missing from the weights)."""
    import json

    from rankdistill.models import load_reranker
    from rankdistill.models.duo import DuoConfig

    with open(Path(folder) / "config.json", encoding="utf-8") as fh:
        model_type = json.load(fh).get("model_type")
    if kind == "pairwise" and model_type != DuoConfig.model_type:
        raise ConfigError(f"'{folder}' is a '{model_type}' model; a pairwise reranker teacher must be a duo "
                          f"cross-encoder ('{DuoConfig.model_type}')", key)
    try:
        load_reranker(folder)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key) from None


def check_backend_files(backend: BackendConfig, key: str = "teacher.backend") -> None:
    """On a cluster of several nodes, the files a teacher actor opens must be URIs or on a shared
    mount (a ``package:`` model is installed on every node); an ensemble's members' too."""
    from rankdistill.ray_runtime import check_shared_folder
    from rankdistill.storage import is_uri

    def local(path: str | None) -> bool:
        return bool(path) and not path.startswith("package:") and not is_uri(path) and Path(path).exists()

    if backend.name == "replay" and backend.replay_file and not is_uri(backend.replay_file):
        check_shared_folder(Path(backend.replay_file).resolve().parent, f"{key}.replay_file")
    if local(backend.model):
        check_shared_folder(Path(backend.model).resolve(), f"{key}.model")
    for n, member in enumerate(backend.members):
        if member.backend is not None:
            check_backend_files(member.backend, f"{key}.members[{n}].backend")
        for field_name in ("model", "backbone"):
            path = getattr(member, field_name)
            if local(path):
                check_shared_folder(Path(path).resolve(), f"{key}.members[{n}].{field_name}")
