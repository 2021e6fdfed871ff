"""Bad input never gives a silent wrong result (issue 14): each case fails loudly, naming the file
and line or the config key, or warns with counts where the documented rule allows the input."""

from __future__ import annotations

import gzip
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from rankdistill.config import load_config
from rankdistill.data.beir import BeirFolder, read_corpus, read_qrels_tsv
from rankdistill.data.datasets import (
    DatasetConfig,
    DatasetSpec,
    check_judged_documents,
    load_dataset,
    resolve,
)
from rankdistill.data.records import Qrels, Run
from rankdistill.data.trec import read_trec_run
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.evaluation.metrics import evaluate
from rankdistill.workflows.evaluate import EvaluateConfig
from rankdistill.workflows.label import LabelConfig
from rankdistill.workflows.train_reranker import TrainRerankerConfig

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    root = tmp_path / "coll"
    write(root / "corpus.jsonl", "".join(json.dumps({"_id": d, "title": "", "text": f"text {d}"}) + "\n"
                                         for d in ("d1", "d2", "d3")))
    write(root / "queries.jsonl", '{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n')
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


# -- counts are range-checked when the config is read --------------------------------------------
@pytest.mark.parametrize("cls,override,key", [
    (EvaluateConfig, "retrieval.k=-5", "retrieval.k"),  # was a [:-5] slice: 95 of 100 documents kept
    (EvaluateConfig, "retrieval.k=0", "retrieval.k"),
    (EvaluateConfig, "dataset.max_queries=-1", "dataset.max_queries"),  # was: the last query dropped
    (EvaluateConfig, "dataset.max_queries=0", "dataset.max_queries"),  # was: an empty evaluation, 0.0
    (EvaluateConfig, "retrieval.method=dense", "retrieval.method"),
    (EvaluateConfig, "retrieval.num_shards=0", "retrieval.num_shards"),
    (EvaluateConfig, "retrieval.bm25.b=1.5", "retrieval.bm25.b"),
    (EvaluateConfig, "retrieval.bm25.k1=-1", "retrieval.bm25.k1"),
    (EvaluateConfig, "retrieval.bm25.k1=nan", "retrieval.bm25.k1"),
    (EvaluateConfig, "evaluation.relevance_threshold=0", "evaluation.relevance_threshold"),  # was: `or` → default
    (EvaluateConfig, "evaluation.measures=[]", "evaluation.measures"),
    (LabelConfig, "candidates.k=-1", "candidates.k"),
    (LabelConfig, "pipeline.num_actors=0", "pipeline.num_actors"),
    (LabelConfig, "pipeline.batch_size=0", "pipeline.batch_size"),
    (LabelConfig, "pointwise.top_k=-3", "pointwise.top_k"),
    (LabelConfig, "teacher.backend.name=openai", "teacher.backend.name"),
    (LabelConfig, "teacher.backend.dtype=fp8", "teacher.backend.dtype"),
    (LabelConfig, "teacher.backend.batch_size=0", "teacher.backend.batch_size"),
    (TrainRerankerConfig, "data.passages_per_query=1", "data.passages_per_query"),
    (TrainRerankerConfig, "data.max_queries=-2", "data.max_queries"),
    (TrainRerankerConfig, "data.negatives_depth=0", "data.negatives_depth"),
    (TrainRerankerConfig, "data.source=label", "data.source"),
    (TrainRerankerConfig, "evaluation.rerank.depth=-10", "evaluation.rerank.depth"),
    (TrainRerankerConfig, "evaluation.rerank.num_actors=0", "evaluation.rerank.num_actors"),
    (TrainRerankerConfig, "evaluation.max_queries=0", "evaluation.max_queries"),
])
def test_out_of_range_values_are_config_errors_naming_the_key_and_the_override(cls, override, key):
    with pytest.raises(ConfigError) as info:
        load_config(cls, None, [override])
    assert info.value.key == key
    assert info.value.path == f"command-line override '{override}'"


def test_an_overrides_error_is_not_blamed_on_the_yaml_file(tmp_path: Path):
    path = write(tmp_path / "eval.yaml", "retrieval:\n  k: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(EvaluateConfig, path, ["retrieval.k=-5"])
    assert str(info.value).startswith("command-line override 'retrieval.k=-5': retrieval.k: must be >= 1")
    assert str(path) not in str(info.value)
    bad = write(tmp_path / "bad.yaml", "retrieval:\n  k: -5\n")
    with pytest.raises(ConfigError) as info:
        load_config(EvaluateConfig, bad, ["retrieval.num_shards=1"])
    assert info.value.path == str(bad) and info.value.key == "retrieval.k"  # the file's own value
    with pytest.raises(ConfigError) as info:
        load_config(EvaluateConfig, path, ["retrieval.nope=1"])
    assert info.value.path == "command-line override 'retrieval.nope=1'" and "unknown key" in str(info.value)


# -- qrels vs corpus -------------------------------------------------------------------------------
def test_qrels_naming_documents_outside_a_complete_corpus_are_an_error(beir: Path):
    with open(beir / "qrels" / "test.tsv", "a") as f:
        f.write("q2\tghost\t1\n")
    with pytest.raises(DataFormatError) as info:
        load_dataset(DatasetConfig(name=str(beir)))
    assert f"{beir / 'qrels' / 'test.tsv'}:4:" in str(info.value) and "'ghost'" in str(info.value)


def test_qrels_judging_a_query_missing_from_queries_jsonl_are_an_error(beir: Path):
    # before: the query could never be answered and silently counted as 0 in every mean
    with open(beir / "qrels" / "test.tsv", "a") as f:
        f.write("q9\td3\t1\n")
    with pytest.raises(DataFormatError) as info:
        load_dataset(DatasetConfig(name=str(beir)))
    assert info.value.line == 4 and "judge query 'q9'" in str(info.value)


def test_qrels_outside_a_partial_corpus_warn_with_counts(beir: Path, caplog):
    with open(beir / "qrels" / "test.tsv", "a") as f:
        f.write("q2\tghost\t1\nq2\tghost2\t0\n")
    folder = BeirFolder(beir)
    spec = DatasetSpec("dl-like", str(beir), partial_corpus=True)
    with caplog.at_level(logging.WARNING, logger="rankdistill.data.datasets"):
        missing = check_judged_documents(spec, folder, folder.qrels("test"), "test")
    assert missing == 2
    assert "2 of 4 judgements (1 relevant) name documents outside the corpus" in caplog.text


@pytest.mark.shared_data
def test_trec_dl_stays_usable_with_its_documented_partial_corpus(caplog):
    from conftest import shared_dataset

    shared_dataset("trec-dl-2019-passage")
    with caplog.at_level(logging.WARNING, logger="rankdistill.data.datasets"):
        data = load_dataset(DatasetConfig(name="trec-dl-2019-passage"))
    assert data.qrels.num_judgements() == 9260 and len(data.queries) == 43
    # README: 9,260 official judgements of which 3,834 have text in the candidate corpus
    assert f"{9260 - 3834} of 9260 judgements" in caplog.text


# -- runs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf"])
def test_a_non_finite_run_score_is_an_error_naming_the_line(tmp_path: Path, score):
    path = write(tmp_path / "run.trec", f"q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 {score} t\n")
    with pytest.raises(DataFormatError) as info:
        read_trec_run(path)
    assert info.value.line == 2 and "not a finite number" in str(info.value)


def test_evaluating_a_run_with_a_nan_score_is_an_error():
    # before: ir-measures put the NaN-scored relevant d1 anywhere; nDCG@10 of this query came out 0
    with pytest.raises(DataFormatError, match="query 'q1', document 'd1' is nan"):
        evaluate(Run({"q1": {"d1": math.nan, "d2": 1.0}}), Qrels({"q1": {"d1": 1}}), ["nDCG@10"])


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path: Path):
    run = read_trec_run(write(tmp_path / "run.trec", "3 Q0 d1 1 2.0 t\n3 Q0 d2 2 1.0 t\n", "utf-8-sig"))
    assert list(run) == ["3"] and run["3"] == {"d1": 2.0, "d2": 1.0}
    qrels = read_qrels_tsv(write(tmp_path / "q.tsv", "query-id\tcorpus-id\tscore\n3\td1\t1\n", "utf-8-sig"))
    assert qrels == {"3": {"d1": 1}}  # the header is recognised, not read as a bad grade
    corpus = read_corpus(write(tmp_path / "c.jsonl", '{"_id": "d1", "text": "x"}\n', "utf-8-sig"))
    assert list(corpus) == ["d1"]
    gz = tmp_path / "run.trec.gz"
    gz.write_bytes(gzip.compress("\ufeff3 Q0 d1 1 2.0 t\n".encode()))
    assert list(read_trec_run(gz)) == ["3"]


def test_no_judged_run_query_warns_that_every_measure_is_zero(caplog):
    with caplog.at_level(logging.WARNING, logger="rankdistill.evaluation.metrics"):
        result = evaluate(Run({"Q1": {"d1": 1.0}}), Qrels({"q1": {"d1": 1}}), ["nDCG@10"])
    assert result.aggregate["nDCG@10"] == 0.0
    assert "none of the run's 1 queries is judged" in caplog.text and "q1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rankdistill.evaluation.metrics"):
        assert evaluate(Run({"q1": {"d1": 1.0}}), Qrels({"q1": {"d1": 1}}), ["nDCG@10"]).aggregate["nDCG@10"] == 1.0
    assert caplog.text == ""


# -- compressed files ------------------------------------------------------------------------------
def test_a_truncated_or_corrupt_gzip_names_the_file(tmp_path: Path):
    whole = gzip.compress("".join(f"q{i} Q0 d{i} 1 1.0 t\n" for i in range(2000)).encode())
    truncated = tmp_path / "truncated.trec.gz"
    truncated.write_bytes(whole[: len(whole) // 2])  # was: a raw EOFError with no path
    with pytest.raises(DataFormatError) as info:
        read_trec_run(truncated)
    assert info.value.path == str(truncated) and "truncated gzip" in str(info.value)
    corrupt = tmp_path / "corrupt.trec.gz"
    corrupt.write_bytes(whole[:20] + bytes(b ^ 0xFF for b in whole[20:60]) + whole[60:])  # was: raw zlib.error
    with pytest.raises(DataFormatError) as info:
        read_trec_run(corrupt)
    assert info.value.path == str(corrupt)


# -- datasets ----------------------------------------------------------------------------------------
def test_a_missing_dataset_folder_is_not_an_unknown_dataset(tmp_path: Path):
    with pytest.raises(ConfigError, match="dataset folder '.*nowhere' does not exist") as info:
        resolve(str(tmp_path / "nowhere"))
    assert info.value.key == "dataset.name"
    with pytest.raises(ConfigError, match="unknown dataset 'scifcat'"):
        resolve("scifcat")
    with pytest.raises(ConfigError) as info:
        resolve("./typo/beir", key="data.dataset")
    assert info.value.key == "data.dataset"


# -- the label store ---------------------------------------------------------------------------------
def listwise_row(qid: str, ranking: list[str], template: str = "rankzephyr", template_hash: str = "h1") -> dict:
    return {"teacher": "t", "template_id": template, "template_hash": template_hash, "qid": qid, "list_key": "k",
            "pass_index": 0, "window_index": 0, "start": 0, "end": len(ranking), "window_size": 20,
            "stride": 10, "docids_in": ranking, "ranking_out": ranking, "response": "", "repair": "ok",
            "n_out_of_range": 0, "n_repeats": 0, "n_missing": 0, "ranking_after": ranking}


def test_training_on_labels_of_two_templates_is_refused_naming_them(tmp_path: Path):
    from rankdistill.data.records import Document, Query
    from rankdistill.teachers.store import LabelStore
    from rankdistill.training.examples import ExamplesConfig, examples_from_labels

    corpus = {d: Document(d, f"text of {d}") for d in ("a", "b", "c")}
    queries = {"q1": Query("q1", "a query")}
    store = LabelStore(tmp_path / "labels")
    store.write("listwise", [listwise_row("q1", ["a", "b", "c"])])
    store.write("listwise", [listwise_row("q1", ["c", "b", "a"], "first-identifier", "h2")])
    config = ExamplesConfig(source="labels", label_store=str(store.root), teacher="t", passages_per_query=3)
    with pytest.raises(ConfigError) as info:
        examples_from_labels(queries, corpus, config)
    assert info.value.key == "data.template"
    assert "first-identifier (hash h2)" in str(info.value) and "rankzephyr (hash h1)" in str(info.value)
    config.template = "first-identifier"
    (row,) = examples_from_labels(queries, corpus, config)
    assert row["docids"] == ["c", "b", "a"]


def test_a_truncated_label_file_is_quarantined_and_its_labels_remade(tmp_path: Path, caplog):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp_path / "labels")
    good = store.write("listwise", [listwise_row("q1", ["a", "b"])])
    bad = store.write("listwise", [listwise_row("q2", ["c", "d"])])
    bad.write_bytes(bad.read_bytes()[:100])  # was: a raw ArrowInvalid in every later job
    with caplog.at_level(logging.WARNING, logger="rankdistill.teachers.store"):
        assert store.unit_keys("listwise", "t", "h1") == {("q1", "k")}  # q2 is labeled again
    assert str(bad) in caplog.text and "quarantine" in caplog.text
    assert store.files("listwise") == [good] and (bad.parent / "quarantine" / bad.name).exists()
    store.write("listwise", [listwise_row("q2", ["d", "c"])])
    assert store.final_rankings("t", "h1") == {"q1": ["a", "b"], "q2": ["d", "c"]}


def test_a_batch_file_of_another_kind_is_quarantined_not_read_as_nulls(tmp_path: Path, caplog):
    from rankdistill.teachers.store import LabelStore

    store = LabelStore(tmp_path / "labels")
    good = store.write("listwise", [listwise_row("q1", ["a", "b"])])
    point = store.write("pointwise", [{"teacher": "t", "template_id": "yn", "template_hash": "h1", "qid": "q2",
                                       "docid": "a", "rank": 0, "score": -0.1, "logprob_yes": -0.1, "logprob_no": -2}])
    stray = point.rename(good.parent / point.name)  # a pointwise batch copied into listwise/
    with caplog.at_level(logging.WARNING, logger="rankdistill.teachers.store"):
        assert store.final_rankings("t", "h1") == {"q1": ["a", "b"]}
    assert "no column(s) list_key" in caplog.text and not stray.exists()


# -- models ------------------------------------------------------------------------------------------
def test_a_corrupt_weights_file_names_the_file(tmp_path: Path):
    from model_fixtures import tiny_reranker
    from rankdistill.models import load_reranker

    tiny_reranker("mono").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # was: a bare SafetensorError
    with pytest.raises(DataFormatError) as info:
        load_reranker(tmp_path / "m")
    assert info.value.path == str(weights) and "cannot load the model weights" in str(info.value)


@pytest.mark.parametrize("override,key,problem", [
    ("student.architecture=monoo", "student.architecture", "unknown reranker architecture 'monoo'"),  # was: 'model.name'
    ("student.init_from=/nonexistent/student", "student.init_from", "is not a folder"),
    ("student.backbone={empty}", "student.backbone", "is not a model folder (no config.json)"),
    ("student.options={{bogus: 1}}", "student.options.bogus", "unknown option"),
    ("loss.name=infonec", "loss.name", "unknown loss"),
    ("evaluation.first_stage_run=nope.trec", "evaluation.first_stage_run", "not found"),
])
def test_train_reranker_finds_config_errors_before_ray_starts(tmp_path: Path, override, key, problem):
    import ray
    from rankdistill.workflows.train_reranker import run_train_reranker

    (tmp_path / "empty").mkdir()
    config = load_config(TrainRerankerConfig, REPO / "configs" / "train_reranker-mono.yaml",
                         [override.format(empty=tmp_path / "empty"), f"output_dir={tmp_path / 'out'}",
                          f"data.dataset={_beir_with_runs(tmp_path)}"])
    with pytest.raises(ConfigError) as info:
        run_train_reranker(config)
    assert info.value.key == key and problem in str(info.value)
    assert not ray.is_initialized()


def _beir_with_runs(tmp_path: Path) -> Path:
    root = tmp_path / "coll"
    write(root / "corpus.jsonl", '{"_id": "d1", "text": "x"}\n')
    write(root / "queries.jsonl", '{"_id": "q1", "text": "y"}\n')
    write(root / "qrels" / "test.tsv", "q1\td1\t1\n")
    return root


def test_label_checks_the_template_kind_before_ray(tmp_path: Path):
    import ray
    from rankdistill.workflows.label import run_label

    config = load_config(LabelConfig, REPO / "configs" / "label.yaml",
                         ["kind=pointwise", "teacher.template=rankzephyr", f"output_dir={tmp_path / 'o'}",
                          f"store={tmp_path / 's'}", "tracking.enabled=false"])
    with pytest.raises(ConfigError) as info:
        run_label(config)
    assert info.value.key == "teacher.template" and "listwise template" in str(info.value)
    assert not ray.is_initialized()


# -- the command line: one line, exit 2, wherever the error was raised -------------------------------
def _job(error: Exception):
    def main(config):
        raise error
    return main


def test_run_job_prints_one_line_and_exits_2_for_errors_raised_in_main(capsys):
    from rankdistill.cli import run_job

    with pytest.raises(SystemExit) as info:
        run_job(EvaluateConfig, _job(DataFormatError("bad JSON\n(at column 3)", "c.jsonl", 7)), argv=[])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: c.jsonl:7: bad JSON (at column 3)\n"
    wrapped = RuntimeError("worker died")
    wrapped.__cause__ = ConfigError("must be >= 1", "retrieval.k")
    with pytest.raises(SystemExit):
        run_job(EvaluateConfig, _job(wrapped), argv=[])
    assert capsys.readouterr().err == "configuration error: retrieval.k: must be >= 1\n"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_job(EvaluateConfig, _job(ZeroDivisionError("x")), argv=[])


def test_run_job_unwraps_an_error_raised_inside_a_ray_data_worker(local_ray, capsys):
    import ray.data
    from rankdistill.cli import run_job

    def udf(batch):
        raise DataFormatError("field 'text' must be a string", "corpus.jsonl", 12)

    def main(config):
        ray.data.from_items([{"x": 1}]).map_batches(udf).take_all()

    with pytest.raises(SystemExit) as info:
        run_job(EvaluateConfig, main, argv=[])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: corpus.jsonl:12: field 'text' must be a string"


def test_the_job_script_exits_2_with_one_line_for_an_error_found_before_ray(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train_reranker.py"), "--config",
         str(REPO / "configs" / "train_reranker-mono.yaml"), "student.architecture=monoo",
         f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "configuration error: student.architecture: unknown reranker architecture 'monoo'")
    assert "Traceback" not in proc.stderr
