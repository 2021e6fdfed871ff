"""The per-worker training loop (runs inside Ray Train workers).

Every worker trains on its own fixed slice of the examples (``loop_config["shards"][rank]``, see
:func:`rankdistill.training.fit.rank_shards`). Rows are training examples: ``query`` (str),
``texts`` (list[str], the query's passages), ``targets`` (list[float], one per passage; what they
mean is the loss's business: relevance labels, teacher scores, teacher ranks), plus optional
per-passage extras listed in ``extra_fields`` (e.g. ``clusters`` for NA-RankNet) that go to the
loss, and an optional ``example_id`` (written to the audit files, ``training.audit_examples``).
The student is any ``torch.nn.Module`` with ``tokenizer(queries, passages)``,
``compute_loss(output, targets, loss_fn, **extras)`` and ``save_pretrained(dir)``.

Rank 0 logs to MLflow (Ray Train v2 has no MLflow callback), every rank reports to Ray Train.
A checkpoint is ONE folder that every rank writes its part into (Ray Train 2.x uploads each
rank's local folder to the same ``checkpoint_<time>`` folder, named by rank 0, and registers the
checkpoint only once every rank has reported it):

- ``training_state.json`` (rank 0): step, world size, the training config and run identity;
- ``model/`` (rank 0): the student, ``save_pretrained`` layout (what :func:`fit` returns);
- DDP: ``optimizer.pt`` (rank 0): module, optimizer, LR scheduler and GradScaler states;
- DeepSpeed: ``deepspeed/step<N>/`` + ``deepspeed/latest``: every rank calls
  ``engine.save_checkpoint(dir, tag="step<N>")`` with the same tag; rank 0 writes the module and
  scheduler states (``mp_rank_00_model_states.pt``), every rank its ZeRO partition of the
  optimizer (``zero_pp_rank_<r>_mp_rank_00_optim_states.pt``; ZeRO-3 also partitions the weights,
  ``zero_pp_rank_<r>_mp_rank_00_model_states.pt``). Loading needs the same number of workers
  (``training.num_workers`` must match on resume);
- ``rng/rank<r>.pt`` (every rank): the Python / NumPy / torch RNG states, so dropout after a
  resume draws what it would have drawn without the interruption.

A run started again with the same name resumes at the step after its last checkpoint: the
state above is restored and each rank skips the batches it had already trained on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.precision import autocast, has_bf16_unit, resolve_precision
from rankdistill.training.config import TrainingConfig

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
TORCH_STATE = "optimizer.pt"
MODEL_DIR = "model"
DEEPSPEED_DIR = "deepspeed"
RNG_DIR = "rng"
AUDIT_DIR = "audit"


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


def _shard_rows(shard) -> Iterator[dict[str, Any]]:
    """The rows of a materialised shard in order, one block fetched at a time.

    Not ``shard.iter_rows()``: that keeps a Ray Data streaming executor (its scheduling thread and
    progress bar) alive in the worker for the whole epoch, and on a CPU worker that thread takes
    the GIL from the training step (measured: Ray Train at 0.84x of a bare loop's throughput, 0.87x
    with it gone).
    """
    import ray
    from ray.data.block import BlockAccessor

    if not hasattr(shard, "iter_internal_ref_bundles"):  # anything else with rows (tests)
        yield from shard.iter_rows()
        return
    # the rows iter_rows() would give, block by block as stored (no conversion tasks: the worker
    # may hold every CPU of its node), without an executor running beside the training step
    for bundle in shard.iter_internal_ref_bundles():
        for ref in bundle.block_refs:
            yield from BlockAccessor.for_block(ray.get(ref)).iter_rows(public_row_format=True)


def _batches(shard, batch_size: int, skip: int, num_rows: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Endless batches over the shard (epoch after epoch, each in the shard's fixed order; the
    last incomplete batch of an epoch is dropped), skipping the first ``skip`` batches. With
    ``num_rows`` known, whole skipped epochs are not read at all."""
    produced = 0
    if num_rows is not None:
        if num_rows < batch_size:
            raise RuntimeError(f"this worker's data shard has {num_rows} rows, fewer than a batch ({batch_size})")
        per_epoch = num_rows // batch_size
        produced = (skip // per_epoch) * per_epoch
    while True:
        buffer: list[dict[str, Any]] = []
        empty = True
        for row in _shard_rows(shard):
            empty = False
            buffer.append(row)
            if len(buffer) == batch_size:
                if produced >= skip:
                    yield buffer
                produced += 1
                buffer = []
        if empty:
            raise RuntimeError("this worker's data shard is empty: fewer examples than workers")


@dataclass
class Worker:
    """Everything one rank trains with (built by :func:`setup`)."""

    config: TrainingConfig
    rank: int
    world: int
    module: Any  # the student itself (unwrapped)
    forward: Any  # what is called for the forward pass: the DDP wrapper, the DeepSpeed engine, or module
    loss_fn: Any
    optimizer: Any
    scheduler: Any
    device: Any
    engine: Any = None  # the DeepSpeed engine
    scaler: Any = None  # torch.amp.GradScaler (DDP fp16)
    autocast: Callable[[], Any] = contextlib.nullcontext
    params: list = field(default_factory=list)
    extra_fields: tuple[str, ...] = ()
    total_steps: int = 0
    step_offset: int = 0  # MLflow steps continue across stages
    identity: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, str] | None = None
    client: Any = None  # MlflowClient on rank 0
    start_step: int = 0  # the step the run resumed from (0: a fresh start)
    # the loss's own terms (``loss_fn.last_components``, e.g. l_cl / l_kd / l_pair) summed over
    # the micro-batches since the last log, logged as ``train/<term>`` window means
    component_sums: dict[str, float] = field(default_factory=dict)
    # training.precision as configured (``auto`` stays ``auto`` in the checkpoint's state, so a run
    # resumes on a node that resolves it otherwise); ``config.precision`` is what this worker runs
    configured_precision: str | None = None
    # DeepSpeed bf16 / fp16: the frozen parameters' fp32 values from before DeepSpeed cast them
    # (the optimizer holds no master copy of a frozen parameter); saved in place of the casts
    frozen_fp32: dict[str, Any] = field(default_factory=dict)


def _optimizer_and_schedule(model, config: TrainingConfig, total_steps: int):
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    return params, optimizer, scheduler


def _precision(config: TrainingConfig, device) -> tuple[Callable[[], Any], Any]:
    """``(autocast context factory, GradScaler or None)`` of a DDP run (DeepSpeed does its own)."""
    import torch

    if config.strategy != "ddp" or config.precision == "fp32":
        return contextlib.nullcontext, None
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    return (lambda: autocast(config.precision, device.type)), scaler


def setup(loop_config: dict[str, Any]) -> Worker:
    """Seed, build the student, loss, optimizer and schedule, and wrap them for the strategy."""
    import ray.train
    import torch

    config = TrainingConfig(**loop_config["training"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    configured_precision = config.precision
    if config.precision == "auto":  # decided here, on the worker's own device (nodes differ)
        device_type = "cuda" if config.use_gpu else "cpu"
        resolved = resolve_precision(config.precision, has_bf16_unit(device_type))
        print(f"rank {rank}: training.precision auto -> {resolved} ({device_type} "
              f"{'has' if resolved == 'bf16' else 'has no'} bf16 unit)", flush=True)
        config = replace(config, precision=resolved)
    _seed_everything(config.seed + rank)
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    total_steps = int(loop_config["total_steps"])

    model = loop_config["make_student"]()
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    frozen_fp32: dict[str, Any] = {}
    params, optimizer, scheduler = _optimizer_and_schedule(model, config, total_steps)
    engine, scaler, autocast = None, None, contextlib.nullcontext
    if config.strategy == "deepspeed":
        import deepspeed

        from rankdistill.training.deepspeed_config import deepspeed_config

        if config.precision in ("bf16", "fp16"):
            frozen_fp32 = {n: p.detach().to("cpu", torch.float32).clone()
                           for n, p in model.named_parameters() if not p.requires_grad}
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(config)
        )
        device, module, forward = engine.device, engine.module, engine
    else:
        import ray.train.torch

        forward = ray.train.torch.prepare_model(model, parallel_strategy="ddp" if world > 1 else None)
        device = ray.train.torch.get_device()
        module = forward.module if hasattr(forward, "module") else forward
        autocast, scaler = _precision(config, device)
    client = None
    tracking = loop_config.get("tracking")  # {"uri": ..., "run_id": ...} or None
    if rank == 0 and tracking:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking["uri"])
        client.set_tag(tracking["run_id"], "train_precision", config.precision)  # as run (auto resolved)
    return Worker(config=config, rank=rank, world=world, module=module, forward=forward,
                  loss_fn=loop_config["make_loss"](), optimizer=optimizer, scheduler=scheduler, device=device,
                  engine=engine, scaler=scaler, autocast=autocast, params=params,
                  extra_fields=tuple(loop_config.get("extra_fields", ())), total_steps=total_steps,
                  step_offset=int(loop_config.get("step_offset", 0)), identity=loop_config.get("identity") or {},
                  tracking=tracking, client=client, configured_precision=configured_precision,
                  frozen_fp32=frozen_fp32)


def resume(worker: Worker, checkpoint) -> int:
    """Restore the last checkpoint (weights, optimizer, schedule, scaler, RNG); its step."""
    import torch

    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as ckpt_dir:
        folder = Path(ckpt_dir)
        state = json.loads((folder / STATE_FILE).read_text())
        step = int(state["step"])
        if int(state.get("world_size", worker.world)) != worker.world:
            raise RuntimeError(f"the checkpoint in {folder} was written by {state['world_size']} workers, "
                               f"this run has {worker.world}")
        if worker.engine is not None:
            path, _ = worker.engine.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=f"step{step}")
            if path is None:
                raise RuntimeError(f"DeepSpeed found no checkpoint 'step{step}' in {folder / DEEPSPEED_DIR}")
        else:
            saved = torch.load(folder / TORCH_STATE, map_location="cpu", weights_only=False)
            worker.module.load_state_dict(saved["model"])
            worker.optimizer.load_state_dict(saved["optimizer"])
            worker.scheduler.load_state_dict(saved["scheduler"])
            if worker.scaler is not None and saved.get("scaler"):
                worker.scaler.load_state_dict(saved["scaler"])
        rng = folder / RNG_DIR / f"rank{worker.rank}.pt"
        if rng.exists():
            _set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
    worker.start_step = step
    return step


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(worker: Worker, batches: Iterator[list[dict[str, Any]]]) -> tuple[float, list[list[Any]]]:
    """One optimizer step over ``gradient_accumulation`` micro-batches: ``(summed micro-batch
    losses, example ids per micro-batch)``.

    Each micro-batch's loss is divided by the accumulation (DeepSpeed: by the engine), so the step's
    gradient is the mean over micro-batches: one forward over all of the step's queries when the
    loss is a mean over queries with equal-sized micro-batches. In-batch negatives (a dense
    student's L_CL) come from the micro-batch's own forward, so they span one micro-batch on one
    rank, as in the official PairDistill code (colbert-ai's training loop: ``ib_loss`` inside each
    of ``accumsteps`` forwards, no gather across ranks); ``tests/test_training_accumulation.py``."""
    import torch

    config, engine, scaler = worker.config, worker.engine, worker.scaler
    micro = config.gradient_accumulation
    loss_sum, ids = 0.0, []
    for _ in range(micro):
        rows = next(batches)
        ids.append([r.get("example_id") for r in rows])
        batch, targets, extras = collate(worker.module, rows, worker.extra_fields, worker.device)
        with worker.autocast():
            output = worker.forward(**batch)
            loss = worker.module.compute_loss(output, targets, worker.loss_fn, **extras)
        if engine is not None:
            engine.backward(loss)  # DeepSpeed scales by 1/accumulation and steps on the boundary
            engine.step()
        elif scaler is not None:
            scaler.scale(loss / micro).backward()
        else:
            (loss / micro).backward()
        loss_sum += float(loss.detach())
        for name, value in (getattr(worker.loss_fn, "last_components", None) or {}).items():
            worker.component_sums[name] = worker.component_sums.get(name, 0.0) + float(value)
    if engine is None:
        if scaler is not None:
            scaler.unscale_(worker.optimizer)
        torch.nn.utils.clip_grad_norm_(worker.params, config.max_grad_norm)
        if scaler is not None:
            scaler.step(worker.optimizer)  # skipped when the gradients overflowed
            scaler.update()
        else:
            worker.optimizer.step()
        worker.scheduler.step()
        worker.optimizer.zero_grad(set_to_none=True)
    return loss_sum, ids


def log_metrics(worker: Worker, step: int, metrics: dict[str, float]) -> None:
    """Rank 0 logs ``train_loss`` etc. to the job's MLflow run at ``step + step_offset``."""
    if worker.client is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    worker.client.log_batch(worker.tracking["run_id"], metrics=[
        Metric(k.replace("/", "_"), v, now, step + worker.step_offset) for k, v in metrics.items()])


def audit(worker: Worker, step: int, ids: list[list[Any]]) -> None:
    """Write this rank's example ids of ``step`` into the run's storage (``audit_examples``)."""
    import ray.train

    storage = ray.train.get_context().get_storage()
    folder = f"{storage.experiment_fs_path}/{AUDIT_DIR}/rank{worker.rank}"
    storage.storage_filesystem.create_dir(folder)
    record = {"step": step, "rank": worker.rank, "resumed_from": worker.start_step, "example_ids": ids}
    with storage.storage_filesystem.open_output_stream(f"{folder}/step{step:06d}.json") as out:
        out.write(json.dumps(record).encode())


def fp32_master_state(worker: Worker) -> dict[str, Any]:
    """The DeepSpeed student's weights in fp32, whole, on the CPU: a collective (every rank calls
    it, in the same order; rank 0 uses the result).

    Under DeepSpeed bf16 / fp16 the engine's module holds half-precision copies; the fp32 master
    weights live in the ZeRO optimizer's partitions. Each trained parameter is taken from there
    (``deepspeed.utils.safe_get_full_fp32_param``: an all-reduce for ZeRO-1/2, an all-gather for
    ZeRO-3); a frozen one from the fp32 copy :func:`setup` kept before DeepSpeed cast it
    (``Worker.frozen_fp32``); buffers as they are (gathered under ZeRO-3), cast to fp32 when
    floating."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    module, by_param = worker.module, {}
    zero3 = worker.config.zero_stage == 3
    for name, param in module.named_parameters():
        full = safe_get_full_fp32_param(param) if param.requires_grad else None
        if full is None and name in worker.frozen_fp32:
            full = worker.frozen_fp32[name]
        elif full is None:
            with _gathered([param]) if zero3 else contextlib.nullcontext():
                full = param.detach().clone()
        by_param[id(param)] = full.detach().to("cpu", torch.float32).clone()
    state = {}
    # the state_dict's keys (persistent buffers only; a tied weight's names share one tensor)
    for key, value in module.state_dict(keep_vars=True).items():
        if id(value) in by_param:
            state[key] = by_param[id(value)]
        else:
            with _gathered([value]) if zero3 and hasattr(value, "ds_id") else contextlib.nullcontext():
                tensor = value.detach().cpu().clone()
            state[key] = tensor.float() if tensor.is_floating_point() else tensor
    return state


def _gathered(params: list) -> Any:
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def save_student(module: Any, folder: Path, state: dict[str, Any] | None = None) -> None:
    """``module.save_pretrained(folder)``, with ``state`` (fp32 master weights) as the weights when
    given: the files and ``config.json``'s ``dtype`` say float32 whatever the engine computed in."""
    if state is None:
        module.save_pretrained(str(folder))
        return
    module.save_pretrained(str(folder), state_dict=state)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["dtype"] = "float32"  # save_pretrained wrote the engine's compute dtype; the weights are fp32
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_checkpoint(worker: Worker, folder: Path, step: int) -> None:
    """Write this rank's part of the step-``step`` checkpoint into ``folder`` (see the module doc).

    ``model/`` holds fp32 weights in every precision: under DeepSpeed bf16 / fp16 the fp32 master
    weights (:func:`fp32_master_state`, consolidated for ZeRO-3), not the engine's half-precision
    copies, so a loaded student and the next iteration's start are the trained fp32 weights."""
    import torch

    rank, module = worker.rank, worker.module
    if worker.engine is not None:
        # the same tag on every rank: ranks write disjoint files of one DeepSpeed checkpoint
        worker.engine.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=f"step{step}")
        if worker.config.precision in ("bf16", "fp16"):
            state = fp32_master_state(worker)  # every rank: a collective
            if rank == 0:
                save_student(module, folder / MODEL_DIR, state)
        elif worker.config.zero_stage == 3:
            with _gathered(list(module.parameters())):
                if rank == 0:
                    module.save_pretrained(str(folder / MODEL_DIR))
        elif rank == 0:
            module.save_pretrained(str(folder / MODEL_DIR))
    elif rank == 0:
        module.save_pretrained(str(folder / MODEL_DIR))
        torch.save({"model": module.state_dict(), "optimizer": worker.optimizer.state_dict(),
                    "scheduler": worker.scheduler.state_dict(),
                    "scaler": worker.scaler.state_dict() if worker.scaler is not None else None},
                   folder / TORCH_STATE)
    (folder / RNG_DIR).mkdir(parents=True, exist_ok=True)
    torch.save(_rng_state(), folder / RNG_DIR / f"rank{rank}.pt")
    if rank == 0:
        (folder / STATE_FILE).write_text(json.dumps({
            "step": step, "world_size": worker.world,
            "training": {**asdict(worker.config), "precision": worker.configured_precision or worker.config.precision},
            "identity": worker.identity}, default=str))


def report(worker: Worker, step: int, metrics: dict[str, float] | None) -> None:
    """Report to Ray Train (every rank, at the same steps): metrics on log steps, a checkpoint on
    checkpoint steps and at the end."""
    import ray.train

    config = worker.config
    if step == worker.total_steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(worker, Path(tmp), step)
            ray.train.report({**(metrics or {}), "step": step}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    elif metrics is not None:
        ray.train.report({**metrics, "step": step})


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    worker = setup(loop_config)
    config = worker.config
    step = resume(worker, ray.train.get_checkpoint())
    shard = loop_config["shards"][worker.rank]
    batches = _batches(shard, config.batch_size, skip=step * config.gradient_accumulation, num_rows=shard.count())
    worker.module.train()
    window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
    while step < worker.total_steps:
        loss_sum, ids = train_step(worker, batches)
        step += 1
        window_loss, window_count = window_loss + loss_sum, window_count + config.gradient_accumulation
        if config.audit_examples:
            audit(worker, step, ids)
        metrics = None
        if step % config.log_every == 0 or step == worker.total_steps:
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            metrics = {"train/loss": window_loss / max(window_count, 1),
                       "train/lr": float(worker.scheduler.get_last_lr()[0]),
                       "train/queries_per_s": window_count * config.batch_size * worker.world / elapsed}
            metrics.update({f"train/{name}": total / max(window_count, 1)
                            for name, total in worker.component_sums.items()})
            worker.component_sums.clear()
            log_metrics(worker, step, metrics)
            window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
        report(worker, step, metrics)


def steps_for(num_examples: int, config: TrainingConfig) -> int:
    """Optimizer steps: ``max_steps`` capped by ``epochs`` passes over each worker's shard
    (``epochs: null``: no cap). A cap below ``max_steps`` is logged as a warning naming both."""
    per_worker = num_examples // max(config.num_workers, 1)
    per_epoch = per_worker // (config.batch_size * config.gradient_accumulation)
    if per_epoch < 1:
        raise ConfigError(
            f"{num_examples} examples are too few for {config.num_workers} worker(s) x batch size "
            f"{config.batch_size} x accumulation {config.gradient_accumulation}", "training.batch_size"
        )
    if config.epochs is None:
        return config.max_steps
    capped = math.ceil(config.epochs * per_epoch)
    if capped < config.max_steps:
        logger.warning(
            "training.epochs %s caps training.max_steps %s at %s optimizer steps (%s examples, %s per step); "
            "set training.epochs: null to run max_steps, or max_steps: %s to say so",
            config.epochs, config.max_steps, capped, num_examples,
            config.num_workers * config.batch_size * config.gradient_accumulation, capped)
    return max(1, min(config.max_steps, capped))
