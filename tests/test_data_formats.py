"""Readers and writers of BEIR, TREC and rank_llm files, and their errors on bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from rankdistill.data import (
    BeirFolder,
    Candidate,
    CandidateList,
    Query,
    Run,
    candidate_lists,
    read_qrels,
    read_requests,
    read_trec_run,
    write_requests,
    write_trec_run,
)
from rankdistill.data.beir import read_corpus, read_qrels_tsv, read_queries, write_corpus, write_qrels_tsv
from rankdistill.data.records import Document
from rankdistill.errors import DataFormatError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    root = tmp_path / "coll"
    write(root / "corpus.jsonl", "\n".join([
        json.dumps({"_id": "d1", "title": "Bees", "text": "Honey bees pollinate flowers."}),
        json.dumps({"_id": "d2", "title": "", "text": "Volcanoes erupt lava."}),
        json.dumps({"_id": 3, "text": "Numeric ids are read as strings."}),
    ]) + "\n")
    write(root / "queries.jsonl", '{"_id": "q1", "text": "who pollinates flowers"}\n{"_id": "q2", "text": "lava"}\n')
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td2\t1\n")
    return root


def test_beir_folder_reads_corpus_queries_qrels(beir: Path):
    folder = BeirFolder(beir)
    corpus = folder.corpus()
    assert list(corpus) == ["d1", "d2", "3"]
    assert corpus["d1"].contents == "Bees Honey bees pollinate flowers."
    assert corpus["d2"].contents == "Volcanoes erupt lava."
    assert folder.qrels("test") == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert set(folder.queries("test")) == {"q1", "q2"}
    assert folder.qrels("test").relevant("q1") == {"d1"}


def test_subset_folder_keeps_the_first_judged_queries_their_documents_and_the_first_others(beir: Path):
    from rankdistill.data.beir import SubsetFolder

    write(beir / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    subset = SubsetFolder(beir, queries_per_split=(("test", 1), ("train", 1)), extra_documents=1)
    assert subset.qrels("test") == {"q1": {"d1": 2, "d2": 0}}  # q2 is the second test query: dropped
    assert list(subset.corpus()) == ["d1", "d2"]  # d1 is the first document; d2 is judged; "3" neither
    assert set(subset.queries("test")) == {"q1"} and set(subset.queries()) == {"q1", "q2"}
    subset.qrels("test", check_docs=True)
    none_extra = SubsetFolder(beir, queries_per_split=(("train", 1),), extra_documents=0)
    assert list(none_extra.corpus()) == ["d2"]
    with pytest.raises(DataFormatError, match="split 'test' is not part of this subset"):
        none_extra.qrels("test")


def test_gzip_files_read_like_plain(beir: Path, tmp_path: Path):
    gz = tmp_path / "gz"
    (gz / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        with gzip.open(gz / f"{name}.gz", "wt", encoding="utf-8") as f:
            f.write((beir / name).read_text())
    assert BeirFolder(gz).corpus() == BeirFolder(beir).corpus()
    assert BeirFolder(gz).qrels("test") == BeirFolder(beir).qrels("test")


def test_writers_round_trip(tmp_path: Path, beir: Path):
    corpus = read_corpus(beir / "corpus.jsonl")
    write_corpus(corpus.values(), tmp_path / "c.jsonl.gz")
    assert read_corpus(tmp_path / "c.jsonl.gz") == corpus
    qrels = read_qrels_tsv(beir / "qrels" / "test.tsv")
    write_qrels_tsv(qrels, tmp_path / "q.tsv")
    assert read_qrels(tmp_path / "q.tsv") == qrels


def test_trec_run_round_trip_and_tie_order(tmp_path: Path):
    run = Run({"q1": {"a": 1.0, "b": 3.0, "c": 1.0}, "q2": {"x": 0.5}})
    write_trec_run(run, tmp_path / "r.trec", tag="t")
    lines = (tmp_path / "r.trec").read_text().splitlines()
    # best first; equal scores keep the run's own order (a before c), not trec_eval's docid rule
    assert [line.split()[2] for line in lines[:3]] == ["b", "a", "c"]
    assert [line.split()[3] for line in lines[:3]] == ["1", "2", "3"]
    assert [d for d, _ in run.trec_eval_ranked("q1")] == ["b", "c", "a"]
    back = read_trec_run(tmp_path / "r.trec")
    assert back == run and [d for d, _ in back.ranked("q1")] == ["b", "a", "c"]


# A first stage with tied scores: the rank column, not the docid, orders the ties; the lines are
# shuffled in the file (rank column 3, 1, 4, 2), so file position alone would give another order.
TIED_RUN = (
    "q1 Q0 d4 3 1.5 t\n"
    "q1 Q0 d1 1 2.0 t\n"
    "q1 Q0 d9 4 1.0 t\n"
    "q1 Q0 d2 2 2.0 t\n"
    "q2 Q0 z 1 7.0 t\n"
)


def test_tied_scores_keep_the_files_ranks_for_candidates(tmp_path: Path):
    run = read_trec_run(write(tmp_path / "tied.trec", TIED_RUN))
    assert list(run) == ["q1", "q2"]
    assert [d for d, _ in run.ranked("q1")] == ["d1", "d2", "d4", "d9"]  # file ranks 1..4
    assert [d for d, _ in run.trec_eval_ranked("q1")] == ["d2", "d1", "d4", "d9"]  # docid desc
    assert list(run.top(1)["q1"]) == ["d1"]
    queries = {"q1": Query("q1", "bees"), "q2": Query("q2", "wasps")}
    corpus = {d: Document(d, f"text {d}") for d in ("d1", "d2", "d4", "d9", "z")}
    lists = list(candidate_lists(run, queries, corpus, k=3))
    assert lists[0].docids == ["d1", "d2", "d4"]
    write_trec_run(run, tmp_path / "again.trec", tag="t")  # ranks survive a round trip
    assert [line.split()[2:4] for line in (tmp_path / "again.trec").read_text().splitlines()][:4] == [
        ["d1", "1"], ["d2", "2"], ["d4", "3"], ["d9", "4"]
    ]


@pytest.mark.shared_data
def test_splade_dl19_candidates_follow_the_rank_column():
    from conftest import shared_dataset

    _, folder = shared_dataset("trec-dl-2019-passage")
    path = folder.root / "runs" / "splade-pp-ed.trec"
    by_rank: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, _, _ = line.split()
        by_rank.setdefault(qid, []).append((int(rank), docid))
    run = read_trec_run(path)
    docs = {d: Document(d, "") for q in run for d in run[q]}
    lists = {cl.qid: cl.docids for cl in candidate_lists(run, folder.queries(), docs)}
    assert lists == {q: [d for _, d in sorted(rows)] for q, rows in by_rank.items()}
    # the 15 queries with tied scores are exactly those where trec_eval's order differs
    tied = {q for q in run if len(set(run[q].values())) < len(run[q])}
    differ = {q for q in run if lists[q] != [d for d, _ in run.trec_eval_ranked(q)]}
    assert len(tied) == 15 and differ == tied


def test_trec_qrels_four_columns(tmp_path: Path):
    path = write(tmp_path / "qrels.txt", "q1 0 d1 3\nq1 0 d2 0\n")
    assert read_qrels(path) == {"q1": {"d1": 3, "d2": 0}}


def test_rankllm_requests_list_and_jsonl(tmp_path: Path):
    request = {
        "query": {"text": "what is a bee", "qid": 7},
        "candidates": [
            {"docid": "d1", "score": 3.5, "doc": {"contents": "A bee is an insect."}},
            {"docid": "d2", "score": 1.0, "doc": {"title": "Wasp", "text": "Wasps sting."}},
        ],
    }
    write(tmp_path / "list.json", json.dumps([request]))
    (cl,) = read_requests(tmp_path / "list.json")
    assert cl.qid == "7" and cl.query.text == "what is a bee"
    assert cl.docids == ["d1", "d2"]
    assert cl.candidates[0].contents == "A bee is an insect."
    assert cl.candidates[1].contents == "Wasp Wasps sting."
    write_requests([cl], tmp_path / "out.jsonl")
    (again,) = read_requests(tmp_path / "out.jsonl")
    assert again.docids == cl.docids and [c.contents for c in again.candidates] == [c.contents for c in cl.candidates]


def test_candidate_lists_join_run_queries_corpus():
    run = Run({"q1": {"d1": 2.0, "d2": 5.0, "d3": 1.0}})
    queries = {"q1": Query("q1", "bees")}
    corpus = {d: Document(d, f"text {d}") for d in ("d1", "d2", "d3")}
    (cl,) = candidate_lists(run, queries, corpus, k=2)
    assert cl.docids == ["d2", "d1"]
    assert [c.text for c in cl.candidates] == ["text d2", "text d1"]
    assert cl.candidates[0].text is corpus["d2"].text  # a reference, not a copy
    with pytest.raises(DataFormatError, match="'d9'"):
        list(candidate_lists(Run({"q1": {"d9": 1.0}}), queries, corpus))


def test_candidate_list_dict_round_trip_and_run_by_position():
    cl = CandidateList(Query("q", "t"), [Candidate("a", 0.1, "x"), Candidate("b", 0.9, "y")])
    assert CandidateList.from_dict(cl.to_dict()).docids == ["a", "b"]
    run = Run.from_candidate_lists([cl])
    assert [d for d, _ in run.ranked("q")] == ["a", "b"]  # list order, not first-stage score
    with pytest.raises(ValueError):
        cl.reordered(["a", "a"])


# ---- bad input: one error type, naming file, line and problem -------------------------------

BAD_CASES = [
    ("corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "bad"\n', read_corpus, 2, "bad JSON"),
    ("corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"title": "x", "text": "no id"}\n', read_corpus, 2,
     "missing field '_id'"),
    ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n\n{"_id": "d1", "text": "b"}\n', read_corpus, 3,
     "duplicate document id 'd1'"),
    ("corpus.jsonl", '{"_id": "d1"}\n', read_corpus, 1, "missing field 'text'"),
    ("corpus.jsonl", '["not", "an", "object"]\n', read_corpus, 1, "expected a JSON object"),
    ("corpus.jsonl", '{"_id": "d1", "text": ["list"]}\n', read_corpus, 1, "field 'text' must be a string"),
    ("queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', read_queries, 2,
     "duplicate query id 'q1'"),
    ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\n", read_qrels_tsv, 2, "expected 3 tab-separated fields"),
    ("qrels.tsv", "q1\td1\thigh\n", read_qrels_tsv, 1, "grade 'high' is not an integer"),
    ("qrels.tsv", "q1\td1\t1\nq1\td1\t2\n", read_qrels_tsv, 2, "duplicate judgement"),
    ("run.trec", "q1 Q0 d1 1 2.5 tag\nq1 d2 2.0\n", read_trec_run, 2, "unknown run format"),
    ("run.trec", "q1 Q0 d1 1 abc tag\n", read_trec_run, 1, "is not a number"),
    ("run.trec", "q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", read_trec_run, 2, "appears twice"),
    ("req.jsonl", '{"query": {"qid": "1"}, "candidates": []}\n', read_requests, 1, "'qid' and 'text'"),
    ("req.jsonl", '{"query": {"qid": "1", "text": "x"}, "candidates": [{"score": 1}]}\n', read_requests, 1,
     "has no 'docid'"),
]


@pytest.mark.parametrize("name,content,reader,line,problem", BAD_CASES, ids=[c[4] for c in BAD_CASES])
def test_bad_input_names_file_line_and_problem(tmp_path, name, content, reader, line, problem):
    path = write(tmp_path / name, content)
    with pytest.raises(DataFormatError) as info:
        reader(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert problem in message
    assert info.value.line == line and info.value.path == str(path)


def test_missing_file_and_bad_gzip_and_bad_utf8(tmp_path: Path):
    with pytest.raises(DataFormatError, match="does not exist"):
        read_corpus(tmp_path / "nope.jsonl")
    write(tmp_path / "c.jsonl.gz", "this is not gzip")
    with pytest.raises(DataFormatError, match="gzip"):
        read_corpus(tmp_path / "c.jsonl.gz")
    (tmp_path / "latin.jsonl").write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_corpus(tmp_path / "latin.jsonl")


def test_qrel_pointing_at_missing_doc_when_asked(beir: Path):
    with open(beir / "qrels" / "test.tsv", "a") as f:
        f.write("q2\tghost\t1\n")
    assert BeirFolder(beir).qrels("test")["q2"]["ghost"] == 1  # not checked unless asked
    with pytest.raises(DataFormatError) as info:
        BeirFolder(beir).qrels("test", check_docs=True)
    assert f"{beir / 'qrels' / 'test.tsv'}:5:" in str(info.value) and "'ghost'" in str(info.value)


def test_missing_beir_file(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no corpus.jsonl"):
        BeirFolder(tmp_path / "empty").corpus()


def test_ray_dataset_of_candidate_lists(tmp_path: Path, local_ray):
    from rankdistill.data import candidate_dataset

    lists = [
        CandidateList(Query(f"q{i}", f"query {i}"), [Candidate(f"d{j}", float(10 - j), f"text {j}") for j in range(3)])
        for i in range(5)
    ]
    ds = candidate_dataset(iter(lists), tmp_path / "shards", rows_per_shard=2)
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 3
    rows = sorted(ds.take_all(), key=lambda r: r["qid"])
    back = [CandidateList.from_dict(r) for r in rows]
    assert [b.qid for b in back] == [f"q{i}" for i in range(5)]
    assert back[2].docids == ["d0", "d1", "d2"] and back[2].candidates[1].text == "text 1"


def test_ir_datasets_loader_names_the_extra_when_missing():
    import importlib.util

    from rankdistill.data import ir_datasets_loader
    from rankdistill.errors import MissingExtraError

    if importlib.util.find_spec("ir_datasets") is not None:
        pytest.skip("ir_datasets is installed here; the error path cannot be exercised")
    with pytest.raises(MissingExtraError, match=r"pip install 'rankdistill\[datasets\]'"):
        ir_datasets_loader.read_queries("beir/scifact/test")
