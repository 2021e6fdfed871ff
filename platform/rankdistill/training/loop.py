"""The per-worker training loop (runs inside Ray Train workers).

Rows of the ``train`` dataset shard are training examples: ``query`` (str), ``texts``
(list[str], the query's passages), ``targets`` (list[float], one per passage; what they mean is
the loss's business: relevance labels, teacher scores, teacher ranks), plus optional per-passage
extras listed in ``extra_fields`` (e.g. ``clusters`` for NA-RankNet) that go to the loss.

Rank 0 logs to MLflow (Ray Train v2 has no MLflow callback), every rank reports to Ray Train;
checkpoints hold the student (``save_pretrained``) and the optimizer state, so a run started
again with the same name resumes where the last checkpoint left it.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rankdistill.training.config import TrainingConfig

STATE_FILE = "training_state.json"
TORCH_STATE = "optimizer.pt"
MODEL_DIR = "model"
DEEPSPEED_DIR = "deepspeed"


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate(model: Any, rows: list[dict[str, Any]], extra_fields: tuple[str, ...], device) -> tuple[dict, Any, dict]:
    """Tokenise a list of example rows into ``(batch, targets [B, k], extras)`` on ``device``.

    ``extra_fields`` name per-passage row fields collated to ``long [B, k]`` (-1 at padding), except
    ``"pair_targets"``: the rows' ``pair_i/pair_j/pair_p`` become ``extras["pair_targets"]``
    ``float [B, k, k]`` and ``extras["pair_mask"]`` ``bool [B, k, k]`` (:func:`pair_target_tensors`).
    ``targets`` may hold NaN (a passage without a teacher score)."""
    import torch

    queries = [str(r["query"]) for r in rows]
    # a passage, or an (a, b) pair for a pairwise student (``examples.pair_rows``)
    passages = [[str(t) if isinstance(t, str) else tuple(str(x) for x in t) for t in r["texts"]] for r in rows]
    batch = model.tokenizer(queries, passages)
    k = batch["pair_mask" if "pair_mask" in batch else "passage_mask"].shape[1]
    targets = torch.zeros((len(rows), k), dtype=torch.float32)
    for i, r in enumerate(rows):
        values = [float(v) for v in r["targets"]]
        targets[i, : len(values)] = torch.tensor(values)
    extras = {}
    for name in extra_fields:
        if name == "pair_targets":  # PairDistill: [B, k, k] P(d_i ≻ d_j) + mask (training.pair_examples)
            extras["pair_targets"], extras["pair_mask"] = pair_target_tensors(rows, k)
            extras["pair_targets"], extras["pair_mask"] = extras["pair_targets"].to(device), extras["pair_mask"].to(device)
            continue
        values = torch.full((len(rows), k), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            v = list(r[name])
            values[i, : len(v)] = torch.tensor(v, dtype=torch.long)
        extras[name] = values.to(device)
    batch = {key: value.to(device) for key, value in batch.items()}
    return batch, targets.to(device), extras


def pair_target_tensors(rows: list[dict[str, Any]], k: int) -> tuple[Any, Any]:
    """Rows' ``pair_i``, ``pair_j``, ``pair_p`` lists -> ``pair_targets float [B, k, k]`` with
    ``P(d_i ≻ d_j)`` at ``[b, i, j]`` (NaN where unlabelled) and ``pair_mask bool [B, k, k]``."""
    import torch

    targets = torch.full((len(rows), k, k), float("nan"), dtype=torch.float32)
    for b, r in enumerate(rows):
        i = torch.as_tensor([int(x) for x in r["pair_i"]], dtype=torch.long)
        j = torch.as_tensor([int(x) for x in r["pair_j"]], dtype=torch.long)
        if len(i):
            targets[b, i, j] = torch.as_tensor([float(x) for x in r["pair_p"]], dtype=torch.float32)
    return targets, ~torch.isnan(targets)


def _batches(shard, batch_size: int, skip: int) -> Iterator[list[dict[str, Any]]]:
    """Endless batches over the shard (epoch after epoch), skipping the first ``skip``."""
    produced = 0
    while True:
        buffer: list[dict[str, Any]] = []
        empty = True
        for row in shard.iter_rows():
            empty = False
            buffer.append(row)
            if len(buffer) == batch_size:
                if produced >= skip:
                    yield buffer
                produced += 1
                buffer = []
        if empty:
            raise RuntimeError("this worker's data shard is empty: fewer examples than workers")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import torch

    config = TrainingConfig(**loop_config["training"])
    make_student: Callable[[], Any] = loop_config["make_student"]
    make_loss: Callable[[], Any] = loop_config["make_loss"]
    extra_fields = tuple(loop_config.get("extra_fields", ()))
    tracking = loop_config.get("tracking")  # {"uri": ..., "run_id": ...} or None
    total_steps = int(loop_config["total_steps"])
    step_offset = int(loop_config.get("step_offset", 0))  # MLflow steps continue across stages

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _seed_everything(config.seed + rank)
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))

    model = make_student()
    loss_fn = make_loss()
    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    state: dict[str, Any] = {}
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = json.loads((Path(ckpt_dir) / STATE_FILE).read_text())
            start_step = int(state["step"])
            model = type(model).from_pretrained(str(Path(ckpt_dir) / MODEL_DIR))

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    if config.strategy == "deepspeed":
        import deepspeed

        from rankdistill.training.deepspeed_config import deepspeed_config

        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(config)
        )
        device = engine.device
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                engine.load_checkpoint(str(Path(ckpt_dir) / DEEPSPEED_DIR), tag=f"rank{rank}-step{start_step}")
        module = engine.module
        forward = engine
    elif config.strategy == "ddp":
        import ray.train.torch

        wrapped = ray.train.torch.prepare_model(model, parallel_strategy="ddp" if world > 1 else None)
        device = ray.train.torch.get_device()
        module = wrapped.module if hasattr(wrapped, "module") else wrapped
        forward = wrapped
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                saved = torch.load(Path(ckpt_dir) / TORCH_STATE, map_location="cpu", weights_only=False)
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
        engine = None
    else:
        from rankdistill.errors import ConfigError

        raise ConfigError(f"unknown strategy '{config.strategy}' (ddp, deepspeed)", "training.strategy")

    client = None
    if rank == 0 and tracking:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking["uri"])

    module.train()
    shard = ray.train.get_dataset_shard("train")
    micro_per_step = config.gradient_accumulation
    batches = _batches(shard, config.batch_size, skip=start_step * micro_per_step)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if (
        config.precision == "bf16" and config.strategy == "ddp" and device.type == "cuda"
    ) else _null_context()

    step = start_step
    window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
    while step < total_steps:
        for _ in range(micro_per_step):
            rows = next(batches)
            batch, targets, extras = collate(module, rows, extra_fields, device)
            with autocast:
                output = forward(**batch)
                loss = module.compute_loss(output, targets, loss_fn, **extras)
            if engine is not None:
                engine.backward(loss)
                engine.step()
            else:
                (loss / micro_per_step).backward()
            window_loss += float(loss.detach())
            window_count += 1
        if engine is None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1

        last = step == total_steps
        if step % config.log_every == 0 or last:
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            metrics = {
                "train/loss": window_loss / max(window_count, 1),
                "train/lr": float(scheduler.get_last_lr()[0]),
                "train/queries_per_s": window_count * config.batch_size * world / elapsed,
            }
            if client is not None:
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                client.log_batch(tracking["run_id"], metrics=[Metric(k.replace("/", "_"), v, now, step + step_offset)
                                                              for k, v in metrics.items()])
            window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
        else:
            metrics = None
        if last or (config.checkpoint_every and step % config.checkpoint_every == 0):
            _report_checkpoint(config, rank, step, module, optimizer, scheduler, engine, metrics or {})
        elif metrics is not None:
            ray.train.report({**metrics, "step": step})


class _null_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _report_checkpoint(config, rank, step, module, optimizer, scheduler, engine, metrics) -> None:
    """Every rank writes its part into one checkpoint; rank 0 writes the student itself."""
    import ray.train
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if engine is not None:
            # every rank saves its ZeRO partition; tags keep the ranks' files apart
            engine.save_checkpoint(str(tmp_path / DEEPSPEED_DIR), tag=f"rank{rank}-step{step}")
            if config.zero_stage == 3:
                import deepspeed

                with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                    if rank == 0:
                        module.save_pretrained(str(tmp_path / MODEL_DIR))
            elif rank == 0:
                module.save_pretrained(str(tmp_path / MODEL_DIR))
        elif rank == 0:
            module.save_pretrained(str(tmp_path / MODEL_DIR))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       tmp_path / TORCH_STATE)
        if rank == 0:
            (tmp_path / STATE_FILE).write_text(json.dumps({"step": step, "training": asdict(config)}))
        ray.train.report({**metrics, "step": step}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def steps_for(num_examples: int, config: TrainingConfig) -> int:
    """Optimizer steps: ``max_steps`` capped by ``epochs`` passes over each worker's shard."""
    per_worker = num_examples // max(config.num_workers, 1)
    per_epoch = per_worker // (config.batch_size * config.gradient_accumulation)
    if per_epoch < 1:
        raise ValueError(
            f"{num_examples} examples are too few for {config.num_workers} worker(s) x batch size "
            f"{config.batch_size} x accumulation {config.gradient_accumulation}"
        )
    return max(1, min(config.max_steps, math.ceil(config.epochs * per_epoch)))
