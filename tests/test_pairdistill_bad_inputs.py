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
