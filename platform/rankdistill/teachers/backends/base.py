"""The one small interface every teacher backend implements.

``generate(prompts, max_new_tokens) -> list[str]``
    greedy continuations (listwise permutations).
``token_logprobs(prompts, candidate_tokens) -> list[dict[str, float]]``
    for each prompt, the log-probability (log-softmax over the whole vocabulary) of the first token
    of each candidate string as the model's next token (pairwise A/B, pointwise yes/no).
``identifier_logprobs(prompts, identifiers) -> list[list[float]]``
    for each prompt, the next-token log-probability of each listwise identifier (``A``, ``B``, ...),
    each of which must be one token of the model's vocabulary: FIRST's single forward pass
    (listwise mode ``first``). Backends that cannot read logits (``reranker``, ``ensemble``) refuse.

A prompt is a :class:`Prompt` (text plus the query id and doc ids it was built from, which the
``replay`` backend keys on) or a plain string. Backends count their calls and prompts, so a test or
benchmark can check that a re-run made none.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    text: str
    qid: str = ""
    docids: tuple[str, ...] = ()


def as_prompts(prompts: Sequence[Prompt | str]) -> list[Prompt]:
    return [p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts]


#: member kinds of the ``ensemble`` backend
MEMBER_KINDS = ("teacher", "first_stage", "dense")
#: how the ``ensemble`` backend fuses its members' scores of one candidate list
FUSIONS = ("rrf", "zsum")


@dataclass
class EnsembleMember:
    """One scorer of an ``ensemble`` teacher (see :mod:`rankdistill.teachers.backends.ensemble`).

    ``kind``:
      - ``teacher``: any other backend (``backend``: its config; a ``reranker`` or a yes/no LLM);
        its raw score, ``logprob_yes − logprob_no``;
      - ``first_stage``: the candidate list's own first-stage score (BM25's);
      - ``dense``: a dense model's similarity: ``model`` (a saved rankdistill student folder) or
        ``backbone`` (an encoder folder, or ``all-MiniLM-L6-v2``, the packaged copy) built
        zero-shot as ``architecture`` with ``options``.
    """

    kind: str = "teacher"
    weight: float = 1.0
    name: str | None = None  # how the job's output names it (default: kind and model)
    backend: BackendConfig | None = None  # teacher
    model: str | None = None  # dense: a saved student
    backbone: str | None = None  # dense: zero-shot from an encoder
    architecture: str = "bi-encoder"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rankdistill.config import check_choice
        from rankdistill.errors import ConfigError

        check_choice("kind", self.kind, MEMBER_KINDS)
        if self.weight < 0:
            raise ConfigError(f"must be >= 0, got {self.weight}", "weight")
        if self.kind == "teacher" and self.backend is None:
            raise ConfigError("a teacher member needs its backend: {name: ..., model: ...}", "backend")
        if self.kind == "teacher" and self.backend.name == "ensemble":
            raise ConfigError("an ensemble member may not itself be an ensemble", "backend.name")
        if self.kind == "dense" and not (self.model or self.backbone):
            raise ConfigError("a dense member needs model (a saved student) or backbone (zero-shot)", "model")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        source = self.backend.model if self.backend is not None else (self.model or self.backbone)
        return f"{self.kind}:{source}" if source else self.kind


@dataclass
class BackendConfig:
    """Which backend and model. Unknown keys are config errors; only the chosen backend's fields
    are read."""

    name: str = "hf"  # hf | vllm | replay | reranker | ensemble
    model: str | None = None  # a folder / hub id, or "package:<module>" (a GGUF shipped in a package); reranker: a saved student
    gguf_file: str | None = None  # file name inside ``model`` (found automatically for package:)
    tokenizer: str | None = None  # default: the model's; replay: optional (for token truncation)
    model_type: str = "auto"  # auto | causal | seq2seq
    device: str = "auto"  # auto | cpu | cuda  (auto: cuda when available, else cpu)
    dtype: str = "auto"  # an LLM's (hf, vllm) weights: auto (float32 on CPU, bfloat16 on GPU) | float32 | float16 | bfloat16
    # a rankdistill student's (reranker; an ensemble's dense members) autocast: fp32 | bf16 | fp16 |
    # auto (bf16 where the actor's device has a bf16 unit, else fp32), as training.precision
    precision: str = "fp32"
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
    # ensemble (pointwise labels): members fused per candidate list
    members: list[EnsembleMember] = field(default_factory=list)
    fusion: str = "rrf"  # rrf: Σ w / (rrf_k + rank) | zsum: Σ w · z-score within the list
    rrf_k: float = 60.0
    scale: float = 1.0  # the stored score (the KD target) is scale × the fused value

    def __post_init__(self) -> None:
        from rankdistill.config import check_choice, check_range
        from rankdistill.errors import ConfigError

        backends = ("hf", "vllm", "replay", "reranker", "ensemble")
        if self.name not in backends:
            raise ConfigError(f"unknown backend '{self.name}' (known: {', '.join(backends)})", "name")
        if self.fallback not in (None, "") + backends:
            raise ConfigError(f"unknown backend '{self.fallback}' (known: {', '.join(backends)})", "fallback")
        check_choice("model_type", self.model_type, ("auto", "causal", "seq2seq"))
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_choice("dtype", self.dtype, ("auto", "float32", "float16", "bfloat16"))
        from rankdistill.precision import check_precision

        check_precision(self.precision, "precision")
        if self.precision != "fp32" and self.name not in ("reranker", "ensemble"):
            raise ConfigError(f"precision is how a rankdistill student (backend reranker, or an ensemble's dense "
                              f"members) computes; the {self.name} backend's numbers are set by dtype", "precision")
        for name in ("batch_size", "tensor_parallel_size", "top_logprobs"):
            check_range(name, getattr(self, name), minimum=1)
        for name in ("max_input_tokens", "num_threads", "max_model_len"):
            check_range(name, getattr(self, name), minimum=1)
        check_range("gpu_memory_utilization", self.gpu_memory_utilization, above=0, maximum=1)
        if self.name == "ensemble":
            check_choice("fusion", self.fusion, FUSIONS)
            check_range("rrf_k", self.rrf_k, minimum=0)
            check_range("scale", self.scale, above=0)
            if not self.members:
                raise ConfigError("an ensemble needs members: [{kind: teacher | first_stage | dense, ...}]",
                                  "members")
            if not any(m.weight > 0 for m in self.members):
                raise ConfigError("at least one member needs a weight > 0", "members")


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

    def identifier_logprobs(self, prompts: Sequence[Prompt | str], identifiers: Sequence[str]) -> list[list[float]]:
        """``[[log p(identifier_i | prompt) for i]]`` for each prompt (see the module docstring)."""
        from rankdistill.errors import ConfigError

        raise ConfigError(f"listwise mode 'first' reads an LLM's next-token logits; the {self.name} backend has "
                          "none (use hf, vllm or replay)", "teacher.backend.name")

    def count_tokens(self, text: str) -> int | None:
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    @property
    def description(self) -> str:
        return self.name

