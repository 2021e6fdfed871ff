"""``jobs/pairdistill.py``: PairDistill's iterative training of a dense student
(../shared/papers/pairdistill.md §4.3), every stage on Ray.

Per iteration ``t = 1..iterations``:

1. retrieve the top ``candidates.k`` passages of every training query with the current
   retriever (iteration 1: the first stage, ``candidates.method`` — BM25 on Ray or a run file
   through :class:`~rankdistill.retrieval.first_stage.FirstStage`, or the zero-shot student;
   later: the student trained in iteration ``t - 1`` and its faiss index);
2. pointwise teacher labels for them (Ray Data actor pool → label store);
3. each list reranked by those labels; pairs ``(i, j)``, ``|i − j| < δ``, sampled on it (seeded);
4. pairwise teacher labels for the pairs (both orders combined by the labeller);
5. examples built from the label store in Ray Data tasks (pointwise ``[B, k]`` and pairwise
   ``[B, k, k]`` targets, qrels positives for L_CL) → Ray Train (DDP or DeepSpeed) continues the
   student with ``L = L_CL + λ_KD·L_KD + λ_pair·L_pair`` (or L_ZS);
6. the corpus encoded by a Ray Data actor pool, a faiss index built and saved with the iteration;
7. dev and test evaluated with ir-measures.

The label store skips every label an earlier iteration or run already paid for.

On a cluster, ``output_dir`` and ``label_store`` are storage URIs (``s3://...``) or shared mounts
(a local folder that some node cannot see is refused before any work, naming the key to set):
the encoder actors write each iteration's embedding shards there and the faiss index is saved
there; models, evaluation runs and the table are made on the driver in a staging folder and
uploaded after each iteration. Student folders reach the Ray workers through the object store. The job is one
MLflow parent run with one child run per iteration (iteration 0 is the zero-shot student). The
checkpoint kept is the best on the dev split (a fixed, seeded slice carved from the training
queries when the collection has none: SciFact); test figures are reported only. The kept student
is registered as a pyfunc model tagged with its teachers, label-store keys, data and parent run.

Training lists: the passages of a query are its ``passages_per_query`` best by pointwise teacher
score among all its labelled passages, so an iteration trains on its fresh top-k together with
earlier iterations' labelled passages (the paper re-trains on the refreshed top-k alone; the
union costs no teacher call and keeps every label in use).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rankdistill.data.candidates import candidate_lists
from rankdistill.data.datasets import DatasetSpec, corpus_digest, load_split, resolve
from rankdistill.data.records import CandidateList, Document, Qrels, Query, Run
from rankdistill.data.splits import carve
from rankdistill.data.trec import write_trec_run
from rankdistill.errors import ConfigError
from rankdistill.evaluation.metrics import DEFAULT_MEASURES, EvaluationResult, evaluate
from rankdistill.interrupt import sigterm_as_exit
from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray
from rankdistill.retrieval.colbert_index import ColbertIndex, ColbertIndexConfig
from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig
from rankdistill.retrieval.encode import EncodeConfig
from rankdistill.retrieval.first_stage import FirstStage, FirstStageConfig
from rankdistill.storage import join as join_path
from rankdistill.teachers.config import TeacherConfig, check_backend_files, teacher_id
from rankdistill.teachers.pairwise import PairwiseConfig, rerank_by_scores
from rankdistill.teachers.pipeline import LabelerSpec, LabelingResult, PipelineConfig, label_lists
from rankdistill.teachers.pointwise import PointwiseConfig
from rankdistill.teachers.prompts import load_template
from rankdistill.teachers.store import LabelStore
from rankdistill.tracking import TrackingConfig, close_stale_runs, start_run
from rankdistill.tracking.mlflow_tracking import check_reachable_from_workers, write_json
from rankdistill.training import TrainingConfig, fit
from rankdistill.training.factories import (
    LossConfig,
    LossFactory,
    StudentConfig,
    StudentFactory,
    backbone_path,
)
from rankdistill.training.pair_examples import (
    EXTRA_FIELDS,
    KD_TARGETS,
    PairExamplesConfig,
    pair_example_dataset,
)
from rankdistill.workflows import pairdistill_checks as checks


@dataclass
class SplitsConfig:
    """Which queries train, select and test. ``dev: null`` carves ``dev_queries`` training queries
    (seeded by ``seed``) into a dev set that is then not trained on."""

    train: str = "train"
    dev: str | None = None
    dev_queries: int = 50
    test: str = "test"
    max_train_queries: int | None = None  # the first N training queries (by id), after carving dev
    max_test_queries: int | None = None
    seed: int = 13
    # dev may be the test split only when this says so (MS MARCO's dev is both); the table is marked
    allow_select_on_test: bool = False

    def __post_init__(self) -> None:
        from rankdistill.config import check_range

        check_range("max_train_queries", self.max_train_queries, minimum=1)  # was a [:-1] slice
        check_range("max_test_queries", self.max_test_queries, minimum=1)
        check_range("dev_queries", self.dev_queries, minimum=1)


@dataclass
class CandidatesConfig(FirstStageConfig):
    """The first stage's keys (:class:`FirstStageConfig`: ``method``, ``run``, ``k``, ``bm25``,
    ``num_shards``) plus the student's retrieval. ``method``: iteration 1's candidates — ``bm25``
    (on Ray), ``run`` (a TREC file or a name in the dataset's runs/: its training queries' top k;
    its dev / test queries give the table's first-stage row) or ``student`` (the zero-shot student
    and its index). ``k``: the retrieval depth of every iteration (paper: 100)."""

    METHODS: ClassVar[tuple[str, ...]] = ("bm25", "run", "student")
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"first_stage": "method", "depth": "k", "bm25_shards": "num_shards"}

    k: int = 100
    eval_depth: int = 100  # documents retrieved per dev / test query for evaluation (R@100 needs 100)
    index: DenseIndexConfig = field(default_factory=DenseIndexConfig)  # bi-encoder students
    colbert_index: ColbertIndexConfig = field(default_factory=ColbertIndexConfig)  # ColBERT students
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    # a folder or URI where indexes are kept by what they index (student weights, corpus, index
    # settings), so the same student is never encoded twice: iteration 0's zero-shot student is
    # the same in every run of a collection. null: every iteration encodes.
    index_cache: str | None = None


@dataclass
class ExamplesOptions:
    """How label-store rows become examples (see :class:`PairExamplesConfig`)."""

    passages_per_query: int = 64  # paper Table 7
    min_grade: int = 1
    add_positive: bool = True
    seed: int = 42
    kd_target: str = "logit"  # logit: logprob_yes − logprob_no (raw teacher score) | log_p_yes (old form)

    def __post_init__(self) -> None:
        from rankdistill.config import check_range

        check_range("passages_per_query", self.passages_per_query, minimum=2)  # a list ranks 2 or more


@dataclass
class PairDistillConfig:
    dataset: str = "demo"
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    iterations: int = 2  # paper: 2 (§5.4: the gain converges after 2)
    student: StudentConfig = field(default_factory=lambda: StudentConfig(architecture="bi-encoder"))
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    pointwise_teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(template="pairdistill-pointwise"))
    pairwise_teacher: TeacherConfig | None = field(
        default_factory=lambda: TeacherConfig(template="pairdistill-pairwise"))
    pointwise: PointwiseConfig = field(default_factory=PointwiseConfig)
    pairwise: PairwiseConfig = field(default_factory=PairwiseConfig)
    examples: ExamplesOptions = field(default_factory=ExamplesOptions)
    loss: LossConfig = field(default_factory=lambda: LossConfig(name="pairdistill"))
    training: TrainingConfig = field(default_factory=TrainingConfig)
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    select_on: str = "nDCG@10"
    evaluate_teacher: bool = True  # the pointwise teacher reranking the test first stage (costs labels)
    # dev check: the pointwise teacher reranking the dev candidates, printed beside the zero-shot
    # student's dev figure (select_on), with a warning naming both when the teacher is not above it
    check_teacher_on_dev: bool = True
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    label_store: str = "outputs/labels"
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="pairdistill", register_model="pairdistill-student"))
    output_dir: str = "outputs/pairdistill"

    def _check_eval_depth(self) -> None:
        """Every measure's cutoff within ``candidates.eval_depth``: nDCG@10 on 5 retrieved documents
        would be reported as nDCG@10 (it is nDCG@5's ranking, scaled by the ideal at 10)."""
        from rankdistill.evaluation.metrics import parse_measures

        try:
            parsed = parse_measures(self.measures)
        except ConfigError as exc:
            raise ConfigError(exc.problem, "measures") from None
        cutoffs = {name: int(m.params["cutoff"]) for name, m in zip(self.measures, parsed, strict=True)
                   if m.params.get("cutoff")}
        if not cutoffs:
            return
        deepest = max(cutoffs, key=lambda name: cutoffs[name])
        depth = self.candidates.eval_depth
        if depth < cutoffs[deepest]:
            raise ConfigError(f"{depth} documents per dev / test query are fewer than the deepest cutoff of "
                              f"measures, {deepest} ({cutoffs[deepest]}): it would be computed on {depth} documents "
                              f"and reported under its name; set candidates.eval_depth >= {cutoffs[deepest]}, or "
                              f"take {deepest} out of measures", "candidates.eval_depth")

    def check(self) -> None:
        """Errors that can be found before Ray starts."""
        if self.iterations < 1:
            raise ConfigError("must be >= 1", "iterations")
        if self.candidates.method == "run" and not self.candidates.run:
            raise ConfigError("method 'run' needs candidates.run (a TREC run of the training queries)",
                              "candidates.run")
        if self.candidates.k < 2:
            raise ConfigError("must be >= 2", "candidates.k")
        if self.candidates.eval_depth < 1:
            raise ConfigError("must be >= 1", "candidates.eval_depth")
        self._check_eval_depth()
        if self.splits.dev is None and self.splits.dev_queries < 1:
            raise ConfigError("must be >= 1 when splits.dev is null (a dev set is carved from train)",
                              "splits.dev_queries")
        if self.loss.name not in ("pairdistill", "pairdistill_zs"):
            raise ConfigError(f"PairDistill trains with 'pairdistill' (L) or 'pairdistill_zs' (L_ZS), not "
                              f"'{self.loss.name}'", "loss.name")
        if self.loss.name == "pairdistill_zs" and self.pairwise_teacher is None:
            raise ConfigError("L_ZS without L_CL needs the pairwise teacher", "pairwise_teacher")
        self.pairwise.check()
        if self.examples.kd_target not in KD_TARGETS:
            raise ConfigError(f"unknown KD target '{self.examples.kd_target}' (known: {', '.join(KD_TARGETS)})",
                              "examples.kd_target")
        if self.select_on not in self.measures:  # was: a table of '-' and zero-shot always "selected"
            raise ConfigError(f"'{self.select_on}' is not one of the measures computed ({', '.join(self.measures)}); "
                              "add it to measures or select on one of them", "select_on")
        if self.splits.dev is not None and self.splits.dev == self.splits.test and not self.splits.allow_select_on_test:
            raise ConfigError(f"dev and test are the same split '{self.splits.test}': the checkpoint would be "
                              "selected on the queries it is reported on (set splits.allow_select_on_test: true "
                              "to do so knowingly; the table is then marked)", "splits.dev")
        if self.splits.train == self.splits.test:
            raise ConfigError(f"train and test are the same split '{self.splits.test}'", "splits.train")
        from rankdistill.models import get_reranker_class

        if not hasattr(get_reranker_class(self.student.architecture), "encode_queries"):
            raise ConfigError(f"'{self.student.architecture}' is not a dense student (bi-encoder, colbert)",
                              "student.architecture")


@dataclass
class Splits:
    train: dict[str, Query]
    dev: dict[str, Query]
    test: dict[str, Query]
    qrels: dict[str, Qrels]  # by split name ("train", "dev", "test")
    dev_source: str  # how dev was made, for the record
    dev_shares_test: int = 0  # dev queries that are also test queries (only with splits.allow_select_on_test)


def load_splits(config: SplitsConfig, spec: DatasetSpec, folder, corpus: dict[str, Document] | None = None) -> Splits:
    """Every split through :func:`load_split` (the checks of every job's loader); test queries
    that are also training queries (by id) are an error, by identical text a warning."""
    known = set(corpus) if corpus is not None else {doc.docid for doc in folder.iter_corpus()}
    train_q, train_qrels = load_split(spec, folder, config.train, known)
    train_ids = sorted(q for q in train_q if q in train_qrels)
    dev_split = config.dev or spec.dev_split
    if dev_split == config.test and not config.allow_select_on_test:
        raise ConfigError(f"the dataset's dev split is the test split '{config.test}': the checkpoint would be "
                          "selected on the queries it is reported on (splits.allow_select_on_test: true allows it)",
                          "splits.dev")
    if dev_split:
        dev_q, dev_qrels = load_split(spec, folder, dev_split, known)
        source = f"split '{dev_split}'"
    else:
        if len(train_ids) <= config.dev_queries:
            raise ConfigError(f"only {len(train_ids)} judged training queries: cannot carve {config.dev_queries} "
                              "for dev", "splits.dev_queries")
        carved = carve(train_ids, config.dev_queries, config.seed)
        dev_q = {q: train_q[q] for q in carved}
        dev_qrels = train_qrels.restricted_to(carved)
        train_ids = [q for q in train_ids if q not in set(carved)]
        source = f"{config.dev_queries} training queries carved with seed {config.seed}"
    if config.max_train_queries is not None:
        train_ids = train_ids[: config.max_train_queries]
    test_q, test_qrels = load_split(spec, folder, config.test, known)
    test_ids = sorted(q for q in test_q if q in test_qrels)[: config.max_test_queries]
    dev_ids = sorted(q for q in dev_q if q in dev_qrels)
    _check_disjoint(train_ids, train_q, test_ids, test_q, config)
    shared = _check_dev_not_test(dev_ids, test_ids, source, config)
    by_split = {"training": {q: train_q[q] for q in train_ids}, "dev": {q: dev_q[q] for q in dev_ids},
                "test": {q: test_q[q] for q in test_ids}}
    checks.warn_empty_queries(by_split)
    _warn_duplicate_texts(by_split)
    return Splits(
        train={q: train_q[q] for q in train_ids},
        dev={q: dev_q[q] for q in dev_ids},
        test={q: test_q[q] for q in test_ids},
        qrels={"train": train_qrels.restricted_to(train_ids), "dev": dev_qrels.restricted_to(dev_ids),
               "test": test_qrels.restricted_to(test_ids)},
        dev_source=source,
        dev_shares_test=shared,
    )


def _check_dev_not_test(dev_ids: list[str], test_ids: list[str], source: str, config: SplitsConfig) -> int:
    """Dev queries that are test queries (by id: a dev qrels file copied from test) would select the
    checkpoint on the queries it is reported on: an error unless ``splits.allow_select_on_test``.
    Returns how many are shared (the table is then marked)."""
    shared = sorted(set(dev_ids) & set(test_ids))
    if shared and not config.allow_select_on_test:
        raise ConfigError(f"{len(shared)} of {len(dev_ids)} dev queries ({source}) are also test queries of split "
                          f"'{config.test}' (e.g. '{shared[0]}'): the checkpoint would be selected on the queries it "
                          "is reported on (splits.allow_select_on_test: true allows it; the table is then marked)",
                          "splits.dev")
    return len(shared)


def _normal_text(query: Query) -> str:
    return " ".join(query.text.lower().split())


def _warn_duplicate_texts(splits: dict[str, dict[str, Query]]) -> dict[str, int]:
    """Warn, with counts, about query texts repeated inside a split and between dev and the other
    splits (test vs training is :func:`_check_disjoint`'s); returns the counts by kind."""
    import logging

    log = logging.getLogger(__name__)
    counts: dict[str, int] = {}
    for name, queries in splits.items():
        seen: dict[str, str] = {}
        repeats = []
        for qid in sorted(queries):
            text = _normal_text(queries[qid])
            if text in seen:
                repeats.append((qid, seen[text]))
            else:
                seen[text] = qid
        if repeats:
            counts[name] = len(repeats)
            log.warning("%d %s queries repeat the text of another %s query (e.g. '%s' = '%s')",
                        len(repeats), name, name, *repeats[0])
    for first, second in (("training", "dev"), ("dev", "test")):
        if first not in splits or second not in splits:
            continue
        texts = {_normal_text(q) for q in splits[first].values()}
        same = sorted(q for q, query in splits[second].items() if _normal_text(query) in texts)
        if same:
            counts[f"{second}~{first}"] = len(same)
            log.warning("%d of %d %s queries have the text of a %s query (e.g. '%s')",
                        len(same), len(splits[second]), second, first, same[0])
    return counts


def _check_disjoint(train_ids: list[str], train_q: dict[str, Query], test_ids: list[str],
                    test_q: dict[str, Query], config: SplitsConfig) -> None:
    """Test queries trained on: by id an error, by identical text a warning with the count."""
    import logging

    shared = sorted(set(train_ids) & set(test_ids))
    if shared:
        raise ConfigError(f"{len(shared)} test queries of split '{config.test}' are also training queries of split "
                          f"'{config.train}' (e.g. '{shared[0]}'): the test figures would be on trained queries",
                          "splits.test")
    train_texts = {" ".join(train_q[q].text.lower().split()) for q in train_ids}
    same = [q for q in test_ids if " ".join(test_q[q].text.lower().split()) in train_texts]
    if same:
        logging.getLogger(__name__).warning(
            "%d of %d test queries have the text of a training query (e.g. '%s'): they may inflate the test figures",
            len(same), len(test_ids), same[0])


def _spec(kind: str, teacher: TeacherConfig, config: PairDistillConfig) -> LabelerSpec:
    return LabelerSpec(kind=kind, teacher_id=teacher_id(teacher, f"{kind}_teacher"), template=teacher.template,
                       template_overrides=dict(teacher.template_overrides), backend=teacher.backend,
                       pairwise=config.pairwise, pointwise=config.pointwise)


@dataclass
class Stage:
    """One row of the job's table: a system evaluated on dev and test."""

    name: str
    dev: dict[str, float]
    test: dict[str, float]
    teacher_calls: int = 0
    model_dir: str | None = None  # where the student was published (output_dir/iteration-N/model)
    local_model_dir: str | None = field(default=None, repr=False)  # its copy on the driver (staging)


class PairDistill:
    """The job's state across iterations (one instance per run)."""

    def __init__(self, config: PairDistillConfig):
        config.check()
        checks.check_before_ray(config)
        from rankdistill.storage import is_uri

        self.config = config
        # where everything is published (a local folder or a storage URI), and the driver's staging
        # folder for what is made here (the same folder when output_dir is local)
        self.remote = is_uri(config.output_dir)
        self.output = config.output_dir if self.remote else str(Path(config.output_dir).resolve())
        self.staging = Path(tempfile.mkdtemp(prefix="rankdistill-pairdistill-") if self.remote else self.output)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.spec, self.folder = resolve(config.dataset)
        self.corpus: dict[str, Document] = self.folder.corpus()
        self.splits = load_splits(config.splits, self.spec, self.folder, self.corpus)
        if not self.splits.train:
            raise ConfigError("no judged training queries", "splits.train")
        checks.check_training_queries(config, len(self.splits.train))
        self.corpus_digest = corpus_digest(self.corpus)
        # BM25 or a run file; None: the zero-shot student is the first stage (see first_stage)
        self.first: FirstStage | None = (None if config.candidates.method == "student" else
                                         FirstStage(config.candidates, self.folder, self.corpus, key="candidates",
                                                    show_progress=False))
        checks.check_index_factory(config, len(self.corpus))
        if config.candidates.method == "run":
            checks.check_candidate_run(self.first, self.corpus, {"training": self.splits.train, "dev": self.splits.dev,
                                                                 "test": self.splits.test}, config.candidates.k)
        checks.warn_empty_passages(self.corpus)
        self.store = LabelStore(config.label_store)
        self.point_spec = _spec("pointwise", config.pointwise_teacher, config)
        self.pair_spec = _spec("pairwise", config.pairwise_teacher, config) if config.pairwise_teacher else None
        self.point_hash = load_template(self.point_spec.template, self.point_spec.template_overrides).hash
        self.pair_hash = (load_template(self.pair_spec.template, self.pair_spec.template_overrides).hash
                          if self.pair_spec else None)
        self.teacher_calls = 0
        self.check_calls: dict[str, int] = {}  # teacher calls paid for each check's split (shown in its row)
        self.stages: list[Stage] = []
        teachers = {"pointwise_teacher": checks.teacher_identity(self.point_spec.teacher_id, self.point_hash,
                                                                 config.pointwise_teacher.backend)}
        if self.pair_spec is not None:
            teachers["pairwise_teacher"] = checks.teacher_identity(self.pair_spec.teacher_id, self.pair_hash,
                                                                   config.pairwise_teacher.backend)
        self.identity = checks.run_identity(config, teachers, self.spec.name, self.corpus_digest)
        checks.check_identity(self.output, self.identity)

    def location(self, *parts: str) -> str:
        """``output_dir/parts...`` (a path or a URI)."""
        from rankdistill.storage import join

        return join(self.output, *parts)

    def publish(self, *parts: str) -> str:
        """Upload ``staging/parts...`` to ``output_dir/parts...`` (nothing to do for a local output)."""
        from rankdistill.storage import publish

        target = self.location(*parts)
        if self.remote:
            publish(self.staging.joinpath(*parts), target)
        return target

    def check_cluster(self) -> None:
        """Before any work: on a multi-node cluster, every folder a worker opens is seen by every node."""
        from rankdistill.ray_runtime import check_resources, check_shared_folder
        from rankdistill.storage import is_uri

        check_resources(checks.resource_requests(self.config))  # before any teacher is paid

        if not self.remote:
            check_shared_folder(self.output, "output_dir")  # embedding shards are written by actors
        store = self.config.label_store
        check_shared_folder(store if is_uri(store) else Path(store).resolve(), "label_store")  # read by tasks
        check_backend_files(self.config.pointwise_teacher.backend, "pointwise_teacher.backend")
        if self.config.pairwise_teacher is not None:
            check_backend_files(self.config.pairwise_teacher.backend, "pairwise_teacher.backend")

    def cleanup(self) -> None:
        if self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)

    # ---- evaluation -----------------------------------------------------------------------------
    def _evaluate(self, run: Run, split: str) -> EvaluationResult:
        return evaluate(run, self.splits.qrels[split], self.config.measures, self.spec.relevance_threshold)

    def _label(self, lists: list[CandidateList], spec: LabelerSpec, desc: str) -> LabelingResult:
        result = label_lists(lists, spec, self.store, self.config.pipeline, desc=desc)
        self.teacher_calls += result.stats.backend_calls
        return result

    # ---- retrieval ------------------------------------------------------------------------------
    def first_stage(self, queries: dict[str, Query], k: int, model=None, index=None) -> Run:
        """The top ``k`` of ``queries`` by the first stage: BM25 or a run file
        (:class:`FirstStage`), or — ``candidates.method: student`` — the zero-shot student
        (``model``, ``index``: iteration 0's) retrieving."""
        if self.first is None:
            return self.retrieve(model, index, queries, k)
        return self.first.search(queries, k)

    def index_student(self, model_dir: Path, name: str):
        """Encode the corpus on a Ray Data actor pool into ``output_dir/<name>/embeddings``, build the
        faiss index and save it to ``output_dir/<name>/index``."""
        from rankdistill.retrieval.encode import build_dense_index, encode_corpus
        from rankdistill.storage import copy_folder, exists, remove_folder

        cached = self._cached_index(model_dir)
        if cached is not None and exists(join_path(cached, "index")):
            copy_folder(join_path(cached, "index"), self.location(name, "index"))
            loader = ColbertIndex if self.config.student.architecture == "colbert" else DenseIndex
            return loader.load(self.location(name, "index"))
        shards = self.location(name, "embeddings")
        remove_folder(shards)
        encode = dataclasses.replace(self.config.candidates.encode, precision=self.encode_precision())
        encode_corpus(model_dir, self.corpus, shards, encode, output_key="output_dir")
        if self.config.student.architecture == "colbert":  # token vectors, exact MaxSim re-scoring
            index = ColbertIndex.from_shards(shards, self.config.candidates.colbert_index)
        else:
            index = build_dense_index(shards, self.config.candidates.index)
        index.save(self.location(name, "index"))
        if cached is not None:
            copy_folder(self.location(name, "index"), join_path(cached, "index"))
        return index

    def _cached_index(self, model_dir: Path) -> str | None:
        """``index_cache/<key>``: the key digests the student's files, the corpus and the index settings."""
        import hashlib
        import json

        c = self.config.candidates
        if not c.index_cache:
            return None
        from rankdistill.storage import folder_digest

        settings = {"model": folder_digest(model_dir), "dataset": self.spec.name, "corpus": self.corpus_digest,
                    "architecture": self.config.student.architecture,
                    "index": dataclasses.asdict(c.colbert_index if self.config.student.architecture == "colbert"
                                                else c.index)}
        precision = self.encode_precision()  # resolved: auto is never a key (it is bf16 on one node, fp32 on another)
        if precision != "fp32":  # (fp32 indexes keep the keys they had before precision existed)
            settings["precision"] = precision
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]
        return join_path(c.index_cache, key)

    def encode_precision(self) -> str:
        """``candidates.encode.precision`` resolved once for the run (``auto``: where an encoding
        actor runs; :func:`~rankdistill.retrieval.encode.resolve_encode_precision`): passages,
        queries and the index cache key all use this one value."""
        if getattr(self, "_encode_precision", None) is None:
            from rankdistill.retrieval.encode import resolve_encode_precision

            self._encode_precision = resolve_encode_precision(self.config.candidates.encode)
        return self._encode_precision

    def retrieve(self, model, index, queries: dict[str, Query], k: int) -> Run:
        from rankdistill.retrieval.dense_retrieve import retrieve

        return retrieve(model, index, queries, k)

    def evaluate_student(self, name: str, model_dir: Path, folder: str, tracker) -> tuple[Stage, Any, Any]:
        """Index, retrieve and evaluate the student in ``staging/<folder>/model``; publish the folder
        with its dev and test runs (``dev.trec``, ``test.trec``: per-query comparisons need them)."""
        from rankdistill.models import load_student

        index = self.index_student(model_dir, folder)
        model = load_student(model_dir).eval()
        model.use_precision(self.encode_precision())  # queries in the precision the passages were encoded in
        k = self.config.candidates.eval_depth
        results = {}
        for split, queries in (("dev", self.splits.dev), ("test", self.splits.test)):
            run = self.retrieve(model, index, queries, k)
            results[split] = self._evaluate(run, split)
            trec = self.staging / folder / f"{split}.trec"
            write_trec_run(run, trec, tag=name.replace(" ", "_"))
            tracker.log_metrics(results[split].aggregate, prefix=f"{split}/")
            tracker.log_artifact(trec, "runs")
            self.publish(folder, f"{split}.trec")
        dev, test = results["dev"], results["test"]
        self.publish(folder, "model")
        stage = Stage(name, dev.aggregate, test.aggregate, model_dir=self.location(folder, "model"),
                      local_model_dir=str(model_dir))
        self.stages.append(stage)
        return stage, model, index

    # ---- the loop -------------------------------------------------------------------------------
    def label(self, run: Run, iteration: int) -> dict[str, Any]:
        lists = list(candidate_lists(run, self.splits.train, self.corpus, k=self.config.candidates.k))
        point = self._label(lists, self.point_spec, f"iteration {iteration}: pointwise teacher")
        counts = {"pointwise_units": point.units_total, "pointwise_skipped": point.units_skipped,
                  "pointwise_calls": point.stats.backend_calls}
        if self.pair_spec is not None:
            scores = self.store.pointwise_scores(self.point_spec.teacher_id, self.point_hash)
            reranked = [rerank_by_scores(cl, scores.get(cl.qid, {})) for cl in lists]
            spec = dataclasses.replace(self.pair_spec, pairwise=dataclasses.replace(self.pair_spec.pairwise,
                                                                                     iteration=iteration))
            pair = self._label(reranked, spec, f"iteration {iteration}: pairwise teacher")  # new draws per iteration
            counts.update(pairwise_units=pair.units_total, pairwise_skipped=pair.units_skipped,
                          pairwise_calls=pair.stats.backend_calls)
        return counts

    def examples(self):
        e = self.config.examples
        config = PairExamplesConfig(
            label_store=self.config.label_store,
            pointwise_teacher=self.point_spec.teacher_id, pointwise_template=self.point_hash,
            pairwise_teacher=self.pair_spec.teacher_id if self.pair_spec else None,
            pairwise_template=self.pair_hash,
            passages_per_query=e.passages_per_query, min_grade=e.min_grade, add_positive=e.add_positive, seed=e.seed,
            kd_target=e.kd_target,
        )
        return pair_example_dataset(self.splits.train, self.corpus, config, qrels=self.splits.qrels["train"])

    def teacher_run(self, candidates: Run, split: str, desc: str) -> EvaluationResult:
        """The pointwise teacher reranking ``candidates`` of ``split`` (``dev`` | ``test``): the top
        ``candidates.k`` of each query labelled (what the store lacks is paid for, ``desc`` on
        the progress bar), ordered by their stored scores (a passage without one last), evaluated."""
        queries = {"dev": self.splits.dev, "test": self.splits.test}[split]
        lists = list(candidate_lists(candidates, queries, self.corpus, k=self.config.candidates.k))
        paid = self._label(lists, self.point_spec, desc).stats.backend_calls
        self.check_calls[split] = self.check_calls.get(split, 0) + paid
        scores = self.store.pointwise_scores(self.point_spec.teacher_id, self.point_hash)
        run = Run({cl.qid: {c.docid: scores.get(cl.qid, {}).get(c.docid, -1e9) for c in cl.candidates}
                   for cl in lists})
        return self._evaluate(run, split)

    def label_teacher_checks(self, candidates: dict[str, Run]) -> None:
        """The pointwise teacher labels the candidates its checks rerank (``dev``, ``test``: the
        top ``candidates.k`` of each query) in one labelling pass, one actor pool for both;
        :meth:`teacher_run` then finds every label stored."""
        from rankdistill.teachers.pipeline import plan_labels, run_plan

        lists, owner = [], {}
        for split, run in candidates.items():
            queries = {"dev": self.splits.dev, "test": self.splits.test}[split]
            lists += candidate_lists(run, queries, self.corpus, k=self.config.candidates.k)
            for qid in queries:
                owner.setdefault(qid, split)
        plan = plan_labels(lists, self.point_spec, self.store)
        pending = dict.fromkeys(candidates, 0)  # the labels each split lacks, to share the calls by
        for unit in plan.pending:
            pending[owner[unit["qid"]]] += 1
        calls = run_plan(plan, self.store, self.config.pipeline,
                         f"teacher on the {' and '.join(candidates)} candidates").stats.backend_calls
        self.teacher_calls += calls
        for split, share in share_calls(calls, pending).items():
            self.check_calls[split] = self.check_calls.get(split, 0) + share

    def teacher_on_dev(self, candidates: Run, student: Stage, tracker) -> Stage:
        """The dev check: the pointwise teacher reranking the dev candidates, printed beside the
        zero-shot student's dev figure; a warning naming both when the teacher is not above it."""
        import warnings

        dev = self.teacher_run(candidates, "dev", "teacher on the dev candidates")
        tracker.log_metrics(dev.aggregate, prefix="teacher_dev/")
        measure = self.config.select_on
        teacher, zero_shot = dev.aggregate.get(measure, float("nan")), student.dev.get(measure, float("nan"))
        print(f"dev {measure}: pointwise teacher {self.point_spec.teacher_id} {teacher:.4f} | "
              f"zero-shot student {zero_shot:.4f}", flush=True)
        message = teacher_below_student(self.point_spec.teacher_id, teacher, zero_shot, measure)
        if message:
            warnings.warn(message, stacklevel=2)
        stage = Stage(f"teacher {self.point_spec.teacher_id} reranking dev candidates", dev.aggregate, {},
                      teacher_calls=self.check_calls.get("dev", 0))
        at = self.stages.index(student) if student in self.stages else len(self.stages)
        self.stages.insert(at, stage)  # listed before the zero-shot student it is compared with
        return stage

    def teacher_as_reranker(self, first_test: Run, tracker) -> Stage | None:
        """The pointwise teacher reranking the test first stage (its own labels, stored)."""
        test = self.teacher_run(first_test, "test", "teacher on the test first stage")
        tracker.log_metrics(test.aggregate, prefix="teacher_test/")
        stage = Stage(f"teacher {self.point_spec.teacher_id} reranking first stage", {}, test.aggregate,
                      teacher_calls=self.check_calls.get("test", 0))
        self.stages.append(stage)
        return stage


def share_calls(calls: int, pending: dict[str, int]) -> dict[str, int]:
    """``calls`` teacher calls made in one labelling pass over several splits' candidates, shared
    among the splits in proportion to the labels each lacked (``pending``; the last split takes the
    rounding), so that every check's row counts the calls paid for it."""
    total = sum(pending.values())
    shares, given = {}, 0
    names = list(pending)
    for n, split in enumerate(names):
        share = calls - given if n == len(names) - 1 else (round(calls * pending[split] / total) if total else 0)
        shares[split] = share
        given += share
    return shares


def teacher_below_student(teacher: str, teacher_dev: float, student_dev: float, measure: str) -> str | None:
    """The dev check's warning (None when the teacher is above the zero-shot student)."""
    if teacher_dev > student_dev:
        return None
    return (f"the pointwise teacher {teacher} is not above the zero-shot student on dev: {measure} "
            f"{teacher_dev:.4f} (teacher) vs {student_dev:.4f} (zero-shot student); distilling it is not "
            "expected to help (an ensemble teacher, teacher.backend.name: ensemble, may be stronger)")


def _initial_student(config: StudentConfig, folder: Path) -> Path:
    """The zero-shot student saved in the driver's staging folder (``iteration-0/model``)."""
    model = StudentFactory(config)()
    target = folder / "model"
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target)
    return target


def run_pairdistill(config: PairDistillConfig) -> dict[str, Any]:
    """Run the job (see the module docstring). SIGTERM (``ray job stop``) ends it in order: its
    MLflow runs are marked FAILED and a Ray instance it started is shut down; a run killed harder
    (SIGKILL) is marked KILLED when the job next starts on the same ``output_dir``."""
    with sigterm_as_exit():
        return _run_pairdistill(config)


def _run_pairdistill(config: PairDistillConfig) -> dict[str, Any]:
    from rankdistill.workflows.folder_lock import lock_folders

    job = PairDistill(config)
    # one job at a time on the outputs and on the label store, before Ray starts
    with lock_folders([(job.output, "output_dir"), (config.label_store, "label_store")], "jobs/pairdistill.py"):
        return _run_locked(job, config)


def _run_locked(job: PairDistill, config: PairDistillConfig) -> dict[str, Any]:
    c = config
    if job.remote and not c.training.storage_path:  # Ray Train's checkpoints beside the outputs
        c = dataclasses.replace(c, training=dataclasses.replace(c.training, storage_path=job.location("ray_train")))
    started = init_ray(c.ray)
    tags = {"job": "pairdistill", "architecture": c.student.architecture, "dataset": job.spec.name,
            "loss": c.loss.name, "pointwise_teacher": job.point_spec.teacher_id,
            "pairwise_teacher": job.pair_spec.teacher_id if job.pair_spec else ""}
    summary: dict[str, Any] = {"dev": job.splits.dev_source, "train_queries": len(job.splits.train),
                               "dev_queries": len(job.splits.dev), "test_queries": len(job.splits.test)}
    instance = {"job": "pairdistill", "output_dir": job.output}  # this job on this output folder
    try:
        job.check_cluster()
        stale = close_stale_runs(c.tracking, instance)
        if stale:
            print(f"marked {len(stale)} MLflow run(s) of an earlier, killed run of this output_dir KILLED", flush=True)
        with start_run(c.tracking, tags={**tags, **instance}) as parent:
            parent.log_config(c)
            parent.log_params({"dev_source": job.splits.dev_source, "train_queries": len(job.splits.train),
                               "backbone_path": backbone_path(c.student.backbone) if not c.student.init_from else
                               c.student.init_from})
            if parent.active:
                check_reachable_from_workers(parent.uri)
            # the first stage on dev / test, for the table (method student: iteration 0's row is it)
            first_dev = first_train = None
            if job.first is not None:  # dev, test and iteration 1's training candidates in one search
                k = c.candidates.eval_depth
                first_dev, first_test, first_train = job.first.search_many(
                    [(job.splits.dev, k), (job.splits.test, k), (job.splits.train, c.candidates.k)])
                dev, test = job._evaluate(first_dev, "dev"), job._evaluate(first_test, "test")
                parent.log_metrics(dev.aggregate, prefix="first_stage_dev/")
                parent.log_metrics(test.aggregate, prefix="first_stage_test/")
                job.stages.append(Stage(f"first stage ({job.first.name})", dev.aggregate, test.aggregate))
                checked = {**({"dev": first_dev.top(c.candidates.k)} if c.check_teacher_on_dev else {}),
                           **({"test": first_test} if c.evaluate_teacher else {})}
                if checked:
                    job.label_teacher_checks(checked)
                if c.evaluate_teacher:
                    job.teacher_as_reranker(first_test, parent)

            model_dir = _initial_student(c.student, job.staging / "iteration-0")
            with start_run(c.tracking, tags={**tags, "iteration": 0, "job": "pairdistill iteration 0"},
                           nested=True) as child:
                stage, model, index = job.evaluate_student("student zero-shot", model_dir, "iteration-0", child)
                if c.check_teacher_on_dev:
                    candidates = (first_dev.top(c.candidates.k) if first_dev is not None
                                  else job.first_stage(job.splits.dev, c.candidates.k, model, index))
                    teacher_dev = job.teacher_on_dev(candidates, stage, child)
                    summary["teacher_dev"] = teacher_dev.dev
            best = stage
            for iteration in range(1, c.iterations + 1):
                folder = f"iteration-{iteration}"
                with start_run(c.tracking, tags={**tags, "iteration": iteration,
                                                 "job": f"pairdistill iteration {iteration}"}, nested=True) as child:
                    if iteration > 1:
                        run = job.retrieve(model, index, job.splits.train, c.candidates.k)
                    else:
                        run = first_train if first_train is not None else job.first_stage(
                            job.splits.train, c.candidates.k, model, index)
                    calls_before = job.teacher_calls
                    counts = job.label(run, iteration)
                    child.log_metrics(counts)
                    training = dataclasses.replace(c.training, run_name=f"{c.training.run_name}-iteration-{iteration}")
                    identity = {**job.identity, "student": {**dataclasses.asdict(c.student), "init_from": str(model_dir)},
                                "loss": dataclasses.asdict(c.loss), "examples": dataclasses.asdict(c.examples),
                                "iteration": iteration}
                    checks.record_identity(job.output, job.identity)
                    result = fit(StudentFactory(c.student, init_from=str(model_dir)), LossFactory(c.loss),
                                 job.examples(), training, job.staging / folder, tracking=child.worker_handle(),
                                 extra_fields=EXTRA_FIELDS, identity=identity)
                    model_dir = result.model_dir
                    stage, model, index = job.evaluate_student(f"student iteration {iteration}", model_dir, folder,
                                                               child)
                    stage.teacher_calls = job.teacher_calls - calls_before
                    child.log_metrics({"teacher_calls": stage.teacher_calls, "train_steps": result.steps})
                if stage.dev.get(c.select_on, float("-inf")) > best.dev.get(c.select_on, float("-inf")):
                    best = stage
            summary.update(best=best.name, best_model_dir=best.model_dir, teacher_calls=job.teacher_calls,
                           stages=[{k: v for k, v in dataclasses.asdict(s).items() if k != "local_model_dir"}
                                   for s in job.stages])
            parent.log_metrics({f"best_dev/{k}": v for k, v in best.dev.items()})
            parent.log_metrics({f"best_test/{k}": v for k, v in best.test.items()})
            parent.log_metrics({"teacher_calls": job.teacher_calls})
            parent.set_tags({"selected": best.name})
            if c.tracking.register_model and best.local_model_dir:
                version = parent.register_model(best.local_model_dir, c.tracking.register_model, tags={
                    **tags, "selected": best.name, "parent_run": parent.run_id or "",
                    "label_store": c.label_store,
                    "pointwise_labels": f"{job.point_spec.teacher_id}/{job.point_hash}",
                    "pairwise_labels": f"{job.pair_spec.teacher_id}/{job.pair_hash}" if job.pair_spec else "",
                    "dev": job.splits.dev_source, "model_dir": best.model_dir, **{f"dev_{k}": f"{v:.4f}" for k, v in best.dev.items()},
                    **{f"test_{k}": f"{v:.4f}" for k, v in best.test.items()}})
                summary["registered_version"] = version
            summary["parent_run_id"] = parent.run_id
            table = format_table(job.stages, c.select_on, best.name, job.spec.name,
                                 same_split=(c.splits.dev or job.spec.dev_split) == c.splits.test
                                 or job.splits.dev_shares_test > 0)
            print(table, flush=True)
            (job.staging / "table.txt").write_text(table + "\n")
            parent.log_artifact(job.staging / "table.txt", "report")
            job.publish("table.txt")
        write_json(summary, job.staging / "summary.json")
        job.publish("summary.json")
    finally:
        shutdown_ray(started, c.ray)
        job.cleanup()
    return summary


def format_table(stages: list[Stage], measure: str, best: str, dataset: str, same_split: bool = False) -> str:
    width = max(len(s.name) for s in stages) + 2
    how = ("SELECTED ON THE TEST QUERIES (dev is the test split: splits.allow_select_on_test)" if same_split
           else "dev selects, test reports")
    lines = [f"{dataset}: {measure} ({how})",
             f"{'system':<{width}}{'dev':>8}{'test':>8}{'teacher calls':>15}"]
    for s in stages:
        dev = f"{s.dev[measure]:.4f}" if measure in s.dev else "-"
        test = f"{s.test[measure]:.4f}" if measure in s.test else "-"
        mark = "  <- selected" if s.name == best else ""
        lines.append(f"{s.name:<{width}}{dev:>8}{test:>8}{s.teacher_calls:>15}{mark}")
    return "\n".join(lines)
