"""The dataset registry and dataset cards: how a collection is found and which evaluation
conventions (relevance threshold, splits) it is evaluated with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rankdistill.data.datasets import CARD_FILE, DatasetConfig, load_dataset, resolve
from rankdistill.data.records import Run
from rankdistill.errors import ConfigError
from rankdistill.evaluation.runner import EvaluationConfig, evaluate_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def collection(root: Path, name: str, card: str | None = None) -> Path:
    """A BEIR folder: one query judged grade 1 on d1 and grade 2 on d2."""
    folder = root / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": f"text {d}"}) + "\n"
                                                 for d in ("d1", "d2", "d3")))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "query"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\n")
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    return folder


# the run ranks d1 (grade 1) first, d2 (grade 2) second: RR@10 is 1 with threshold 1, 1/2 with 2
RUN = Run({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}})


def rr(name: str) -> float:
    data = load_dataset(DatasetConfig(name))
    (value,) = evaluate_run(RUN, data, EvaluationConfig(measures=["RR@10"])).aggregate.values()
    return value  # named RR(rel=2)@10 when the threshold is 2


def test_card_sets_the_relevance_threshold(tmp_path: Path):
    folder = collection(tmp_path, "graded", "relevance_threshold: 2\ndescription: graded test\n")
    spec, _ = resolve(str(folder))
    assert spec.relevance_threshold == 2 and spec.description == "graded test" and spec.card == str(folder / CARD_FILE)
    assert rr(str(folder)) == pytest.approx(0.5)


def test_folder_without_card_warns_and_uses_threshold_1(tmp_path: Path):
    folder = collection(tmp_path, "plain")
    with pytest.warns(UserWarning, match="no dataset.yaml.*threshold 1"):
        assert rr(str(folder)) == pytest.approx(1.0)


def test_every_folder_under_the_data_roots_is_found_by_name(tmp_path: Path, monkeypatch):
    collection(tmp_path / "root", "mine", "relevance_threshold: 2\n")
    monkeypatch.setenv("RANKDISTILL_DATA", str(tmp_path / "root"))
    spec, folder = resolve("mine")
    assert folder.root == tmp_path / "root" / "mine" and spec.relevance_threshold == 2


def test_a_copy_of_a_registered_collection_keeps_its_conventions(tmp_path: Path):
    """A TREC DL folder passed by path must not silently fall back to threshold 1."""
    if not (SHARED / "trec-dl-2019-passage").is_dir():
        pytest.skip(f"needs {SHARED / 'trec-dl-2019-passage'}")
    link = tmp_path / "trec-dl-2019-passage"
    link.symlink_to(SHARED / "trec-dl-2019-passage")
    spec, _ = resolve(str(link))
    assert spec.relevance_threshold == 2 and spec.train_split is None


def test_registry_conventions():
    from rankdistill.data.datasets import REGISTRY

    assert REGISTRY["trec-dl-2019-passage"].relevance_threshold == 2
    assert REGISTRY["nfcorpus"].dev_split == "dev" and REGISTRY["scifact"].dev_split is None


@pytest.mark.parametrize("card,match", [
    ("relevance_treshold: 2\n", r"unknown field\(s\) \['relevance_treshold'\]"),
    ("relevance_threshold: 0\n", "relevance_threshold must be an integer >= 1"),
    ("relevance_threshold: two\n", "relevance_threshold must be an integer >= 1"),
    ("runs: bm25.trec\n", "runs must be a list"),
    ("- a\n- b\n", "mapping of fields"),
    ("relevance_threshold: [\n", "not valid YAML"),
])
def test_bad_cards_name_the_file_and_field(tmp_path: Path, card: str, match: str):
    folder = collection(tmp_path, "bad", card)
    with pytest.raises(ConfigError, match=match) as info:
        resolve(str(folder))
    assert str(folder / CARD_FILE) in str(info.value)


def test_missing_folder_and_unknown_name_say_which(tmp_path: Path, monkeypatch):
    with pytest.raises(ConfigError, match="dataset folder '.*/nowhere' does not exist"):
        resolve(str(tmp_path / "nowhere"))
    collection(tmp_path / "root", "present")
    monkeypatch.setenv("RANKDISTILL_DATA", str(tmp_path / "root"))
    with pytest.raises(ConfigError, match="unknown dataset 'absent'.*found there: .*present"):
        resolve("absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a BEIR collection"):
        resolve(str(tmp_path / "empty"))
