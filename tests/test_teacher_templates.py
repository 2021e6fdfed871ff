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
    fix_text_rankllm,
    load_template,
    substitute,
)

SHIPPED = {"rankvicuna": "listwise", "rankzephyr": "listwise", "rankgpt": "listwise",
           "pairdistill-pairwise": "pairwise", "duot5": "pairwise", "pairdistill-pointwise": "pointwise",
           "monot5": "pointwise"}


def test_every_shipped_template_loads_with_a_stable_distinct_hash():
    assert set(available_templates()) == set(SHIPPED)
    hashes = {}
    for name, kind in SHIPPED.items():
        t = load_template(name)
        assert (t.id, t.kind, t.version) == (name, kind, 1)
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
                             "based on their relevancy to the query.</s>\n<|user|>\nI will provide you with 2 passages")
    assert prompt.endswith("do not say any word or explain.</s>\n<|assistant|>\n")
    assert "[1] see (2) here\n[2] plain\n" in prompt
    assert "search query: best (1) pizza." in prompt
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
    assert turns[7].startswith("user:Search Query: q. \nRank the 2 passages") and turns[-1] == "gen"
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


def test_text_fix_rankllm_repairs_ms_marco_mojibake():
    assert fix_text_rankllm("cultures\u00e2\u0080\u0094from") == "cultures\u2014from"
    assert fix_text_rankllm("caf\u00c3\u00a9 &amp; bar") == "caf\u00e9 & bar"
    assert fix_text_rankllm("\u201cquoted\u201d it\u2019s") == "\"quoted\" it's"
    assert fix_text_rankllm("\u00ef\u00bb\u00bfStart \ufb01ne") == "Start fine"
    assert fix_text_rankllm("plain text stays") == "plain text stays"


@pytest.mark.shared_data
def test_rankvicuna_template_reproduces_the_recorded_dl19_prompts():
    _, folder = shared_dataset("trec-dl-2019-passage")
    corpus = {d.docid: d for d in folder.iter_corpus()}
    queries = folder.queries()
    template = load_template("rankvicuna")
    records = [json.loads(line) for line in
               (folder.root / "teacher" / "rankvicuna-7b.bm25.windows.jsonl").read_text().splitlines()]
    same = sum(
        template.listwise(queries[r["qid"]].text, [corpus[d].contents for d in r["docids"]]) == r["prompt"]
        for r in records
    )
    # all but the windows where ftfy's badness heuristic decides mixed mojibake differently
    assert len(records) == 387 and same >= 375
