"""What ``jobs/pairdistill.py`` checks before it pays a teacher or trains (issue 21).

- :func:`check_before_ray`: the student and loss (:func:`check_student`, as train_reranker), both
  teachers (:func:`rankdistill.teachers.config.check_teacher`, as the label job), the storage locations, and whether the
  training queries make one batch — on the driver, before Ray starts;
- :func:`resource_requests` for :func:`rankdistill.ray_runtime.check_resources`, right after Ray
  starts and before any work;
- :func:`run_identity`, :func:`check_identity` and :func:`record_identity`: what a run's outputs
  depend on (teachers, templates, candidates, dataset and corpus, splits, examples, loss,
  student), kept in ``output_dir/run_identity.json`` once training starts; a later run of another
  identity in the same ``output_dir`` is refused before Ray starts, listing every difference (it
  would otherwise resume the old run's checkpoints after paying the new teacher).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from rankdistill.errors import ConfigError
from rankdistill.ray_runtime import ResourceRequest

if TYPE_CHECKING:  # pragma: no cover
    from rankdistill.workflows.pairdistill import PairDistillConfig

IDENTITY_FILE = "run_identity.json"


def check_before_ray(config: PairDistillConfig) -> None:
    """Errors found on the driver before Ray starts, each naming its key."""
    from rankdistill.storage import check_folder_location
    from rankdistill.teachers.config import check_teacher
    from rankdistill.teachers.prompts import load_template
    from rankdistill.training.factories import check_student

    check_folder_location(config.output_dir, "output_dir")
    check_folder_location(config.label_store, "label_store")
    check_writable(config.output_dir, "output_dir")
    check_writable(config.label_store, "label_store")
    if config.candidates.index_cache:
        check_folder_location(config.candidates.index_cache, "candidates.index_cache")
    if config.training.storage_path:
        check_folder_location(config.training.storage_path, "training.storage_path")
    check_student(config.student, config.loss)
    teachers = [("pointwise", config.pointwise_teacher, "pointwise_teacher")]
    if config.pairwise_teacher is not None:
        teachers.append(("pairwise", config.pairwise_teacher, "pairwise_teacher"))
    for kind, teacher, key in teachers:
        try:
            template = load_template(teacher.template, dict(teacher.template_overrides))
        except ConfigError as exc:
            raise ConfigError(exc.problem, f"{key}.template") from None
        check_teacher(teacher, kind, template, key)


def check_training_queries(config: PairDistillConfig, train_queries: int) -> None:
    """One example per training query: fewer than one batch per worker can never train."""
    t = config.training
    needed = t.num_workers * t.batch_size * t.gradient_accumulation
    if train_queries < needed:
        key = "splits.max_train_queries" if config.splits.max_train_queries is not None else "training.batch_size"
        raise ConfigError(f"{train_queries} training queries make fewer examples than one batch "
                          f"({t.num_workers} worker(s) × batch size {t.batch_size} × accumulation "
                          f"{t.gradient_accumulation} = {needed})", key)


def resource_requests(config: PairDistillConfig) -> list[ResourceRequest]:
    """Every stage's request: Ray Train's workers, the encoder actors, the teacher actors."""
    t, e, p = config.training, config.candidates.encode, config.pipeline
    requests = [
        ResourceRequest("training worker", {"CPU": (float(t.cpus_per_worker), "training.cpus_per_worker"),
                                            "GPU": (1.0 if t.use_gpu else 0.0, "training.use_gpu")},
                        t.num_workers, "training.num_workers"),
        ResourceRequest("encoder actor", {"CPU": (float(e.cpus_per_actor), "candidates.encode.cpus_per_actor"),
                                          "GPU": (float(e.gpus_per_actor), "candidates.encode.gpus_per_actor")},
                        e.num_actors, "candidates.encode.num_actors"),
    ]
    if p.use_ray:
        requests.append(ResourceRequest("teacher actor", {"CPU": (float(p.cpus_per_actor), "pipeline.cpus_per_actor"),
                                                          "GPU": (float(p.gpus_per_actor), "pipeline.gpus_per_actor")},
                                        p.num_actors, "pipeline.num_actors"))
    return requests


def run_identity(config: PairDistillConfig, teachers: dict[str, dict[str, Any]], dataset: str,
                 corpus_digest: str) -> dict[str, Any]:
    """What the run's labels, examples and students depend on (not: iterations, training length,
    measures, tracking, Ray, the pipeline's parallelism). ``teachers``: per key, its resolved id,
    template hash and backend."""
    candidates = {k: v for k, v in dataclasses.asdict(config.candidates).items() if k not in ("encode", "index_cache")}
    return _jsonable({
        "dataset": {"name": dataset, "corpus_sha256": corpus_digest},
        "splits": dataclasses.asdict(config.splits),
        "teachers": teachers,
        "pointwise": dataclasses.asdict(config.pointwise),
        "pairwise": dataclasses.asdict(config.pairwise) if config.pairwise_teacher is not None else None,
        "candidates": candidates,
        "examples": dataclasses.asdict(config.examples),
        "loss": dataclasses.asdict(config.loss),
        "student": dataclasses.asdict(config.student),
    })


def teacher_identity(teacher_id: str, template_hash: str, backend: Any) -> dict[str, Any]:
    keep = ("name", "model", "replay_file", "model_type", "dtype")
    backend_fields = {k: v for k, v in dataclasses.asdict(backend).items() if k in keep}
    return {"id": teacher_id, "template_hash": template_hash, "backend": backend_fields}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _read(location: str) -> dict[str, Any] | None:
    from pyarrow import fs

    from rankdistill.storage import filesystem, join

    filesystem_, path = filesystem(join(location, IDENTITY_FILE))
    if filesystem_.get_file_info(path).type != fs.FileType.File:
        return None
    with filesystem_.open_input_stream(path) as stream:
        return json.loads(stream.read().decode())


def _upgrade(stored: dict[str, Any]) -> dict[str, Any]:
    """An identity stored before ``candidates`` took the first stage's keys, read in today's
    keys (``first_stage`` → ``method``, ``depth`` → ``k``, ``bm25_shards`` → ``num_shards``;
    ``bm25``: the default settings, the only ones BM25 ran with then), so its run can continue."""
    from rankdistill.retrieval.bm25 import BM25Config
    from rankdistill.workflows.pairdistill import CandidatesConfig

    candidates = stored.get("candidates")
    renamed = CandidatesConfig.RENAMED_KEYS
    if not isinstance(candidates, dict) or not renamed.keys() & candidates.keys():
        return stored
    upgraded = {renamed.get(key, key): value for key, value in candidates.items()}
    upgraded.setdefault("bm25", _jsonable(dataclasses.asdict(BM25Config())))
    return {**stored, "candidates": upgraded}


def check_identity(output_dir: str, identity: dict[str, Any]) -> None:
    """Refuse, before Ray starts, to continue in ``output_dir`` a run of another identity,
    listing every difference."""
    from rankdistill.storage import join

    stored = _read(output_dir)
    if stored is None:
        return
    old, new = _flatten(_upgrade(stored)), _flatten(identity)
    differences = [f"{key}: stored {old.get(key)!r}, now {new.get(key)!r}"
                   for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if differences:
        raise ConfigError(
            f"{join(output_dir, IDENTITY_FILE)} belongs to a run with other teachers, data or training lists, "
            f"whose checkpoints this run would resume ({'; '.join(differences)}); use another output_dir, "
            "or delete that one", "output_dir")


def record_identity(output_dir: str, identity: dict[str, Any]) -> None:
    """Keep the identity beside the run once it trains (a run that failed before training can be
    fixed and re-run in the same folder)."""
    from rankdistill.storage import filesystem, join

    filesystem_, path = filesystem(join(output_dir, IDENTITY_FILE))
    filesystem_.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem_.open_output_stream(path) as stream:
        stream.write(json.dumps(identity, indent=1, sort_keys=True).encode())


def warn_empty_passages(corpus: dict[str, Any]) -> int:
    """Documents with neither title nor text can only be retrieved by chance: a warning with the count."""
    import logging

    empty = sorted(d for d, doc in corpus.items() if not doc.contents.strip())
    if empty:
        logging.getLogger(__name__).warning("%d of %d documents are empty (e.g. '%s')", len(empty), len(corpus),
                                            empty[0])
    return len(empty)


def warn_empty_queries(splits: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Queries with an empty text (by split) make the same ranking for every such query: a warning
    with the count, as for empty passages; returns the counts of the splits that have some."""
    import logging

    counts = {}
    for name, queries in splits.items():
        empty = sorted(q for q, query in queries.items() if not query.text.strip())
        if empty:
            counts[name] = len(empty)
            logging.getLogger(__name__).warning("%d of %d %s queries have an empty text (e.g. '%s')", len(empty),
                                                len(queries), name, empty[0])
    return counts


def check_candidate_run(first: Any, corpus: dict[str, Any], splits: dict[str, dict[str, Any]], k: int,
                        key: str = "candidates") -> None:
    """``candidates.method: run``, before Ray: the run (``first``: its
    :class:`~rankdistill.retrieval.first_stage.FirstStage`) has candidates for training queries
    (a run of another split would leave iteration 1 with none: a :class:`ConfigError` naming
    ``<key>.run``), and the top ``k`` of every query of ``splits`` (by name: ``training``, ``dev``,
    ``test``) are documents of the corpus (else a :class:`DataFormatError` naming the run file, its
    line and the key). Training queries the run leaves out are a warning with the count."""
    import logging

    from rankdistill.data.textio import iter_lines
    from rankdistill.errors import DataFormatError

    path, run = first.run_path(), first.read_run()
    training = splits["training"]
    listed = [q for q in training if q in run]
    if not listed:
        others = {name: sum(q in run for q in queries) for name, queries in splits.items() if name != "training"}
        found = ", ".join(f"{n} of its queries are {name} queries" for name, n in others.items() if n)
        raise ConfigError(f"none of the {len(run)} queries of the run '{path}' is a training query "
                          f"({len(training)} training queries){f'; {found}' if found else ''}: iteration 1 would "
                          "have no candidates (a run of the training split is needed)", f"{key}.run")
    if len(listed) < len(training):
        logging.getLogger(__name__).warning("the run '%s' (%s.run) has no candidates for %d of %d training queries",
                                            path, key, len(training) - len(listed), len(training))
    used = {q for queries in splits.values() for q in queries if q in run}
    missing = {(q, d) for q in used for d, _ in run.ranked(q)[:k] if d not in corpus}
    if not missing:
        return
    for line, text in iter_lines(path):
        parts = text.split()
        if (parts[0], parts[2]) in missing:
            raise DataFormatError(f"run document '{parts[2]}' (query '{parts[0]}') is not in the corpus "
                                  f"({len(missing)} of the run's candidates are not; {key}.run)", path, line)


def check_index_factory(config: PairDistillConfig, corpus_size: int) -> None:
    """A bi-encoder student's faiss index (``candidates.index``: a ``factory`` string, or ``kind``
    ``hnsw`` / ``ivf``) built, before Ray, for the student's dimension and checked against the
    corpus size: an unknown factory, one faiss cannot build at that dimension (``IVF4096,PQ64`` at
    32) or one the corpus cannot train (``IVF256,PQ32`` on 331 passages) is a :class:`ConfigError`
    naming ``candidates.index.factory`` (or ``candidates.index.ivf_nlist``), not a failure after the
    teacher's labels and a corpus encode were paid for."""
    index = config.candidates.index
    if config.student.architecture == "colbert" or (not index.factory and index.kind == "flat"):
        return
    from rankdistill.retrieval.dense_index import DenseIndex
    from rankdistill.training.factories import StudentFactory

    dim = StudentFactory(config.student)().embedding_dim
    try:
        DenseIndex(dim, index).check_trainable(corpus_size)
    except ConfigError as exc:
        raise ConfigError(f"{exc.problem} (the student's dimension: {dim}; the corpus: {corpus_size} passages)",
                          f"candidates.{exc.key or 'index'}") from None


def check_writable(location: str, key: str) -> None:
    """A local folder the job writes (created when missing) takes a file, before Ray starts: a
    read-only ``output_dir`` or ``label_store`` was a ``PermissionError`` after the teacher's labels
    were paid for. Storage URIs are checked by :func:`rankdistill.storage.check_folder_location`."""
    import tempfile
    from pathlib import Path

    from rankdistill.storage import is_uri

    if is_uri(location):
        return
    folder = Path(location).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rankdistill-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"'{location}' cannot be written ({exc.strerror or exc}): the job writes there; make it "
                          "writable or choose another folder", key) from None
