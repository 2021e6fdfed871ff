"""Numeric precision of a student, in training and at inference: one vocabulary, one rule.

``precision`` is ``fp32`` | ``bf16`` | ``fp16`` | ``auto``. ``auto`` is decided where the model
runs, not where the job was submitted (nodes differ): ``bf16`` on a device that computes bf16
natively (a CUDA GPU from Ampere on; an x86 CPU with AVX512-BF16 or AMX tiles), ``fp32``
elsewhere, where bf16 autocast is emulated and slower than fp32. Half precision is
``torch.autocast``: weights stay fp32, matrix products run in half precision, and every score a
model returns is cast back to fp32.

Used by ``training.precision`` (:mod:`rankdistill.training.loop`), by a ``reranker`` / ``ensemble``
teacher's ``precision`` and by corpus encoding (``candidates.encode.precision``); see
:meth:`rankdistill.models.base.Reranker.use_precision`. Imports nothing heavy (configs check the
vocabulary with it); torch is imported where a function needs it.

Example::

    model = load_reranker(path)
    model.use_precision("auto")   # -> "bf16" on this machine if its CPU has a bf16 unit
    model.score(query, passages)  # fp32 scores, computed under bf16 autocast
"""

from __future__ import annotations

import contextlib
from typing import Any

from rankdistill.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
BF16_CPU_FEATURES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu probes


def check_precision(precision: str, key: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' ({', '.join(PRECISIONS)})", key)


def has_bf16_unit(device_type: str) -> bool:
    """Whether this process's ``device_type`` (``cuda`` | ``cpu``) computes bf16 natively: a CUDA
    GPU that supports bf16 without emulation (Ampere and later), or an x86 CPU with AVX512-BF16
    or AMX tiles (torch's own probes). Anything else (older GPUs and CPUs, ARM) answers False."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device_type == "cpu":
        return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in BF16_CPU_FEATURES)
    return False


def resolve_precision(precision: str, bf16_unit: bool) -> str:
    """``precision`` as a process runs it: ``auto`` is ``bf16`` where the device has a bf16 unit
    and ``fp32`` where it has not; ``fp32`` / ``bf16`` / ``fp16`` are kept as configured."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_unit else "fp32"


def autocast(precision: str, device_type: str) -> Any:
    """The context a forward pass runs in under a resolved ``precision``: ``torch.autocast`` to
    bf16 / fp16 on ``device_type``, or nothing for ``fp32``."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "auto":
        raise ValueError("resolve 'auto' first (resolve_precision)")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type if device_type in ("cpu", "cuda") else "cpu", dtype=dtype)
