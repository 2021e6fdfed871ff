"""The one small interface every teacher backend implements.

``generate(prompts, max_new_tokens) -> list[str]``
    greedy continuations (listwise permutations).
``token_logprobs(prompts, candidate_tokens) -> list[dict[str, float]]``
    for each prompt, the log-probability (log-softmax over the whole vocabulary) of the first token
    of each candidate string as the model's next token (pairwise A/B, pointwise yes/no).

A prompt is a :class:`Prompt` (text plus the query id and doc ids it was built from, which the
``replay`` backend keys on) or a plain string. Backends count their calls and prompts, so a test or
benchmark can check that a re-run made none.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prompt:
    text: str
    qid: str = ""
    docids: tuple[str, ...] = ()


def as_prompts(prompts: Sequence[Prompt | str]) -> list[Prompt]:
    return [p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts]


@dataclass
class BackendConfig:
    """Which backend and model. Unknown keys are config errors; only the chosen backend's fields
    are read."""

    name: str = "hf"  # hf | vllm | replay | reranker
    model: str | None = None  # a folder / hub id, or "package:<module>" (a GGUF shipped in a package); reranker: a saved student
    gguf_file: str | None = None  # file name inside ``model`` (found automatically for package:)
    tokenizer: str | None = None  # default: the model's; replay: optional (for token truncation)
    model_type: str = "auto"  # auto | causal | seq2seq
    device: str = "auto"  # auto | cpu | cuda  (auto: cuda when available, else cpu)
    dtype: str = "auto"  # auto (float32 on CPU, bfloat16 on GPU) | float32 | float16 | bfloat16
    batch_size: int = 8  # prompts per forward pass / generate call (hf)
    max_input_tokens: int | None = None  # hf: longer prompts are cut from the left
    num_threads: int | None = None  # torch CPU threads (hf)
    fallback: str | None = "hf"  # vllm: backend to use when vllm is not installed (null: error)
    # vllm
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    max_model_len: int | None = None
    top_logprobs: int = 20  # vllm: top-k logprobs requested per step (label tokens must be in it)
    enforce_eager: bool = False
    seed: int = 0
    # replay
    replay_file: str | None = None  # JSON lines: {qid, docids, response} or {qid, docids, logprobs}
    replay_strict: bool = True  # a prompt with no recording is an error (else: empty response)

    def __post_init__(self) -> None:
        from rankdistill.config import check_choice, check_range
        from rankdistill.errors import ConfigError

        backends = ("hf", "vllm", "replay", "reranker")
        if self.name not in backends:
            raise ConfigError(f"unknown backend '{self.name}' (known: {', '.join(backends)})", "name")
        if self.fallback not in (None, "") + backends:
            raise ConfigError(f"unknown backend '{self.fallback}' (known: {', '.join(backends)})", "fallback")
        check_choice("model_type", self.model_type, ("auto", "causal", "seq2seq"))
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_choice("dtype", self.dtype, ("auto", "float32", "float16", "bfloat16"))
        for name in ("batch_size", "tensor_parallel_size", "top_logprobs"):
            check_range(name, getattr(self, name), minimum=1)
        for name in ("max_input_tokens", "num_threads", "max_model_len"):
            check_range(name, getattr(self, name), minimum=1)
        check_range("gpu_memory_utilization", self.gpu_memory_utilization, above=0, maximum=1)


class TeacherBackend(abc.ABC):
    """A loaded teacher model (or a recording of one)."""

    name: str = "backend"
    tokenizer: Any = None
    # True for a backend that judges texts itself (``reranker``): the pairwise and pointwise
    # labelers call its ``judge_pairs`` / ``judge_points`` instead of rendering prompts
    judges_text: bool = False

    def __init__(self) -> None:
        self.calls = 0
        self.prompts_seen = 0

    def _count(self, prompts: Sequence[Any]) -> None:
        self.calls += 1
        self.prompts_seen += len(prompts)

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Prompt | str], max_new_tokens: int) -> list[str]:
        """Greedy continuation of each prompt (verbatim, special tokens removed)."""

    @abc.abstractmethod
    def token_logprobs(self, prompts: Sequence[Prompt | str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        """``[{candidate: log p(first token of candidate | prompt)}]`` for each prompt."""

    def count_tokens(self, text: str) -> int | None:
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    @property
    def description(self) -> str:
        return self.name

