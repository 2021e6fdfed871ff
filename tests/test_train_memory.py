"""The memory model's parts against hand-computed values (rankdistill.training.memory)."""

from __future__ import annotations

import torch
from rankdistill.training.memory import CARDS, CUDA_OVERHEAD, GIB, model_state_bytes, saved_bytes, verdict


def test_saved_bytes_counts_what_autograd_keeps_once_and_no_parameters():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8)
    # linear saves its input x (4 x 8 fp32 = 128 B; its weight is a parameter, not counted), relu its
    # output (4 x 16 fp32 = 256 B); x used twice is counted once
    assert saved_bytes(lambda: torch.relu(layer(x)) + layer(x), list(layer.parameters())) == 128 + 256


def test_model_states_follow_the_zero_papers_accounting():
    p, n = 1000, 4
    assert model_state_bytes(p, 0, n) == 2 * p + 2 * p + 16 * p  # DDP-like: everything on every GPU
    assert model_state_bytes(p, 1, n) == 2 * p + 2 * p + 16 * p // n
    assert model_state_bytes(p, 2, n) == 2 * p + 2 * p + 2 * p // n + 16 * p // n
    assert model_state_bytes(p, 3, n) == (2 * p + 2 * p + 16 * p) // n


def test_verdict_keeps_a_20_percent_margin_after_the_cuda_context():
    a10g = CARDS["A10G 24 GB"]
    assert verdict(int(0.8 * a10g - CUDA_OVERHEAD) - 1, "A10G 24 GB").startswith("fits (2")
    assert verdict(int(0.9 * a10g - CUDA_OVERHEAD), "A10G 24 GB").startswith("fits, under 20% margin")
    assert verdict(a10g, "A10G 24 GB") == "does not fit"
    assert verdict(70 * GIB, "H100 80 GB").startswith("fits, under")
