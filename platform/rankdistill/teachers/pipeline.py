"""The labeling pipeline: work units → (stored keys dropped) → an actor pool → the label store.

One code path labels a batch: :class:`Labeler` holds one backend and one template and turns a
batch of work units into label rows. Ray Data runs it as ``map_batches`` over an actor pool
(:func:`run_on_ray`: pool size, CPUs and GPUs per actor from :class:`PipelineConfig`); the bare
loop (:func:`run_bare`) calls the same object in-process, which is what the benchmark compares
against. Work units are built on the driver (:func:`work_units`), so stored keys are dropped
before any actor, model or backend call exists.

Work units: listwise — one candidate list (``CandidateList.to_dict()`` + ``list_key``), its windows
advanced in lockstep with the other lists of the batch; pairwise — one sampled pair; pointwise —
one (query, document).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rankdistill.data.records import CandidateList
from rankdistill.errors import ConfigError
from rankdistill.teachers.backends import BackendConfig, make_backend
from rankdistill.teachers.listwise import ListwiseConfig, list_key, rerank_listwise
from rankdistill.teachers.pairwise import PairwiseConfig, pair_units, score_pairs
from rankdistill.teachers.parsing import REPAIR_KINDS
from rankdistill.teachers.pointwise import PointwiseConfig, point_list_units, point_units, score_points
from rankdistill.teachers.prompts import load_template
from rankdistill.teachers.store import SCHEMAS, UNIT_COLUMNS, LabelStore

CALLS_COLUMN = "_backend_calls"


@dataclass
class PipelineConfig:
    """How labeling runs: on Ray Data (an actor pool, each actor holding one backend) or bare."""

    use_ray: bool = True
    num_actors: int = 1  # actor pool size
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # e.g. 1 per vLLM/hf replica on a GPU cluster (tensor parallel: > 1)
    batch_size: int = 16  # work units per actor call (queries for listwise, labels otherwise)
    progress: bool = True

    def __post_init__(self) -> None:
        from rankdistill.config import check_range

        check_range("num_actors", self.num_actors, minimum=1)
        check_range("batch_size", self.batch_size, minimum=1)
        check_range("cpus_per_actor", self.cpus_per_actor, above=0)
        check_range("gpus_per_actor", self.gpus_per_actor, minimum=0)


@dataclass
class LabelerSpec:
    """Everything an actor needs to build its backend and label (picklable)."""

    kind: str
    teacher_id: str
    template: str
    template_overrides: dict[str, Any] = field(default_factory=dict)
    backend: BackendConfig = field(default_factory=BackendConfig)
    listwise: ListwiseConfig = field(default_factory=ListwiseConfig)
    pairwise: PairwiseConfig = field(default_factory=PairwiseConfig)
    pointwise: PointwiseConfig = field(default_factory=PointwiseConfig)


def work_units(kind: str, lists: Iterable[CandidateList], spec: LabelerSpec) -> list[dict[str, Any]]:
    units: list[dict[str, Any]] = []
    for cl in lists:
        if kind == "listwise":
            units.append(dict(cl.to_dict(), list_key=list_key(cl.docids, spec.listwise)))
        elif kind == "pairwise":
            units.extend(pair_units(cl, spec.pairwise))
        elif kind == "pointwise":
            units.extend(point_units(cl, spec.pointwise))
        else:
            raise ConfigError(f"unknown label kind '{kind}' (listwise, pairwise, pointwise)", "kind")
    return units


def unit_key(kind: str, unit: dict[str, Any]) -> tuple:
    return tuple(unit[c] for c in UNIT_COLUMNS[kind])


def pending_units(kind: str, units: Sequence[dict[str, Any]], stored: set[tuple]) -> list[dict[str, Any]]:
    return [u for u in units if unit_key(kind, u) not in stored]


class Labeler:
    """Holds one backend; ``labeler(batch)`` → label rows (a pyarrow Table in the store schema,
    plus a ``_backend_calls`` column whose sum is the number of backend calls made)."""

    def __init__(self, spec: LabelerSpec):
        self.spec = spec
        self.template = load_template(spec.template, spec.template_overrides)
        if spec.backend.name == "ensemble" and spec.kind != "pointwise":
            raise ConfigError(f"the 'ensemble' backend gives pointwise labels, not {spec.kind} ones",
                              "teacher.backend.name")
        self.backend = make_backend(spec.backend)
        if spec.kind == "listwise" and self.backend.judges_text:
            raise ConfigError(f"listwise labels need a generating LLM (hf or vllm), not the '{self.backend.name}' "
                              "backend", "teacher.backend.name")
        self.meta = {"teacher": spec.teacher_id, "template_id": self.template.id, "template_hash": self.template.hash}
        print(f"{spec.kind} labeler {spec.teacher_id}: {self.backend.description}", flush=True)  # (precision resolved here)

    def label(self, units: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        kind, spec = self.spec.kind, self.spec
        if kind == "listwise":
            lists = [CandidateList.from_dict(u) for u in units]
            rows = []
            for unit, result in zip(units, rerank_listwise(lists, self.backend, self.template, spec.listwise), strict=True):
                for w in result.windows:
                    rows.append(dict(self.meta, list_key=unit["list_key"], window_size=spec.listwise.window_size,
                                     stride=spec.listwise.stride, **vars(w)))
            return rows
        if kind == "pairwise":
            return [dict(self.meta, seed=spec.pairwise.seed, **r)
                    for r in score_pairs(units, self.backend, self.template, spec.pairwise)]
        return [dict(self.meta, **r) for r in score_points(units, self.backend, self.template)]

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        units = batch.to_pylist() if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch).to_pylist()
        before = self.backend.calls
        rows = self.label(units)
        schema = SCHEMAS[self.spec.kind]
        table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
        calls = self.backend.calls - before
        column = [calls] + [0] * (table.num_rows - 1) if table.num_rows else []
        return table.append_column(CALLS_COLUMN, pa.array(column, type=pa.int64()))


@dataclass
class PipelineStats:
    units: int = 0  # work units labeled in this run
    labels: int = 0  # label rows written
    files: int = 0
    backend_calls: int = 0
    seconds: float = 0.0
    repairs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPAIR_KINDS, 0))

    @property
    def units_per_second(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else 0.0


def _units_in(kind: str, table: pa.Table) -> int:
    if kind == "listwise":
        return len(set(zip(table["qid"].to_pylist(), table["list_key"].to_pylist(), strict=True)))
    return table.num_rows


def _consume(kind: str, tables: Iterable[pa.Table], store: LabelStore | None, stats: PipelineStats,
             on_batch: Callable[[int], None] | None) -> None:
    for table in tables:
        if table.num_rows == 0:
            continue
        stats.backend_calls += int(pc.sum(table[CALLS_COLUMN]).as_py() or 0)
        labels = table.drop_columns([CALLS_COLUMN])
        if store is not None and store.write(kind, labels) is not None:
            stats.files += 1
        units = _units_in(kind, labels)
        stats.units += units
        stats.labels += labels.num_rows
        if kind == "listwise":
            for repair in labels["repair"].to_pylist():
                stats.repairs[repair] += 1
        if on_batch:
            on_batch(units)


def run_bare(units: Sequence[dict[str, Any]], spec: LabelerSpec, store: LabelStore | None, batch_size: int,
             on_batch: Callable[[int], None] | None = None, labeler: Labeler | None = None) -> PipelineStats:
    """The same batches through one in-process :class:`Labeler` (no Ray)."""
    stats = PipelineStats()
    started = time.perf_counter()
    if units:
        labeler = labeler or Labeler(spec)
        batches = (labeler(pa.Table.from_pylist(list(units[i : i + batch_size])))
                   for i in range(0, len(units), max(1, batch_size)))
        _consume(spec.kind, batches, store, stats, on_batch)
    stats.seconds = time.perf_counter() - started
    return stats


def run_on_ray(units: Sequence[dict[str, Any]], spec: LabelerSpec, store: LabelStore | None,
               config: PipelineConfig, on_batch: Callable[[int], None] | None = None) -> PipelineStats:
    """``ray.data`` pipeline: units → ``map_batches(Labeler)`` on an actor pool → store, one file
    per output batch, written by the driver as batches stream out."""
    import ray.data

    stats = PipelineStats()
    started = time.perf_counter()
    if units:
        size = max(1, config.batch_size)
        blocks = max(1, min(-(-len(units) // size), 1000))
        ds = ray.data.from_items(list(units), override_num_blocks=blocks)
        remote: dict[str, Any] = {"num_cpus": config.cpus_per_actor}
        if config.gpus_per_actor:
            remote["num_gpus"] = config.gpus_per_actor
        ds = ds.map_batches(
            Labeler,
            fn_constructor_kwargs={"spec": spec},
            batch_size=size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=max(1, config.num_actors)),
            **remote,
        )
        _consume(spec.kind, ds.iter_batches(batch_size=None, batch_format="pyarrow"), store, stats, on_batch)
    stats.seconds = time.perf_counter() - started
    return stats


@dataclass
class LabelingResult:
    """What :func:`label_lists` did: ``units_total`` asked for, ``units_skipped`` already stored."""

    kind: str
    teacher_id: str
    template_hash: str
    units_total: int
    units_skipped: int
    stats: PipelineStats


@dataclass
class LabelPlan:
    """What labelling ``lists`` asks for: every work unit, and those not in the store yet."""

    spec: LabelerSpec
    template_hash: str
    units: list[dict[str, Any]]
    pending: list[dict[str, Any]]


def plan_labels(lists: Sequence[CandidateList], spec: LabelerSpec, store: LabelStore) -> LabelPlan:
    """The work units of ``lists`` for ``spec``'s teacher, and which of them the store lacks."""
    template = load_template(spec.template, spec.template_overrides)
    units = work_units(spec.kind, lists, spec)
    pending = pending_units(spec.kind, units, store.unit_keys(spec.kind, spec.teacher_id, template.hash))
    return LabelPlan(spec, template.hash, list(units), list(pending))


def run_plan(plan: LabelPlan, store: LabelStore, config: PipelineConfig, desc: str | None = None) -> LabelingResult:
    """Label ``plan.pending`` into ``store``: on Ray (``config.use_ray``; Ray must be initialised)
    or in-process; a progress bar when ``config.progress``."""
    from tqdm.auto import tqdm

    spec = plan.spec
    pending = plan.pending
    if spec.kind == "pointwise" and spec.backend.name == "ensemble":  # fusion scores whole lists
        pending = point_list_units(plan.units, plan.pending)
    bar = tqdm(total=len(plan.pending), desc=desc or f"labeling ({spec.kind}, {spec.teacher_id})", unit="unit",
               disable=not config.progress or not plan.pending, mininterval=1.0)
    try:
        if not plan.pending:
            stats = PipelineStats()
        elif config.use_ray:
            stats = run_on_ray(pending, spec, store, config, bar.update)
        else:
            stats = run_bare(pending, spec, store, config.batch_size, bar.update)
    finally:
        bar.close()
    return LabelingResult(spec.kind, spec.teacher_id, plan.template_hash, len(plan.units),
                          len(plan.units) - len(plan.pending), stats)


def label_lists(lists: Sequence[CandidateList], spec: LabelerSpec, store: LabelStore, config: PipelineConfig,
                desc: str | None = None) -> LabelingResult:
    """Label ``lists`` with ``spec``'s teacher into ``store``, skipping every stored key (a label an
    earlier run or iteration paid for is not asked again): :func:`plan_labels` then :func:`run_plan`."""
    return run_plan(plan_labels(lists, spec, store), store, config, desc)
