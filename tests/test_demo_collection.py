"""Validates the bundled demo test collection (BEIR layout) with the standard library only.

The collection lives in platform/rankdistill/data/demo/ and is read straight from disk, so this test does not
depend on the rankdistill package importing cleanly.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "platform" / "rankdistill" / "data" / "demo"
SPLITS = ("train", "test")
QRELS_HEADER = "query-id\tcorpus-id\tscore"

MIN_PASSAGES = 330
MIN_QUERIES = 48
MIN_TEST_QUERIES = 16
MIN_TRAIN_QUERIES = 32
MIN_WORDS = 25
MAX_TOTAL_BYTES = 1_000_000
GRADES = {0, 1, 2}
REL_PER_QUERY = (3, 7)  # passages with grade >= 1
NEG_PER_QUERY = (2, 4)  # judged grade-0 hard negatives
QUERY_WORDS = (3, 12)


def _read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert b"\r" not in raw, f"{path.name} must use LF line endings"
    text = raw.decode("utf-8")  # raises if not UTF-8
    assert text.endswith("\n"), f"{path.name} must end with a newline"
    return text[:-1].split("\n")


def _read_jsonl(path: Path, keys: set[str]) -> list[dict]:
    rows = []
    for n, line in enumerate(_read_lines(path), 1):
        assert line.strip(), f"{path.name}:{n} is blank"
        row = json.loads(line)
        assert isinstance(row, dict) and set(row) == keys, (
            f"{path.name}:{n} keys {sorted(row)} != {sorted(keys)}"
        )
        for k in keys:
            assert isinstance(row[k], str), f"{path.name}:{n} field {k} is not a string"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return _read_jsonl(DEMO / "corpus.jsonl", {"_id", "title", "text"})


@pytest.fixture(scope="module")
def queries() -> list[dict]:
    return _read_jsonl(DEMO / "queries.jsonl", {"_id", "text"})


@pytest.fixture(scope="module")
def qrels() -> dict[str, list[tuple[str, str, int]]]:
    out = {}
    for split in SPLITS:
        lines = _read_lines(DEMO / "qrels" / f"{split}.tsv")
        assert lines[0] == QRELS_HEADER, f"{split}.tsv header is {lines[0]!r}"
        rows = []
        for n, line in enumerate(lines[1:], 2):
            parts = line.split("\t")
            assert len(parts) == 3, f"{split}.tsv:{n} has {len(parts)} columns"
            qid, did, score = parts
            assert re.fullmatch(r"-?\d+", score), f"{split}.tsv:{n} score {score!r} is not an integer"
            rows.append((qid, did, int(score)))
        out[split] = rows
    return out


def _words(text: str) -> int:
    return len(text.split())


def test_files_present_and_small():
    paths = [DEMO / "corpus.jsonl", DEMO / "queries.jsonl", DEMO / "DATACARD.md"]
    paths += [DEMO / "qrels" / f"{s}.tsv" for s in SPLITS]
    for p in paths:
        assert p.is_file(), f"missing {p}"
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total <= MAX_TOTAL_BYTES, f"demo collection is {total} bytes (> {MAX_TOTAL_BYTES})"


def test_corpus_ids_and_texts(corpus):
    assert len(corpus) >= MIN_PASSAGES, f"only {len(corpus)} passages"
    ids = [d["_id"] for d in corpus]
    dup_ids = [i for i, c in Counter(ids).items() if c > 1]
    assert not dup_ids, f"duplicate corpus ids: {dup_ids[:5]}"
    for d in corpus:
        assert d["_id"].strip() == d["_id"] and d["_id"], f"bad id {d['_id']!r}"
        assert d["title"].strip(), f"{d['_id']} has an empty title"
        assert d["text"].strip(), f"{d['_id']} has an empty text"
        assert _words(d["text"]) >= MIN_WORDS, f"{d['_id']} has only {_words(d['text'])} words"
    norm = [" ".join(d["text"].lower().split()) for d in corpus]
    dup_texts = [t[:60] for t, c in Counter(norm).items() if c > 1]
    assert not dup_texts, f"duplicate passage texts: {dup_texts[:3]}"


def test_queries_ids_and_texts(queries):
    assert len(queries) >= MIN_QUERIES, f"only {len(queries)} queries"
    ids = [q["_id"] for q in queries]
    dup_ids = [i for i, c in Counter(ids).items() if c > 1]
    assert not dup_ids, f"duplicate query ids: {dup_ids}"
    texts = [" ".join(q["text"].lower().split()) for q in queries]
    assert len(set(texts)) == len(texts), "duplicate query texts"
    lo, hi = QUERY_WORDS
    for q in queries:
        assert q["text"].strip(), f"{q['_id']} is empty"
        assert lo <= _words(q["text"]) <= hi, f"{q['_id']} has {_words(q['text'])} words"


def test_qrels_reference_existing_ids(corpus, queries, qrels):
    doc_ids = {d["_id"] for d in corpus}
    query_ids = {q["_id"] for q in queries}
    for split, rows in qrels.items():
        assert rows, f"{split}.tsv has no judgements"
        pairs = Counter((qid, did) for qid, did, _ in rows)
        dup = [p for p, c in pairs.items() if c > 1]
        assert not dup, f"{split}.tsv judges the same pair twice: {dup[:3]}"
        for qid, did, score in rows:
            assert qid in query_ids, f"{split}.tsv: unknown query id {qid}"
            assert did in doc_ids, f"{split}.tsv: unknown corpus id {did}"
            assert score in GRADES, f"{split}.tsv: grade {score} for {qid}/{did} not in {sorted(GRADES)}"


def test_splits_disjoint_and_cover_all_queries(queries, qrels):
    split_qids = {s: {qid for qid, _, _ in rows} for s, rows in qrels.items()}
    overlap = split_qids["train"] & split_qids["test"]
    assert not overlap, f"queries in both train and test: {sorted(overlap)}"
    assert len(split_qids["train"]) >= MIN_TRAIN_QUERIES, f"train has {len(split_qids['train'])} queries"
    assert len(split_qids["test"]) >= MIN_TEST_QUERIES, f"test has {len(split_qids['test'])} queries"
    unjudged = {q["_id"] for q in queries} - split_qids["train"] - split_qids["test"]
    assert not unjudged, f"queries without judgements: {sorted(unjudged)}"


def test_every_query_has_graded_relevant_and_hard_negatives(qrels):
    per_query: dict[str, Counter] = defaultdict(Counter)
    for rows in qrels.values():
        for qid, _, score in rows:
            per_query[qid][score] += 1
    problems = []
    for qid, grades in sorted(per_query.items()):
        relevant = grades[1] + grades[2]
        if not REL_PER_QUERY[0] <= relevant <= REL_PER_QUERY[1]:
            problems.append(f"{qid}: {relevant} relevant passages")
        if grades[2] < 1:
            problems.append(f"{qid}: no grade-2 passage")
        if not NEG_PER_QUERY[0] <= grades[0] <= NEG_PER_QUERY[1]:
            problems.append(f"{qid}: {grades[0]} judged non-relevant passages")
    assert not problems, "; ".join(problems)


def test_datacard_matches_collection(corpus, queries, qrels):
    card = (DEMO / "DATACARD.md").read_text(encoding="utf-8")
    assert "CC0-1.0" in card, "DATACARD.md must state the CC0-1.0 licence"
    for number, word in [
        (len(corpus), "passages"),
        (len(queries), "queries"),
        (len({q for q, _, _ in qrels["train"]}), "train"),
        (len({q for q, _, _ in qrels["test"]}), "test"),
    ]:
        assert re.search(rf"\b{number} {word}\b", card), f'DATACARD.md does not say "{number} {word}"'
