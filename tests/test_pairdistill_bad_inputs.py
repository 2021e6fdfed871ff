"""Issue 21: bad input to ``jobs/pairdistill.py`` that used to give a silent wrong result, a wasted
teacher bill or a hang is refused before Ray starts, naming the key (or file:line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rankdistill.config import load_config
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.workflows.pairdistill import PairDistillConfig, SplitsConfig, load_splits

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def collection(root: Path, qrels: dict[str, str] | None = None, queries: dict[str, str] | None = None) -> Path:
    """A BEIR folder: d1..d6, train q1..q4, test t1..t2 (each judging one document)."""
    write(root / "corpus.jsonl", "".join(json.dumps({"_id": f"d{i}", "text": f"text {i}"}) + "\n"
                                         for i in range(1, 7)))
    queries = queries or {"q1": "one", "q2": "two", "q3": "three", "q4": "four", "t1": "five", "t2": "six"}
    write(root / "queries.jsonl", "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    qrels = qrels or {"train": "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td4\t1\n", "test": "t1\td5\t1\nt2\td6\t1\n"}
    for split, text in qrels.items():
        write(root / "qrels" / f"{split}.tsv", "query-id\tcorpus-id\tscore\n" + text)
    write(root / "dataset.yaml", "relevance_threshold: 1\n")
    return root


def splits_of(root: Path, **options):
    from rankdistill.data.datasets import resolve

    spec, folder = resolve(str(root))
    return load_splits(SplitsConfig(dev_queries=1, **options), spec, folder)


# -- BAD 3, 4, 8 and the WEAK range checks: config time, naming the key and the override ---------
@pytest.mark.parametrize("override,key,problem", [
    ("select_on=R@1000", "select_on", "not one of the measures"),  # was: a table of '-', zero-shot "selected"
    ("splits.max_test_queries=-1", "splits.max_test_queries", "must be >= 1"),  # was: a [:-1] slice
    ("splits.max_train_queries=-1", "splits.max_train_queries", "must be >= 1"),
    ("splits.max_train_queries=0", "splits.max_train_queries", "must be >= 1"),
    ("splits.dev=test", "splits.dev", "same split 'test'"),  # was: "dev selects, test reports" on one split
    ("training.max_steps=0", "training.max_steps", "must be at least 1"),  # was: training.training.max_steps
    ("examples.passages_per_query=1", "examples.passages_per_query", "must be >= 2"),  # was: data.passages_per_query
    ("candidates.encode.batch_size=0", "candidates.encode.batch_size", "must be >= 1"),
])
def test_bad_values_are_refused_at_config_time_naming_the_key_and_the_override(override, key, problem):
    with pytest.raises(ConfigError) as info:
        load_config(PairDistillConfig, QUICKSTART, [override]).check()
    assert info.value.key == key and problem in info.value.problem
    assert info.value.path in (None, f"command-line override '{override}'")  # never blames the YAML file


# -- BAD 5: the main job's loader runs the evaluate job's checks -----------------------------------
def test_qrels_naming_documents_missing_from_the_corpus_are_refused(tmp_path: Path):
    root = collection(tmp_path / "c", qrels={"train": "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td4\t1\n",
                                             "test": "t1\td5\t1\nt2\td99\t1\n"})
    with pytest.raises(DataFormatError) as info:  # was: passed silently, lowering nDCG
        splits_of(root)
    assert info.value.path == str(root / "qrels" / "test.tsv") and info.value.line == 3


def test_a_judged_test_query_missing_from_queries_jsonl_is_refused_not_dropped(tmp_path: Path):
    root = collection(tmp_path / "c", queries={"q1": "one", "q2": "two", "q3": "three", "q4": "four", "t1": "five"})
    with pytest.raises(DataFormatError) as info:  # was: t2 dropped, inflating test nDCG@10
        splits_of(root)
    assert info.value.path == str(root / "qrels" / "test.tsv") and info.value.line == 3
    assert "'t2'" in str(info.value)


def test_a_test_query_that_is_a_training_query_is_refused(tmp_path: Path):
    root = collection(tmp_path / "c", qrels={"train": "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\nt1\td5\t1\n",
                                             "test": "t1\td5\t1\nt2\td6\t1\n"})
    with pytest.raises(ConfigError) as info:
        splits_of(root)
    assert info.value.key == "splits.test" and "1 test queries" in str(info.value)


def test_a_test_query_with_a_training_query_s_text_warns_with_the_count(tmp_path: Path, caplog):
    root = collection(tmp_path / "c", queries={"q1": "one", "q2": "two", "q3": "three", "q4": "four",
                                               "t1": "Two ", "t2": "six"})
    splits = splits_of(root)
    assert sorted(splits.test) == ["t1", "t2"]
    assert "1 of 2 test queries have the text of a training query (e.g. 't1')" in caplog.text


def test_a_dataset_whose_dev_split_is_its_test_split_is_refused(tmp_path: Path):
    root = collection(tmp_path / "c")
    write(root / "dataset.yaml", "relevance_threshold: 1\ndev_split: test\n")
    with pytest.raises(ConfigError) as info:
        splits_of(root)
    assert info.value.key == "splits.dev"


def test_selecting_on_the_test_split_needs_the_explicit_switch_and_marks_the_table():
    from rankdistill.workflows.pairdistill import Stage, format_table

    config = load_config(PairDistillConfig, QUICKSTART, ["splits.dev=test", "splits.allow_select_on_test=true"])
    config.check()  # allowed knowingly
    table = format_table([Stage("s", {"nDCG@10": 0.5}, {"nDCG@10": 0.5})], "nDCG@10", "s", "demo", same_split=True)
    assert "SELECTED ON THE TEST QUERIES" in table.splitlines()[0] and "dev selects" not in table


# -- BAD 6: a factory IVF index searches with ivf_nprobe lists, and refuses a corpus too small -----
@pytest.fixture(scope="module")
def demo_embeddings():
    """all-MiniLM-L6-v2 (packaged) embeddings of the demo slice's corpus and test queries."""
    import numpy as np
    import torch
    from model_fixtures import minilm_path
    from rankdistill.data.datasets import resolve
    from rankdistill.models import BiEncoder

    try:
        spec, folder = resolve("demo")
    except Exception as exc:  # noqa: BLE001 - the conftest helper decides skip or fail
        from conftest import missing_data

        missing_data(f"needs the demo slice: {exc}")
    corpus = folder.corpus()
    queries = folder.queries(spec.test_split)
    torch.manual_seed(0)
    model = BiEncoder.from_backbone(minilm_path(), pooling="mean", passage_length=96).eval()
    with torch.no_grad():
        docs = np.asarray(model.encode_passages([d.contents for d in corpus.values()]), dtype=np.float32)
        qs = np.asarray(model.encode_queries([q.text for q in queries.values()]), dtype=np.float32)
    return list(corpus), docs, list(queries), qs


def test_an_ivf_factory_index_searches_ivf_nprobe_lists_recall_at_100_equals_flat(demo_embeddings):
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    docids, docs, qids, queries = demo_embeddings
    runs = {}
    for factory in ("Flat", "IVF8,Flat"):  # 331 documents: 8 lists of ~41 (faiss wants 39 per list)
        index = DenseIndex(docs.shape[1], DenseIndexConfig(factory=factory, ivf_nprobe=8))
        index.add(docids, docs)
        runs[factory] = index.search(qids, queries, k=100)
    recall = sum(len(set(runs["IVF8,Flat"][q]) & set(runs["Flat"][q])) for q in qids) / (100 * len(qids))
    assert recall == 1.0  # every list probed: exactly Flat's top 100 (was: nprobe 1, about 1/8 of them)


def test_an_ivf_index_too_large_for_the_corpus_is_refused_naming_the_key(demo_embeddings):
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    docids, docs, _, _ = demo_embeddings
    index = DenseIndex(docs.shape[1], DenseIndexConfig(factory="IVF256,PQ32"))  # quickstart.yaml's example
    with pytest.raises(ConfigError) as info:  # was: 1-3 of 100 documents per test query, a faiss warning
        index.add(docids, docs)
    assert info.value.key == "index.factory" and "331 vectors are too few to train 256 IVF lists" in str(info.value)


# -- BAD 2, 7 and the WEAK late errors: every teacher and student check before Ray starts ----------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from test_pairdistill_job import tiny_models

    return tiny_models(tmp_path_factory.mktemp("models"))


def tiny_config(tmp_path: Path, models, *overrides: str) -> PairDistillConfig:
    from test_pairdistill_job import tiny_overrides

    return load_config(PairDistillConfig, QUICKSTART, [*tiny_overrides(tmp_path, models), *overrides])


@pytest.mark.parametrize("override,key,problem", [
    ("pointwise_teacher.backend.model={tmp}/missing", "pointwise_teacher.backend.model", "is not a folder"),
    ("pairwise_teacher.backend.model={mono}", "pairwise_teacher.backend.model", "must be a duo cross-encoder"),
    ("pointwise_teacher.template=pairdistill-pairwise", "pointwise_teacher.template", "is a pairwise template"),
    ("pairwise_teacher.template=pairdistill-pointwise", "pairwise_teacher.template", "is a pointwise template"),
    ("student.init_from=null student.backbone={mono}", "student.backbone", "saved rankdistill student"),
    ("loss.options.lambda_kd=-1", "loss.options", "must be >= 0"),
    ("splits.max_train_queries=3", "splits.max_train_queries", "fewer examples than one batch"),
    ("label_store={tmp}/a-file", "label_store", "is a file, not a folder"),
    ("output_dir={tmp}/a-file/out", "output_dir", "which is a file"),
    ("output_dir=foo://bucket/out", "output_dir", "cannot open storage URI 'foo://bucket/out'"),
])
def test_pairdistill_refuses_before_ray_starts(tmp_path: Path, models, override, key, problem):
    import ray
    from rankdistill.workflows.pairdistill import run_pairdistill

    (tmp_path / "a-file").write_text("x")
    extra = override.format(tmp=tmp_path, mono=models["mono"]).split(" ")
    config = tiny_config(tmp_path, models, *extra)
    with pytest.raises(ConfigError) as info:
        run_pairdistill(config)
    assert info.value.key == key and problem in str(info.value)
    assert not ray.is_initialized()


def test_an_s3_uri_with_no_server_behind_it_is_one_line_naming_the_key(tmp_path: Path, models, monkeypatch):
    from rankdistill.workflows.pairdistill import run_pairdistill

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(ConfigError) as info:
        run_pairdistill(tiny_config(tmp_path, models, "label_store=s3://labels/store"))
    assert info.value.key == "label_store" and "'s3://labels/store' cannot be reached" in str(info.value)


def test_a_plain_encoder_folder_is_refused_as_a_teacher_naming_the_missing_head(tmp_path: Path, models):
    from model_fixtures import minilm_path
    from rankdistill.models import load_reranker
    from rankdistill.workflows.pairdistill import PairDistill

    with pytest.raises(DataFormatError) as info:  # was: a random head, noise labels, exit 0
        load_reranker(minilm_path())
    assert info.value.path == str(minilm_path()) and "classifier.weight" in str(info.value)
    with pytest.raises(DataFormatError, match="classifier.bias"):
        PairDistill(tiny_config(tmp_path, models, f"pointwise_teacher.backend.model={minilm_path()}"))


def test_a_trained_hugging_face_cross_encoder_still_loads_as_a_teacher(tmp_path: Path):
    from model_fixtures import minilm_path
    from model_fixtures import tiny_config as tiny_bert
    from rankdistill.models import load_reranker
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    AutoModelForSequenceClassification.from_config(tiny_bert()).save_pretrained(tmp_path / "ce")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp_path / "ce")
    model = load_reranker(tmp_path / "ce")
    assert type(model).__name__ == "MonoCrossEncoder"


def test_default_teacher_ids_tell_apart_two_folders_of_the_same_name(tmp_path: Path, models):
    import shutil

    from rankdistill.teachers.backends import BackendConfig
    from rankdistill.teachers.config import TeacherConfig, teacher_id

    for name, source in (("a", "mono"), ("b", "duo"), ("c", "mono")):
        shutil.copytree(models[source], tmp_path / name / "model")
    ids = {n: teacher_id(TeacherConfig(backend=BackendConfig(name="reranker", model=str(tmp_path / n / "model"))))
           for n in "abc"}
    assert ids["a"] != ids["b"]  # was: both 'model', the second teacher reusing every label of the first
    assert ids["a"] == ids["c"] and ids["a"].startswith("model-")  # the same weights: the same labels
    uri = TeacherConfig(backend=BackendConfig(name="reranker", model="s3://models/team-a/model"))
    assert teacher_id(uri) == "s3://models/team-a/model"


# -- BAD 1: another teacher, data or list in the same output_dir is refused before Ray -------------
def test_a_run_of_another_teacher_in_the_same_output_dir_is_refused_listing_the_differences(tmp_path: Path, models):
    import ray
    from rankdistill.workflows.pairdistill import PairDistill
    from rankdistill.workflows.pairdistill_checks import record_identity

    first = PairDistill(tiny_config(tmp_path, models))
    record_identity(first.output, first.identity)  # what the first run's training left behind
    PairDistill(tiny_config(tmp_path, models, "iterations=3", "training.max_steps=5"))  # may continue
    other = tiny_config(tmp_path, models, "pointwise_teacher.id=other-mono", "examples.passages_per_query=4")
    with pytest.raises(ConfigError) as info:  # was: 48 new teacher calls, then the old checkpoint resumed
        PairDistill(other)
    assert info.value.key == "output_dir"
    assert "teachers.pointwise_teacher.id: stored 'tiny-mono', now 'other-mono'" in str(info.value)
    assert "examples.passages_per_query: stored 6, now 4" in str(info.value)
    assert not ray.is_initialized()


def test_an_identity_stored_with_the_old_candidate_keys_is_the_same_run(tmp_path: Path, models):
    """A run_identity.json written before candidates took the first stage's keys (first_stage,
    depth, bm25_shards; no bm25 settings) still lets the same run continue, and a changed k is
    still a difference."""
    from rankdistill.workflows.pairdistill import PairDistill
    from rankdistill.workflows.pairdistill_checks import record_identity

    first = PairDistill(tiny_config(tmp_path, models))
    old = json.loads(json.dumps(first.identity))
    c = old["candidates"]
    c["first_stage"], c["depth"], c["bm25_shards"] = c.pop("method"), c.pop("k"), c.pop("num_shards")
    del c["bm25"]
    record_identity(first.output, old)
    PairDistill(tiny_config(tmp_path, models))  # the same run: may continue
    with pytest.raises(ConfigError, match="candidates.k: stored 8, now 5"):
        PairDistill(tiny_config(tmp_path, models, "candidates.k=5"))


# -- BAD 9: the index cache sees a corpus edited in place ------------------------------------------
def test_the_index_cache_key_changes_when_a_document_text_changes_in_place(tmp_path: Path, models):
    from rankdistill.workflows.pairdistill import PairDistill

    keys = []
    for name, text in (("a", "text 3"), ("b", "text 3"), ("c", "edited 3")):
        root = collection(tmp_path / name / "coll")  # one collection name: its spec name is in the key
        corpus = (root / "corpus.jsonl").read_text().replace('"text 3"', json.dumps(text))
        (root / "corpus.jsonl").write_text(corpus)
        job = PairDistill(tiny_config(tmp_path / name, models, f"dataset={root}", "splits.dev_queries=1",
                                      "training.batch_size=1", f"candidates.index_cache={tmp_path / 'cache'}"))
        keys.append(Path(job._cached_index(models["bi-encoder"])).name)
    assert keys[0] == keys[1] and keys[1] != keys[2]  # same count, first and last id: was the same key


# -- BAD 10: a request the cluster can never meet, found before any work ---------------------------
@pytest.mark.parametrize("override,key", [
    ("training.cpus_per_worker=4", "training.cpus_per_worker"),  # was: teachers paid, then retried forever
    ("training.num_workers=2", "training.num_workers"),  # 2 workers × 2 CPUs on 2 CPUs
    ("candidates.encode.gpus_per_actor=1", "candidates.encode.gpus_per_actor"),
    ("pipeline.cpus_per_actor=3", "pipeline.cpus_per_actor"),
])
def test_requests_larger_than_the_cluster_are_refused_naming_the_key(local_ray, override, key):
    from rankdistill.ray_runtime import check_resources
    from rankdistill.workflows.pairdistill_checks import resource_requests

    config = load_config(PairDistillConfig, QUICKSTART, [override])
    with pytest.raises(ConfigError) as info:
        check_resources(resource_requests(config))
    assert info.value.key == key
    check_resources(resource_requests(load_config(PairDistillConfig, QUICKSTART, [])))  # the quickstart fits


def test_empty_passages_warn_with_the_count(caplog):
    from rankdistill.data.records import Document
    from rankdistill.workflows.pairdistill_checks import warn_empty_passages

    corpus = {"d1": Document("d1", "text"), "d2": Document("d2", "  "), "d3": Document("d3", "")}
    assert warn_empty_passages(corpus) == 2
    assert "2 of 3 documents are empty (e.g. 'd2')" in caplog.text


def test_the_job_script_exits_2_with_one_line_naming_the_key(tmp_path: Path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "pairdistill.py"), "--config", str(QUICKSTART),
                           "select_on=R@1000", f"output_dir={tmp_path}"], capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("configuration error: select_on: 'R@1000' is not one of")
    assert "Traceback" not in proc.stderr


def test_duplicate_query_texts_within_and_across_splits_warn_with_counts(caplog):
    from rankdistill.data.records import Query
    from rankdistill.workflows.pairdistill import _warn_duplicate_texts

    def qs(**texts):
        return {qid: Query(qid, text) for qid, text in texts.items()}

    counts = _warn_duplicate_texts({
        "training": qs(a="cats", b="Cats ", c="dogs"),      # b repeats a (case, spaces)
        "dev": qs(d="dogs", e="fish", f="fish"),           # d has a training text; f repeats e
        "test": qs(g="fish", h="birds")})                  # g has a dev text
    assert counts == {"training": 1, "dev": 1, "dev~training": 1, "test~dev": 1}
    assert "1 training queries repeat the text of another training query (e.g. 'b' = 'a')" in caplog.text
    assert "1 of 3 dev queries have the text of a training query (e.g. 'd')" in caplog.text
    assert "1 of 2 test queries have the text of a dev query (e.g. 'g')" in caplog.text
    assert _warn_duplicate_texts({"training": qs(a="x"), "dev": qs(b="y"), "test": qs(c="z")}) == {}
