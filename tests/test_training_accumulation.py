"""Gradient accumulation and activation checkpointing (issue 29, part 1), in this process.

- An optimizer step of 2 micro-batches x 4 queries gives the loss and the gradients of one
  forward/backward over the 8 queries, for the DDP path (:func:`train_step` without an engine) and
  for DeepSpeed ZeRO-2, with PairDistillLoss (L_CL with in-batch negatives, L_KD, L_pair) on a
  ColBERT student. In-batch negatives span ONE micro-batch (as the official PairDistill code, a
  colbert-ai fork: its ``ib_loss`` is computed inside each of the ``accumsteps`` micro-batch
  forwards, on the local rank only), so the one-step reference masks the other micro-batch's
  passages out of each query's in-batch negatives; the test also shows that negatives over the
  whole step would give another loss.
- A checkpointed step (``training.gradient_checkpointing``) gives the gradients of a plain one, for
  every student architecture, while saving fewer activation bytes.

The gradients are read off an SGD step with learning rate 1 and no clipping: new = old - grad.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

import pytest
import torch
from model_fixtures import tiny_backbone, tiny_reranker, tokenizer
from rankdistill.training import TrainingConfig

MICRO, STEP = 4, 8
WORDS = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "castle", "rocket", "garden", "violin"]


def _rows(n: int = STEP, k: int = 4, seed: int = 0) -> list[dict]:
    """Queries with k passages of varied lengths (padding differs between a micro-batch and the
    step), one positive, random teacher scores and 2 teacher pairs per query (equal pair counts,
    so the official mean over pairs of a step is the mean of its micro-batches' means)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 9))) for _ in range(k)]
        positive = rng.randrange(k)
        pairs = rng.sample(list(itertools.combinations(range(k), 2)), 2)
        rows.append({"example_id": i, "qid": f"q{i}", "docids": [f"d{i}-{d}" for d in range(k)],
                     "query": " ".join(rng.sample(WORDS, 2)), "texts": texts,
                     "targets": [rng.uniform(-2, 2) for _ in range(k)],
                     "labels": [int(d == positive) for d in range(k)],
                     "pair_i": [a for a, _ in pairs], "pair_j": [b for _, b in pairs],
                     "pair_p": [rng.uniform(0.05, 0.95) for _ in pairs]})
    return rows


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def iter_rows(self):
        return iter(self.rows)


def _colbert(seed: int = 0):
    from rankdistill.models import ColBERT

    backbone = tiny_backbone("bert", head=False, seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed + 1)
    return ColBERT.from_backbone_model(backbone, tokenizer(), dim=16, query_length=8, passage_length=16).train()


def _loss(in_batch: bool = True):
    from rankdistill.losses import PairDistillLoss

    return PairDistillLoss(lambda_kd=1.0, lambda_pair=3.0, in_batch_negatives=in_batch)


def _config(**kw) -> TrainingConfig:
    return TrainingConfig(batch_size=MICRO, gradient_accumulation=STEP // MICRO, learning_rate=1.0, warmup_ratio=0.0,
                          weight_decay=0.0, max_grad_norm=1e12, **kw)


def _reference(rows: list[dict], micro: int | None, in_batch: bool = True):
    """Loss and gradients of ONE forward/backward over all ``rows``; with ``micro``, each query's
    in-batch negatives are only the passages of its own micro-batch of ``micro`` queries."""
    from rankdistill.training.loop import collate

    model = _colbert()
    batch, targets, extras = collate(model, rows, ("labels", "pair_targets"), torch.device("cpu"))
    out = model(**batch)
    if micro is not None:
        group = torch.arange(len(rows)) // micro
        k = out.scores.shape[1]
        same = (group[:, None] == group[None, :]).repeat_interleave(k, dim=1)  # [B, B*k]
        out.in_batch_mask = out.in_batch_mask & same
        out.in_batch_scores = out.in_batch_scores.masked_fill(~same, float("-inf"))
    loss = model.compute_loss(out, targets, _loss(in_batch), **extras)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _sgd_worker(config: TrainingConfig, model, engine=None):
    from rankdistill.training.loop import Worker

    if engine is not None:
        return Worker(config=config, rank=0, world=1, module=engine.module, forward=engine, loss_fn=_loss(),
                      optimizer=engine.optimizer, scheduler=None, device=engine.device, engine=engine,
                      extra_fields=("labels", "pair_targets"), total_steps=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return Worker(config=config, rank=0, world=1, module=model, forward=model, loss_fn=_loss(), optimizer=optimizer,
                  scheduler=scheduler, device=torch.device("cpu"), params=params,
                  extra_fields=("labels", "pair_targets"), total_steps=1)


def _check_step(loss_sum: float, before: dict, after: dict, reference: tuple[float, dict]) -> None:
    ref_loss, ref_grads = reference
    assert loss_sum / (STEP // MICRO) == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)  # the mean micro-batch loss
    assert set(ref_grads) <= set(before)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(before[name] - after[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_accumulated_2x4_equals_one_step_of_8_on_the_ddp_path():
    from rankdistill.training.loop import _batches, train_step

    rows = _rows()
    model = _colbert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    worker = _sgd_worker(_config(), model)
    loss_sum, ids = train_step(worker, _batches(_Rows(rows), MICRO, skip=0))
    assert ids == [[0, 1, 2, 3], [4, 5, 6, 7]]
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    _check_step(loss_sum, before, after, _reference(rows, micro=MICRO))
    # negatives over the whole step would be another objective: the step above did not use them
    whole, _ = _reference(rows, micro=None)
    assert abs(whole - loss_sum / 2) > 1e-3


def test_without_in_batch_negatives_2x4_equals_the_plain_step_of_8():
    from rankdistill.training.loop import _batches, train_step

    rows = _rows(seed=1)
    model = _colbert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    worker = _sgd_worker(_config(), model)
    worker.loss_fn = _loss(in_batch=False)
    loss_sum, _ = train_step(worker, _batches(_Rows(rows), MICRO, skip=0))
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    _check_step(loss_sum, before, after, _reference(rows, micro=None, in_batch=False))


@pytest.fixture(scope="module")
def process_group():
    """A one-rank gloo group in this process, for DeepSpeed."""
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    yield


def test_accumulated_2x4_equals_one_step_of_8_under_deepspeed_zero2(process_group):
    import deepspeed
    from rankdistill.training.deepspeed_config import deepspeed_config
    from rankdistill.training.loop import _batches, train_step

    rows = _rows(seed=2)
    config = _config(strategy="deepspeed", zero_stage=2)
    model = _colbert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(config))
    worker = _sgd_worker(config, model, engine)
    loss_sum, _ = train_step(worker, _batches(_Rows(rows), MICRO, skip=0))
    assert engine.global_steps == 1  # one optimizer step for the two micro-batches
    after = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    _check_step(loss_sum, before, after, _reference(rows, micro=MICRO))


ARCHITECTURES = ["mono", "celi", "duo", "set-encoder", "listconranker", "bi-encoder", "colbert"]
OPTIONS = {"celi": {"token_dim": 8}, "listconranker": {"stop_size": 3, "list_layers": 1}, "colbert": {"dim": 16}}


def _saved_bytes(model, batch) -> tuple[torch.Tensor, dict, int]:
    """Forward + backward with dropout on (seeded): (scores, gradients, bytes saved for backward)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    out.scores.masked_fill(~out.mask, 0.0).sum().backward()
    return out.scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, saved[0]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_checkpointed_step_gives_the_plain_steps_gradients_with_fewer_saved_bytes(name):
    from rankdistill.training.examples import pair_rows
    from rankdistill.training.loop import collate

    model = tiny_reranker(name, **OPTIONS.get(name, {})).train()  # dropout 0.1 on: RNG must replay
    rows = _rows(2, k=3, seed=3)
    rows = pair_rows(rows) if name == "duo" else rows
    batch, _, _ = collate(model, rows, (), torch.device("cpu"))
    scores, plain, plain_bytes = _saved_bytes(model, batch)
    assert model.enable_gradient_checkpointing() and model.checkpoints_activations
    scores_ckpt, ckpt, ckpt_bytes = _saved_bytes(model, batch)
    torch.testing.assert_close(scores_ckpt, scores)
    assert set(ckpt) == set(plain)
    for key, grad in plain.items():
        torch.testing.assert_close(ckpt[key], grad, rtol=1e-5, atol=1e-7, msg=key)
    assert ckpt_bytes < plain_bytes, (ckpt_bytes, plain_bytes)


def test_training_config_takes_gradient_checkpointing_and_a_resume_may_change_it():
    assert TrainingConfig(gradient_checkpointing=True).gradient_checkpointing
    assert "gradient_checkpointing" not in TrainingConfig().resume_identity()
