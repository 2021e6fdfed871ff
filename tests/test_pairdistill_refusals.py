"""Issue 31, part 1: the main job's remaining bad inputs are refused before Ray starts, each naming
its key (or file and line): an evaluation depth below a measure's cutoff, a faiss factory the
student or corpus cannot have, a run of the wrong split or naming documents missing from the
corpus, a read-only or busy ``output_dir`` / ``label_store``, dev queries that are test queries;
empty query texts warn with the count; ``--config`` is required; the teacher checks' rows count the
calls paid for them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rankdistill.config import load_config
from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.workflows.pairdistill import PairDistillConfig
from test_pairdistill_bad_inputs import collection, splits_of, tiny_config, write

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from test_pairdistill_job import tiny_models

    return tiny_models(tmp_path_factory.mktemp("models"))


def refused_before_ray(config: PairDistillConfig, error=ConfigError):
    import ray
    from rankdistill.workflows.pairdistill import run_pairdistill

    with pytest.raises(error) as info:
        run_pairdistill(config)
    assert not ray.is_initialized()
    return info.value


# -- BAD: candidates.eval_depth below the measures' cutoffs -------------------------------------------
@pytest.mark.parametrize("overrides,deepest", [
    (["candidates.eval_depth=5"], "R@100 (100)"),  # was: nDCG@10 and R@100 computed on 5 documents
    (["candidates.eval_depth=99"], "R@100 (100)"),
    (["candidates.eval_depth=9", "measures=[nDCG@10, RR@10]"], "nDCG@10 (10)"),
])
def test_an_eval_depth_below_a_measure_s_cutoff_is_refused_naming_both_keys(overrides, deepest):
    with pytest.raises(ConfigError) as info:
        load_config(PairDistillConfig, QUICKSTART, overrides).check()
    assert info.value.key == "candidates.eval_depth"
    assert f"fewer than the deepest cutoff of measures, {deepest}" in str(info.value)


@pytest.mark.parametrize("overrides", [
    ["candidates.eval_depth=100"],
    ["candidates.eval_depth=10", "measures=[nDCG@10, RR@10]"],
    ["candidates.eval_depth=3", "measures=[AP, nDCG]", "select_on=nDCG"],  # no cutoff: the whole run
])
def test_an_eval_depth_at_or_above_every_cutoff_is_accepted(overrides):
    load_config(PairDistillConfig, QUICKSTART, overrides).check()


# -- late factory refusals: before Ray, at the student's dimension and the corpus size ------------------
@pytest.mark.parametrize("factory,problem", [
    ("IVF256,PQ32", "331 vectors are too few to train 256 IVF lists"),  # the demo corpus: 331 passages
    ("IVF4096,PQ64", "faiss cannot build 'IVF4096,PQ64' for dimension 32"),  # the tiny student: 32
    ("Foo123", "faiss cannot build 'Foo123' for dimension 32"),
])
def test_a_faiss_factory_the_student_or_corpus_cannot_have_is_refused_before_ray(tmp_path, models, factory, problem):
    error = refused_before_ray(tiny_config(tmp_path, models, f"candidates.index.factory='{factory}'"))
    assert error.key == "candidates.index.factory" and problem in str(error)
    assert "the student's dimension: 32; the corpus: 331 passages" in str(error)


def test_a_factory_the_corpus_can_train_passes_the_check(tmp_path, models):
    from rankdistill.workflows.pairdistill_checks import check_index_factory

    config = tiny_config(tmp_path, models, "candidates.index.factory='IVF8,Flat'")
    check_index_factory(config, 331)  # 331 >= 8 x 39
    with pytest.raises(ConfigError, match="candidates.index.factory: 311 vectors are too few to train 8"):
        check_index_factory(config, 311)  # < 8 x 39 = 312


# -- a run of the wrong split, a run naming documents missing from the corpus ---------------------------
def demo_ids():
    from rankdistill.data.datasets import resolve

    spec, folder = resolve("demo")
    train = sorted(folder.qrels(spec.train_split or "train"))
    test = sorted(folder.qrels(spec.test_split))
    return train, test, sorted(folder.corpus())


def write_run(path: Path, qids: list[str], docids: list[str], bad: str | None = None) -> Path:
    lines = []
    for qid in qids:
        for rank, docid in enumerate(docids[:3], start=1):
            lines.append(f"{qid} Q0 {bad if bad and qid == qids[1] and rank == 2 else docid} {rank} {10 - rank} t")
    return write(path, "\n".join(lines) + "\n")


def test_a_run_of_the_test_split_is_refused_naming_candidates_run(tmp_path, models):
    _, test, docids = demo_ids()
    run = write_run(tmp_path / "test.trec", test, docids)
    error = refused_before_ray(tiny_config(tmp_path, models, "candidates.method=run", f"candidates.run={run}"))
    assert error.key == "candidates.run"  # was: minutes later, blaming training.batch_size
    assert f"none of the {len(test)} queries of the run '{run}' is a training query" in str(error)
    assert f"{len(test)} of its queries are test queries" in str(error)


def test_a_run_naming_a_document_missing_from_the_corpus_names_the_file_line_and_key(tmp_path, models):
    train, _, docids = demo_ids()
    run = write_run(tmp_path / "train.trec", train, docids, bad="X104130")
    error = refused_before_ray(tiny_config(tmp_path, models, "candidates.method=run", f"candidates.run={run}"),
                               DataFormatError)
    assert error.path == str(run) and error.line == 5  # the second query's second line
    assert f"run document 'X104130' (query '{train[1]}') is not in the corpus" in str(error)
    assert "candidates.run" in str(error)


# -- a read-only output_dir or label_store, before Ray --------------------------------------------------
@pytest.mark.parametrize("key", ["output_dir", "label_store"])
def test_a_folder_the_job_cannot_write_is_refused_before_ray(tmp_path, models, key):
    if os.geteuid() == 0:  # root writes into a chmod 555 folder: use a place nobody can write
        folder = f"/proc/rankdistill-read-only-{os.getpid()}/{key}"
    else:
        (tmp_path / "read-only").mkdir()
        (tmp_path / "read-only").chmod(0o555)
        folder = str(tmp_path / "read-only" / key)
    error = refused_before_ray(tiny_config(tmp_path, models, f"{key}={folder}"))
    assert error.key == key and f"'{folder}' cannot be written" in str(error)


# -- two jobs on one output_dir or label_store ------------------------------------------------------------
@pytest.fixture
def other_process():
    """A live process that is not this one (the holder of a lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def hold(folder: Path, pid: int) -> Path:
    from rankdistill.workflows.folder_lock import LOCK_FILE, _process_start

    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "2026-12-07 23:00:00 UTC",
                                "job": "jobs/pairdistill.py", "process_start": _process_start(pid)}))
    return lock


@pytest.mark.parametrize("key", ["output_dir", "label_store"])
def test_a_second_job_on_a_held_folder_is_refused_naming_the_holder(tmp_path, models, other_process, key):
    config = tiny_config(tmp_path, models)
    lock = hold(Path(getattr(config, key)), other_process.pid)
    error = refused_before_ray(config)
    assert error.key == key and f"pid {other_process.pid} on host {socket.gethostname()}" in str(error)
    assert "is in use by another job: jobs/pairdistill.py" in str(error) and str(lock) in str(error)
    assert lock.exists()  # the holder's lock is left alone


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path):
    from rankdistill.workflows.folder_lock import lock_folders

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a job killed with SIGKILL leaves its lock behind
    lock = hold(tmp_path / "out", dead.pid)
    with lock_folders([(str(tmp_path / "out"), "output_dir"), (str(tmp_path / "labels"), "label_store")], "test"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(ConfigError) as info:  # the same folders again, while held: refused
            lock_folders([(str(tmp_path / "labels"), "label_store")], "second")
        assert info.value.key == "label_store" and f"pid {os.getpid()}" in str(info.value)
    assert not lock.exists() and not (tmp_path / "labels" / lock.name).exists()


def test_a_lock_of_a_killed_process_not_yet_reaped_or_of_a_reused_pid_is_stale(tmp_path, other_process):
    import time

    from rankdistill.workflows.folder_lock import _stat, lock_folders

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lock = hold(tmp_path / "out", killed.pid)
    killed.kill()  # SIGKILL; not waited for: a zombie until its parent reaps it
    for _ in range(100):
        if (_stat(killed.pid) or ["?"])[0] == "Z":
            break
        time.sleep(0.05)
    try:
        with lock_folders([(str(tmp_path / "out"), "output_dir")], "test"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        killed.wait()
    reused = hold(tmp_path / "labels", other_process.pid)  # a live pid, but another process than the holder
    reused.write_text(json.dumps({**json.loads(reused.read_text()), "process_start": "1"}))
    with lock_folders([(str(tmp_path / "labels"), "label_store")], "test"):
        assert json.loads(reused.read_text())["pid"] == os.getpid()


def test_a_refused_lock_releases_the_folders_already_taken(tmp_path, other_process):
    from rankdistill.workflows.folder_lock import LOCK_FILE, lock_folders

    hold(tmp_path / "labels", other_process.pid)
    with pytest.raises(ConfigError, match="label_store"):
        lock_folders([(str(tmp_path / "out"), "output_dir"), (str(tmp_path / "labels"), "label_store")], "x")
    assert not (tmp_path / "out" / LOCK_FILE).exists()


# -- dev queries that are test queries; empty query texts ---------------------------------------------
def test_dev_queries_that_are_test_queries_are_refused_unless_allowed(tmp_path):
    test_qrels = "t1\td5\t1\nt2\td6\t1\n"
    root = collection(tmp_path / "c", qrels={"train": "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td4\t1\n",
                                             "test": test_qrels, "dev": test_qrels})  # dev: a copy of test
    with pytest.raises(ConfigError) as info:  # was: a warning about identical texts only
        splits_of(root, dev="dev")
    assert info.value.key == "splits.dev"
    assert "2 of 2 dev queries (split 'dev') are also test queries of split 'test' (e.g. 't1')" in str(info.value)
    splits = splits_of(root, dev="dev", allow_select_on_test=True)
    assert splits.dev_shares_test == 2


def test_empty_query_texts_warn_with_the_count(tmp_path, caplog):
    root = collection(tmp_path / "c", queries={"q1": "one", "q2": "two", "q3": "three", "q4": "four",
                                               "t1": "five", "t2": "  "})
    splits = splits_of(root)
    assert sorted(splits.test) == ["t1", "t2"]
    assert "1 of 2 test queries have an empty text (e.g. 't2')" in caplog.text


# -- no --config -------------------------------------------------------------------------------------------
def test_the_job_without_config_exits_2_saying_config_is_required(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "pairdistill.py"), f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--config is required" in proc.stderr and "--config configs/quickstart.yaml" in proc.stderr


# -- the teacher checks' rows count the calls paid for them -------------------------------------------------
def test_calls_of_one_labelling_pass_are_shared_by_what_each_split_lacked():
    from rankdistill.workflows.pairdistill import share_calls

    assert share_calls(10, {"dev": 30, "test": 10}) == {"dev": 8, "test": 2}  # 7.5 -> 8, the rest to test
    assert share_calls(7, {"dev": 0, "test": 5}) == {"dev": 0, "test": 7}
    assert share_calls(0, {"dev": 0, "test": 0}) == {"dev": 0, "test": 0}
    assert share_calls(3, {"dev": 12}) == {"dev": 3}


def test_the_dev_check_row_counts_the_calls_paid_for_it(tmp_path, models):
    """In-process labelling (no Ray): the dev and test checks labelled in one pass; each row gets the
    calls paid for its split, and together they are every call made."""
    from rankdistill.data.records import Run
    from rankdistill.tracking import start_run
    from rankdistill.workflows.pairdistill import PairDistill, Stage

    job = PairDistill(tiny_config(tmp_path, models, "pipeline.use_ray=false"))
    docs = sorted(job.corpus)[:4]

    def run_of(queries):
        return Run({q: {d: 4.0 - n for n, d in enumerate(docs)} for q in queries})

    job.label_teacher_checks({"dev": run_of(job.splits.dev)})  # dev alone: every call is dev's
    assert job.check_calls == {"dev": job.teacher_calls} and job.teacher_calls > 0
    before = job.teacher_calls
    job.label_teacher_checks({"dev": run_of(job.splits.dev), "test": run_of(job.splits.test)})
    assert job.check_calls["dev"] == before and job.check_calls["test"] == job.teacher_calls - before > 0

    zero_shot = Stage("student zero-shot", {"nDCG@10": -1.0}, {})  # below the teacher: no warning
    job.stages.append(zero_shot)
    with start_run(job.config.tracking, tags={"job": "test"}) as tracker:
        job.teacher_on_dev(run_of(job.splits.dev), zero_shot, tracker)  # every label stored: no new call
    (row,) = [s for s in job.stages if "reranking dev candidates" in s.name]
    assert row.teacher_calls == before  # was: 0 (the calls were paid, and counted, elsewhere)
