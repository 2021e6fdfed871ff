"""The label store: schemas, atomic batch files, dedupe on read, skip keys, SIGKILL while writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rankdistill.errors import ConfigError
from rankdistill.teachers.store import KEY_COLUMNS, SCHEMAS, LabelStore


def point(qid, docid, score, teacher="t", template_hash="h1", template_id="monot5"):
    return {"teacher": teacher, "template_id": template_id, "template_hash": template_hash, "qid": qid,
            "docid": docid, "rank": 0, "score": score, "logprob_yes": score, "logprob_no": -1.0}


def window(qid, w, after):
    return {"teacher": "t", "template_id": "rankzephyr", "template_hash": "h", "qid": qid, "list_key": "k",
            "pass_index": 0, "window_index": w, "start": 0, "end": 2, "window_size": 2, "stride": 1,
            "docids_in": ["a", "b"], "ranking_out": ["b", "a"], "response": "[2] > [1]", "repair": "ok",
            "n_out_of_range": 0, "n_repeats": 0, "n_missing": 0, "ranking_after": after}


def test_round_trip_sorted_by_key_with_the_read_schema(tmp_path: Path):
    store = LabelStore(tmp_path)
    store.write("pointwise", [point("q2", "d1", -0.5), point("q1", "d9", -0.1), point("q1", "d2", -2.0)])
    df = store.read("pointwise")
    assert list(df.columns) == SCHEMAS["pointwise"].names
    assert list(zip(df.qid, df.docid)) == [("q1", "d2"), ("q1", "d9"), ("q2", "d1")]
    assert df.score.tolist() == [-2.0, -0.1, -0.5]
    assert set(KEY_COLUMNS) == set(SCHEMAS) == {"pointwise", "pairwise", "listwise"}
    assert store.write("pairwise", []) is None and store.read("pairwise").empty


def test_filters_by_teacher_and_template_hash_or_id(tmp_path: Path):
    store = LabelStore(tmp_path)
    store.write("pointwise", [point("q", "a", -1, teacher="t1"), point("q", "a", -1, teacher="t2"),
                              point("q", "b", -1, teacher="t1", template_hash="h2", template_id="other")])
    assert len(store.read("pointwise", teacher="t1")) == 2
    assert len(store.read("pointwise", teacher="t1", template="h2")) == 1
    assert len(store.read("pointwise", template="monot5")) == 2
    assert store.unit_keys("pointwise", "t1", "h1") == {("q", "a")}


def test_duplicates_are_dropped_on_read_first_written_wins(tmp_path: Path):
    store = LabelStore(tmp_path)
    store.write("pointwise", [point("q", "a", -1.0)])
    time.sleep(0.001)
    store.write("pointwise", [point("q", "a", -9.0), point("q", "b", -2.0)])
    assert store.read("pointwise").score.tolist() == [-1.0, -2.0]
    assert len(store.read("pointwise", dedupe=False)) == 3
    assert len(store.files("pointwise")) == 2


def test_pointwise_scores_keep_the_earliest_written_duplicate(tmp_path: Path):
    """One reader of pointwise scores (the label job's pairwise reranking and PairDistill's): a
    duplicate (qid, docid) label — re-written under the same template hash, or under another
    version (hash) of the same template id — never replaces the first one stored."""
    store = LabelStore(tmp_path)
    store.write("pointwise", [point("q1", "a", -0.5), point("q1", "b", -1.5),
                              point("q2", "a", -3.0, template_hash="h0")])
    time.sleep(0.001)
    store.write("pointwise", [point("q1", "a", -7.0), point("q1", "c", -2.5),  # q1/a again: same hash
                              point("q2", "a", -0.1, template_hash="h1"),  # q2/a again: another version
                              point("q1", "b", -9.0, teacher="other")])
    assert store.pointwise_scores("t", "h1") == {"q1": {"a": -0.5, "b": -1.5, "c": -2.5}, "q2": {"a": -0.1}}
    assert store.pointwise_scores("t", "monot5") == {"q1": {"a": -0.5, "b": -1.5, "c": -2.5}, "q2": {"a": -3.0}}
    assert store.pointwise_scores("other", "h1") == {"q1": {"b": -9.0}}
    assert store.pointwise_scores("t", "nothing") == {}


def test_temporary_files_are_never_read_and_get_cleaned(tmp_path: Path):
    store = LabelStore(tmp_path)
    store.write("pointwise", [point("q", "a", -1.0)])
    (tmp_path / "pointwise" / ".tmp-part-00000000000000000001-abc.parquet").write_bytes(b"PAR1 half a file")
    assert len(store.read("pointwise")) == 1
    assert store.cleanup(min_age_s=3600) == 0 and store.cleanup(min_age_s=0) == 1


def test_listwise_final_rankings_and_list_columns(tmp_path: Path):
    store = LabelStore(tmp_path)
    store.write("listwise", [window("q", 1, ["c", "b", "a"]), window("q", 0, ["b", "a", "c"])])
    df = store.read("listwise")
    assert df.window_index.tolist() == [0, 1] and list(df.docids_in[0]) == ["a", "b"]
    assert store.final_rankings("t", "h") == {"q": ["c", "b", "a"]}
    assert store.unit_keys("listwise", "t", "h") == {("q", "k")}


def test_unknown_kind(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown label kind"):
        LabelStore(tmp_path).write("triplewise", [])


WRITER = textwrap.dedent("""
    import sys
    from rankdistill.teachers.store import LabelStore
    store = LabelStore(sys.argv[1])
    print("ready", flush=True)
    for b in range(100000):
        rows = [{"teacher": "t", "template_id": "x", "template_hash": "h", "qid": f"q{b}", "docid": f"d{i}",
                 "rank": i, "score": -float(i), "logprob_yes": -1.0, "logprob_no": -2.0} for i in range(500)]
        store.write("pointwise", rows)
""")


def test_sigkill_while_writing_leaves_only_whole_batches(tmp_path: Path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for attempt in range(3):
        root = tmp_path / f"store{attempt}"
        proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        store = LabelStore(root)
        deadline = time.time() + 120
        while not store.files("pointwise") and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 + 0.13 * attempt)  # then kill at varying points of later writes
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        files = store.files("pointwise")
        assert files, "the writer was killed before writing anything"
        for path in files:
            assert pq.read_table(path).num_rows == 500  # every committed file is whole
        df = store.read("pointwise", dedupe=False)
        assert len(df) == 500 * len(files) and not df.duplicated(["qid", "docid"]).any()
