"""Feed bad inputs (configs, overrides, data files, label stores, model folders) to the library the
way a job reads them and print one line per input: what came back (an error and its message, or
the value that a job would have used). Used for issue 14's GOOD / WEAK / BAD table; run it against
two checkouts to compare, e.g.

    PYTHONPATH=platform python scripts/probe_bad_inputs.py > after.txt
    PYTHONPATH=/tmp/old/platform python scripts/probe_bad_inputs.py > before.txt

Nothing here starts Ray or trains; inputs that only fail inside Ray workers are covered by
tests/test_bad_inputs.py.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
CASES = []


def case(name):
    def wrap(fn):
        CASES.append((name, fn))
        return fn
    return wrap


def beir(root: Path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n", corpus=None, queries=None) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "corpus.jsonl").write_text(corpus if corpus is not None else "".join(
        json.dumps({"_id": d, "text": f"text {d}"}) + "\n" for d in ("d1", "d2", "d3")))
    (root / "queries.jsonl").write_text(queries if queries is not None else
                                        '{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n')
    (root / "qrels" / "test.tsv").write_text(qrels)
    return str(root)


def cfg(cls_name, *overrides, path=None):
    from rankdistill.config import load_config

    module, cls = {"evaluate": ("rankdistill.workflows.evaluate", "EvaluateConfig"),
                   "label": ("rankdistill.workflows.label", "LabelConfig"),
                   "train": ("rankdistill.workflows.train_reranker", "TrainRerankerConfig")}[cls_name]
    import importlib

    return load_config(getattr(importlib.import_module(module), cls), path, list(overrides))


def evaluate_dataset(tmp: Path, run_text: str, **kw) -> str:
    from rankdistill.data.datasets import DatasetConfig, load_dataset
    from rankdistill.data.trec import read_trec_run
    from rankdistill.evaluation.metrics import evaluate

    data = load_dataset(DatasetConfig(name=beir(tmp / "c", **kw)))
    (tmp / "run.trec").write_text(run_text)
    run = read_trec_run(tmp / "run.trec")
    result = evaluate(run, data.qrels, ["nDCG@10"])
    return f"nDCG@10={result.aggregate['nDCG@10']:.4f} over {result.num_queries} queries"


# -- configs and overrides ---------------------------------------------------------------------------
for override in ["retrieval.k=-5", "retrieval.k=0", "dataset.max_queries=-1", "dataset.max_queries=0",
                 "retrieval.bm25.b=1.5", "retrieval.bm25.k1=-1", "retrieval.bm25.k1=nan", "retrieval.num_shards=0",
                 "evaluation.relevance_threshold=0", "evaluation.measures=[]", "retrieval.method=dense",
                 "retrieval.k=abc", "retrieval.k=2.5", "retrieval.k.x=1", "retrievl.k=10", "retrieval.k"]:
    case(f"evaluate override {override}")(lambda tmp, o=override: repr(cfg("evaluate", o).retrieval)[:90]
                                          if "retrieval" in o else repr(cfg("evaluate", o).evaluation)[:90]
                                          if "evaluation" in o else repr(cfg("evaluate", o).dataset))
for override in ["candidates.k=-1", "pointwise.top_k=-3", "pipeline.batch_size=0", "pipeline.num_actors=0",
                 "teacher.backend.name=openai", "teacher.backend.dtype=fp8", "teacher.backend.batch_size=0",
                 "teacher.backend.device=gpu"]:
    case(f"label override {override}")(lambda tmp, o=override: "accepted: config built" if cfg("label", o) else "")
for override in ["data.passages_per_query=1", "data.max_queries=0", "data.max_queries=-1", "data.negatives_depth=-1",
                 "data.source=label", "evaluation.rerank.depth=-10", "evaluation.max_queries=-1",
                 "evaluation.rerank.num_actors=0"]:
    case(f"train override {override}")(lambda tmp, o=override: "accepted: config built" if cfg("train", o) else "")


@case("yaml: file's bad value vs an override (which is blamed?)")
def _(tmp):
    (tmp / "e.yaml").write_text("retrieval:\n  k: 10\n")
    cfg("evaluate", "retrieval.k=-5", path=tmp / "e.yaml")
    return "accepted"


@case("yaml: top level is a list")
def _(tmp):
    (tmp / "e.yaml").write_text("- a\n- b\n")
    return repr(cfg("evaluate", path=tmp / "e.yaml"))


@case("yaml: a UTF-8 BOM")
def _(tmp):
    (tmp / "e.yaml").write_text("retrieval:\n  k: 7\n", encoding="utf-8-sig")
    return f"retrieval.k={cfg('evaluate', path=tmp / 'e.yaml').retrieval.k}"


@case("yaml: tab indentation")
def _(tmp):
    (tmp / "e.yaml").write_text("retrieval:\n\tk: 7\n")
    return repr(cfg("evaluate", path=tmp / "e.yaml").retrieval)


@case("config file does not exist")
def _(tmp):
    return repr(cfg("evaluate", path=tmp / "nope.yaml"))


# -- datasets -----------------------------------------------------------------------------------------
@case("dataset.name: a misspelt registry name")
def _(tmp):
    from rankdistill.data.datasets import resolve

    return repr(resolve("scifcat"))


@case("dataset.name: a folder path that does not exist")
def _(tmp):
    from rankdistill.data.datasets import resolve

    return repr(resolve(str(tmp / "my-beir")))


@case("dataset folder without queries.jsonl")
def _(tmp):
    from rankdistill.data.datasets import DatasetConfig, load_dataset

    root = Path(beir(tmp / "c"))
    (root / "queries.jsonl").unlink()
    return repr(load_dataset(DatasetConfig(name=str(root))).queries)


@case("qrels judge a document missing from the corpus")
def _(tmp):
    return evaluate_dataset(tmp, "q1 Q0 d1 1 2 t\nq2 Q0 d2 1 2 t\n",
                            qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\tghost\t1\n")


@case("qrels judge a query missing from queries.jsonl")
def _(tmp):
    return evaluate_dataset(tmp, "q1 Q0 d1 1 2 t\nq2 Q0 d2 1 2 t\n",
                            qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq9\td3\t1\n")


@case("qrels with a UTF-8 BOM (header line)")
def _(tmp):
    from rankdistill.data.beir import read_qrels_tsv

    (tmp / "q.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8-sig")
    return repr(read_qrels_tsv(tmp / "q.tsv"))


@case("qrels with a float grade 1.0")
def _(tmp):
    from rankdistill.data.beir import read_qrels_tsv

    (tmp / "q.tsv").write_text("q1\td1\t1.0\n")
    return repr(read_qrels_tsv(tmp / "q.tsv"))


@case("qrels with a repeated (query, document) pair")
def _(tmp):
    from rankdistill.data.beir import read_qrels_tsv

    (tmp / "q.tsv").write_text("q1\td1\t1\nq1\td1\t0\n")
    return repr(read_qrels_tsv(tmp / "q.tsv"))


@case("corpus.jsonl with a UTF-8 BOM")
def _(tmp):
    from rankdistill.data.beir import read_corpus

    (tmp / "c.jsonl").write_text('{"_id": "d1", "text": "x"}\n', encoding="utf-8-sig")
    return repr(list(read_corpus(tmp / "c.jsonl")))


@case("corpus.jsonl with a duplicate id")
def _(tmp):
    from rankdistill.data.beir import read_corpus

    (tmp / "c.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n')
    return repr(read_corpus(tmp / "c.jsonl"))


@case("corpus.jsonl with text null")
def _(tmp):
    from rankdistill.data.beir import read_corpus

    (tmp / "c.jsonl").write_text('{"_id": "d1", "text": null}\n')
    return repr(read_corpus(tmp / "c.jsonl"))


@case("corpus.jsonl in Latin-1")
def _(tmp):
    from rankdistill.data.beir import read_corpus

    (tmp / "c.jsonl").write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    return repr(read_corpus(tmp / "c.jsonl"))


@case("truncated corpus.jsonl.gz")
def _(tmp):
    from rankdistill.data.beir import read_corpus

    data = gzip.compress("".join(json.dumps({"_id": f"d{i}", "text": "x" * 50}) + "\n" for i in range(3000)).encode())
    (tmp / "c.jsonl.gz").write_bytes(data[: len(data) // 2])
    return f"{len(read_corpus(tmp / 'c.jsonl.gz'))} documents"


@case("corrupt run.trec.gz (bytes flipped)")
def _(tmp):
    from rankdistill.data.trec import read_trec_run

    data = gzip.compress("".join(f"q{i} Q0 d{i} 1 1.0 t\n" for i in range(3000)).encode())
    (tmp / "r.trec.gz").write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])
    return f"{len(read_trec_run(tmp / 'r.trec.gz'))} queries"


# -- runs -----------------------------------------------------------------------------------------------
@case("run with a NaN score on the relevant document")
def _(tmp):
    return evaluate_dataset(tmp, "q1 Q0 d1 1 nan t\nq1 Q0 d3 2 1 t\nq2 Q0 d2 1 2 t\n")


@case("run with an inf score")
def _(tmp):
    return evaluate_dataset(tmp, "q1 Q0 d1 1 inf t\nq1 Q0 d3 2 1 t\nq2 Q0 d2 1 2 t\n")


@case("run with a UTF-8 BOM")
def _(tmp):
    return evaluate_dataset(tmp, "\ufeffq1 Q0 d1 1 2 t\nq2 Q0 d2 1 2 t\n")


@case("run whose query ids match no judged query (Q1 vs q1)")
def _(tmp):
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="WARNING %(message)s")
    return evaluate_dataset(tmp, "Q1 Q0 d1 1 2 t\nQ2 Q0 d2 1 2 t\n")


@case("empty run file")
def _(tmp):
    return evaluate_dataset(tmp, "")


@case("run with 3 columns (MS MARCO format)")
def _(tmp):
    return evaluate_dataset(tmp, "q1\td1\t1\n")


@case("run with a document twice for a query")
def _(tmp):
    return evaluate_dataset(tmp, "q1 Q0 d1 1 2 t\nq1 Q0 d1 2 1 t\n")


@case("run with a non-numeric rank")
def _(tmp):
    return evaluate_dataset(tmp, "q1 Q0 d1 first 2 t\n")


@case("a run file name that does not exist (evaluation.first_stage_run)")
def _(tmp):
    from rankdistill.data.beir import BeirFolder
    from rankdistill.data.datasets import resolve_run_path

    return str(resolve_run_path("bm25.tset.trec", BeirFolder(beir(tmp / "c")), "evaluation.first_stage_run"))


# -- label stores -------------------------------------------------------------------------------------
def listwise_row(qid, ranking, template="rankzephyr", template_hash="h1"):
    return {"teacher": "t", "template_id": template, "template_hash": template_hash, "qid": qid, "list_key": "k",
            "pass_index": 0, "window_index": 0, "start": 0, "end": len(ranking), "window_size": 20,
            "stride": 10, "docids_in": ranking, "ranking_out": ranking, "response": "", "repair": "ok",
            "n_out_of_range": 0, "n_repeats": 0, "n_missing": 0, "ranking_after": ranking}


def examples(store_dir, **kw):
    from rankdistill.data.records import Document, Query
    from rankdistill.training.examples import ExamplesConfig, examples_from_labels

    corpus = {d: Document(d, d) for d in "abc"}
    config = ExamplesConfig(source="labels", label_store=str(store_dir), teacher="t", passages_per_query=3, **kw)
    rows = examples_from_labels({"q1": Query("q1", "q")}, corpus, config)
    return f"{len(rows)} examples: " + "; ".join(f"{r['docids']} targets {r['targets']}" for r in rows)


@case("label store: two templates' labels, data.template unset")
def _(tmp):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp / "s")
    store.write("listwise", [listwise_row("q1", ["a", "b", "c"])])
    store.write("listwise", [listwise_row("q1", ["c", "b", "a"], "first-identifier", "h2")])
    return examples(tmp / "s")


@case("label store: a truncated Parquet file")
def _(tmp):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp / "s")
    store.write("listwise", [listwise_row("q1", ["a", "b", "c"])])
    bad = store.write("listwise", [listwise_row("q2", ["a", "b", "c"])])
    bad.write_bytes(bad.read_bytes()[:100])
    return f"units stored: {sorted(store.unit_keys('listwise', 't', 'h1'))}"


@case("label store: a foreign Parquet file (other columns)")
def _(tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp / "s")
    store.write("listwise", [listwise_row("q1", ["a", "b", "c"])])
    pq.write_table(pa.table({"x": [1]}), tmp / "s" / "listwise" / "part-99999999999999999999-foreign.parquet")
    return f"units stored: {sorted(store.unit_keys('listwise', 't', 'h1'))}"


@case("label store: a teacher with no labels")
def _(tmp):
    from rankdistill.teachers.store import LabelStore

    LabelStore(tmp / "s").write("listwise", [listwise_row("q1", ["a", "b", "c"])])
    return _examples_teacher(tmp / "s", "nobody")


def _examples_teacher(store_dir, teacher):
    from rankdistill.data.records import Document, Query
    from rankdistill.training.examples import ExamplesConfig, examples_from_labels

    config = ExamplesConfig(source="labels", label_store=str(store_dir), teacher=teacher, passages_per_query=3)
    return repr(examples_from_labels({"q1": Query("q1", "q")}, {d: Document(d, d) for d in "abc"}, config))


@case("label store folder does not exist")
def _(tmp):
    return _examples_teacher(tmp / "nowhere", "t")


# -- model folders --------------------------------------------------------------------------------------
@case("student.architecture misspelt")
def _(tmp):
    from rankdistill.models import get_reranker_class

    return repr(get_reranker_class("monoo"))


@case("student.backbone: an empty folder (not a model)")
def _(tmp):
    (tmp / "empty").mkdir()
    from rankdistill.models import build_reranker

    return repr(type(build_reranker("mono", tmp / "empty")))


@case("student.init_from: a folder that does not exist")
def _(tmp):
    from rankdistill.models import load_reranker

    return repr(type(load_reranker(tmp / "nope")))


@case("a trained student with a truncated model.safetensors")
def _(tmp):
    sys.path.insert(0, str(REPO / "tests"))
    from model_fixtures import tiny_reranker
    from rankdistill.models import load_reranker

    tiny_reranker("mono").save_pretrained(tmp / "m")
    weights = tmp / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return repr(type(load_reranker(tmp / "m")))


@case("loss.name misspelt")
def _(tmp):
    from rankdistill.losses.registry import get_loss

    return repr(get_loss("infonec"))


@case("student.options with an unknown option")
def _(tmp):
    sys.path.insert(0, str(REPO / "tests"))
    from model_fixtures import minilm_path
    from rankdistill.models import build_reranker

    return repr(type(build_reranker("mono", minilm_path(), bogus=1)))


# -- jobs/pairdistill.py (issue 21): each as the job meets it, before Ray starts ----------------------
def pairdistill_cfg(*overrides):
    from rankdistill.config import load_config
    from rankdistill.workflows.pairdistill import PairDistillConfig

    return load_config(PairDistillConfig, REPO / "configs" / "quickstart.yaml", list(overrides))


def pairdistill_tiny(tmp: Path, *overrides):
    """The quickstart on tiny random teachers and student (tests/test_pairdistill_job.py's)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_pairdistill_job import tiny_models, tiny_overrides

    models = tiny_models(tmp / "models")
    return models, pairdistill_cfg(*tiny_overrides(tmp, models), *[o.format(tmp=tmp, **models) for o in overrides])


def pairdistill_job(tmp: Path, *overrides) -> str:
    from rankdistill.workflows.pairdistill import PairDistill

    _, config = pairdistill_tiny(tmp, *overrides)
    job = PairDistill(config)
    return f"job built: {len(job.splits.train)} train / {len(job.splits.test)} test queries"


for override in ["select_on=R@1000", "splits.max_test_queries=-1", "splits.max_train_queries=-1", "splits.dev=test",
                 "training.max_steps=0", "examples.passages_per_query=1", "candidates.encode.batch_size=0"]:
    case(f"pairdistill override {override}")(lambda tmp, o=override: (pairdistill_cfg(o).check(), "config accepted")[1])

for name, overrides in [
    ("pairdistill pointwise teacher folder missing", ["pointwise_teacher.backend.model={tmp}/missing"]),
    ("pairdistill mono model as the pairwise teacher", ["pairwise_teacher.backend.model={mono}"]),
    ("pairdistill swapped templates", ["pointwise_teacher.template=pairdistill-pairwise",
                                       "pairwise_teacher.template=pairdistill-pointwise"]),
    ("pairdistill student.backbone is a teacher folder", ["student.init_from=null", "student.backbone={mono}"]),
    ("pairdistill negative lambda", ["loss.options.lambda_kd=-1"]),
    ("pairdistill too few training queries", ["splits.max_train_queries=3"]),
    ("pairdistill output_dir foo://", ["output_dir=foo://bucket/out"]),
    ("pairdistill label_store is a file", ["label_store={tmp}/models/mono/config.json"]),
]:
    case(name)(lambda tmp, o=overrides: pairdistill_job(tmp, *o))


@case("pairdistill a plain encoder folder as the pointwise teacher")
def _(tmp):
    from model_fixtures import minilm_path

    return pairdistill_job(tmp, f"pointwise_teacher.backend.model={minilm_path()}")


def pairdistill_collection(tmp: Path, test_qrels: str) -> str:
    queries = "".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in ("q1", "q2", "q3", "t1", "t2"))
    root = Path(beir(tmp / "c", qrels=test_qrels, queries=queries))
    (root / "qrels" / "train.tsv").write_text("q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    (root / "dataset.yaml").write_text("relevance_threshold: 1\n")
    return pairdistill_job(tmp, f"dataset={root}", "splits.dev_queries=1", "training.batch_size=1")


@case("pairdistill qrels naming a document missing from the corpus")
def _(tmp):
    return pairdistill_collection(tmp, "t1\td1\t1\nt2\td9\t1\n")


@case("pairdistill a judged test query missing from queries.jsonl")
def _(tmp):
    return pairdistill_collection(tmp, "t1\td1\t1\nt9\td2\t1\n")


@case("pairdistill two teachers in folders both named 'model' (default ids)")
def _(tmp):
    import shutil

    from rankdistill.teachers.backends import BackendConfig
    from rankdistill.teachers.config import TeacherConfig, teacher_id

    models, _ = pairdistill_tiny(tmp)
    ids = []
    for name in ("mono", "duo"):
        shutil.copytree(models[name], tmp / name / "model")
        ids.append(teacher_id(TeacherConfig(backend=BackendConfig(name="reranker", model=str(tmp / name / "model")))))
    return f"ids {ids}: {'distinct' if ids[0] != ids[1] else 'THE SAME (labels shared)'}"


@case("pairdistill resume in the same output_dir with another pointwise teacher")
def _(tmp):
    from rankdistill.workflows.pairdistill import PairDistill
    from rankdistill.workflows.pairdistill_checks import record_identity

    _, config = pairdistill_tiny(tmp)
    first = PairDistill(config)
    record_identity(first.output, first.identity)
    return pairdistill_job(tmp, "pointwise_teacher.id=other-mono")


@case("pairdistill IVF256,PQ32 on the demo slice's 331 documents")
def _(tmp):
    import numpy as np
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    index = DenseIndex(384, DenseIndexConfig(factory="IVF256,PQ32"))
    index.add([f"d{i}" for i in range(331)], np.random.default_rng(0).standard_normal((331, 384)).astype("float32"))
    return "index trained"


@case("pairdistill IVF8,Flat searches ivf_nprobe lists")
def _(tmp):
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    index = DenseIndex(16, DenseIndexConfig(factory="IVF8,Flat", ivf_nprobe=8))
    import faiss

    return f"nprobe={faiss.extract_index_ivf(index._index).nprobe} of 8 lists"


# -- jobs/pairdistill.py (issue 31, part 1) ---------------------------------------------------------
case("pairdistill candidates.eval_depth=5 (below R@100)")(
    lambda tmp: (pairdistill_cfg("candidates.eval_depth=5").check(), "config accepted")[1])

for factory in ("IVF256,PQ32", "IVF4096,PQ64", "Foo123"):
    case(f"pairdistill candidates.index.factory={factory} (tiny student, dimension 32)")(
        lambda tmp, f=factory: pairdistill_job(tmp, f"candidates.index.factory='{f}'"))


def demo_run(tmp: Path, split: str, bad_doc: str | None = None) -> Path:
    from rankdistill.data.datasets import resolve

    _, folder = resolve("demo")
    docs = sorted(folder.corpus())[:3]
    lines = [f"{q} Q0 {bad_doc if bad_doc and n == 0 and r == 1 else d} {r + 1} {9 - r} t"
             for n, q in enumerate(sorted(folder.qrels(split))) for r, d in enumerate(docs)]
    path = tmp / f"{split}.trec"
    path.write_text("\n".join(lines) + "\n")
    return path


@case("pairdistill candidates.run is a run of the test split")
def _(tmp):
    return pairdistill_job(tmp, "candidates.method=run", f"candidates.run={demo_run(tmp, 'test')}")


@case("pairdistill candidates.run names a document missing from the corpus")
def _(tmp):
    return pairdistill_job(tmp, "candidates.method=run", f"candidates.run={demo_run(tmp, 'train', 'X104130')}")


@case("pairdistill output_dir cannot be written")
def _(tmp):
    from rankdistill.workflows.pairdistill_checks import check_before_ray

    _, config = pairdistill_tiny(tmp, "output_dir=/proc/rankdistill-probe/out")
    check_before_ray(config)
    return "accepted"


@case("pairdistill a second job on a held output_dir")
def _(tmp):
    from rankdistill.workflows.folder_lock import lock_folders

    with lock_folders([(str(tmp / "out"), "output_dir")], "jobs/pairdistill.py"):
        lock_folders([(str(tmp / "out"), "output_dir")], "jobs/pairdistill.py")
    return "both jobs ran"


@case("pairdistill an empty query text")
def _(tmp):
    queries = "".join(json.dumps({"_id": q, "text": "" if q == "t2" else f"query {q}"}) + "\n"
                      for q in ("q1", "q2", "q3", "t1", "t2"))
    root = Path(beir(tmp / "c", qrels="t1\td1\t1\nt2\td2\t1\n", queries=queries))
    (root / "qrels" / "train.tsv").write_text("q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    (root / "dataset.yaml").write_text("relevance_threshold: 1\n")
    return pairdistill_job(tmp, f"dataset={root}", "splits.dev_queries=1", "training.batch_size=1")


@case("pairdistill a dev qrels file that is a copy of test")
def _(tmp):
    queries = "".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in ("q1", "q2", "q3", "t1", "t2"))
    root = Path(beir(tmp / "c", qrels="t1\td1\t1\nt2\td2\t1\n", queries=queries))
    (root / "qrels" / "train.tsv").write_text("q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    (root / "qrels" / "dev.tsv").write_text("t1\td1\t1\nt2\td2\t1\n")
    (root / "dataset.yaml").write_text("relevance_threshold: 1\n")
    return pairdistill_job(tmp, f"dataset={root}", "splits.dev=dev", "training.batch_size=1")


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the cases whose name contains this text (e.g. pairdistill)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="    WARNING %(name)s: %(message)s")
    for name, fn in CASES:
        if args.only and args.only not in name:
            continue
        with tempfile.TemporaryDirectory() as d:
            try:
                out = f"OK  {fn(Path(d))}"
            except Exception as exc:
                if type(exc).__name__ == "SystemExit":
                    raise
                last = traceback.extract_tb(exc.__traceback__)[-1]
                where = f"{Path(last.filename).name}:{last.lineno}"
                out = f"ERR {type(exc).__name__} [{where}]: {' '.join(str(exc).split())[:220]}"
        print(f"{name}\n    {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
