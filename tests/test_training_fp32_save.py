"""Precision you can read off the result (issue 29, part 2).

- A DeepSpeed bf16 step saves the fp32 master weights (ZeRO-2 and ZeRO-3), not the engine's bf16
  copies: the files are float32, ``config.json`` says so, a loaded student holds exactly the
  optimizer's fp32 weights (values no bf16 number has), and a frozen parameter keeps its fp32 value.
- A student whose weights are bf16 says so (``weights_precision``, ``use_precision``).
- Corpus encoding's ``precision: auto`` is resolved once, by the rule of
  :mod:`rankdistill.precision`; queries, passages and the index cache key use the resolved value.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from model_fixtures import cpu_has_bf16_unit, tiny_reranker
from rankdistill.training import TrainingConfig

WORDS = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "castle"]


@pytest.fixture(scope="module")
def process_group():
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    yield


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def iter_rows(self):
        return iter(self.rows)


def _rows(n: int = 4) -> list[dict]:
    return [{"query": f"{WORDS[i]} {WORDS[i + 1]}", "texts": [f"{WORDS[i]} relevant {WORDS[i + 1]}", WORDS[i + 2]],
             "targets": [1.0, 0.0]} for i in range(n)]


@pytest.mark.parametrize("stage", [2, 3])
def test_a_bf16_deepspeed_step_saves_the_fp32_master_weights(stage, tmp_path: Path, process_group):
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param
    from rankdistill.losses import InfoNCE
    from rankdistill.models import load_reranker
    from rankdistill.training.deepspeed_config import deepspeed_config
    from rankdistill.training.loop import (
        Worker,
        _batches,
        _optimizer_and_schedule,
        save_checkpoint,
        train_step,
    )
    from safetensors import safe_open

    config = TrainingConfig(strategy="deepspeed", zero_stage=stage, precision="bf16", batch_size=4,
                            learning_rate=1e-3, warmup_ratio=0.0, max_steps=1)
    model = tiny_reranker("mono").train()
    frozen = "model.bert.embeddings.token_type_embeddings.weight"
    dict(model.named_parameters())[frozen].requires_grad_(False)
    frozen_value = dict(model.named_parameters())[frozen].detach().clone()
    frozen_fp32 = {frozen: frozen_value.clone()}  # what setup() keeps
    params, optimizer, scheduler = _optimizer_and_schedule(model, config, 1)
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                           config=deepspeed_config(config))
    worker = Worker(config=config, rank=0, world=1, module=engine.module, forward=engine, loss_fn=InfoNCE(),
                    optimizer=optimizer, scheduler=scheduler, device=engine.device, engine=engine, params=params,
                    total_steps=1, frozen_fp32=frozen_fp32)
    train_step(worker, _batches(_Rows(_rows()), 4, skip=0))
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}  # what the engine computes in
    master = {n: safe_get_full_fp32_param(p).detach().cpu() for n, p in engine.module.named_parameters()
              if p.requires_grad}

    save_checkpoint(worker, tmp_path, step=1)
    folder = tmp_path / "model"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(key).get_dtype() for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert "BF16" not in dtypes and "F32" in dtypes
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float32"

    loaded = load_reranker(folder)
    assert loaded.weights_precision == "fp32" and loaded.use_precision("fp32") == "fp32"
    weights = dict(loaded.named_parameters())
    for name, value in master.items():
        assert torch.equal(weights[name], value), name
    torch.testing.assert_close(weights[frozen], frozen_value, rtol=0, atol=0)
    # trained values that bf16 cannot hold: these are not bf16 copies cast back
    assert any((w != w.bfloat16().float()).any() for w in master.values())


def test_a_student_with_bf16_weights_reports_bf16(tmp_path: Path, caplog):
    from rankdistill.models import load_reranker

    model = tiny_reranker("mono").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = load_reranker(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.weights_precision == "bf16"
    assert loaded.use_precision("fp32") == "bf16"  # it computes in bf16 whatever is asked
    assert "holds bf16 weights" in caplog.text
    assert tiny_reranker("mono").weights_precision == "fp32"


def test_encode_precision_auto_resolves_by_the_cpus_bf16_unit_and_fixed_ones_stay():
    from rankdistill.retrieval.encode import EncodeConfig, resolve_encode_precision

    assert resolve_encode_precision(EncodeConfig(precision="auto")) == ("bf16" if cpu_has_bf16_unit() else "fp32")
    for fixed in ("fp32", "bf16", "fp16"):
        assert resolve_encode_precision(EncodeConfig(precision=fixed)) == fixed


def _workflow(tmp_path: Path, precision: str):
    from rankdistill.retrieval.dense_index import DenseIndexConfig
    from rankdistill.retrieval.encode import EncodeConfig
    from rankdistill.workflows.pairdistill import PairDistill

    flow = object.__new__(PairDistill)
    flow.config = SimpleNamespace(
        candidates=SimpleNamespace(index_cache=str(tmp_path / "cache"), encode=EncodeConfig(precision=precision),
                                   index=DenseIndexConfig(), colbert_index=None),
        student=SimpleNamespace(architecture="bi-encoder"))
    flow.spec, flow.corpus_digest = SimpleNamespace(name="toy"), "c0ffee"
    return flow


def test_the_index_cache_key_holds_the_resolved_precision_not_auto(tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights").write_bytes(b"w")
    auto = _workflow(tmp_path, "auto")
    resolved = "bf16" if cpu_has_bf16_unit() else "fp32"
    assert auto.encode_precision() == resolved
    assert auto._cached_index(model_dir) == _workflow(tmp_path, resolved)._cached_index(model_dir)
    other = "fp32" if resolved == "bf16" else "bf16"
    assert auto._cached_index(model_dir) != _workflow(tmp_path, other)._cached_index(model_dir)


def test_a_student_saved_in_bf16_continues_training_from_fp32_weights(tmp_path: Path):
    from rankdistill.training.factories import StudentConfig, StudentFactory

    model = tiny_reranker("mono").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    student = StudentFactory(StudentConfig(architecture="mono", init_from=str(tmp_path)))()
    assert student.weights_precision == "fp32"
    saved = dict(model.named_parameters())
    for name, param in student.named_parameters():  # the bf16 values, held in fp32
        assert torch.equal(param, saved[name].float()), name
