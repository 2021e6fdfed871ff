"""Training configuration shared by every student (cross-encoders now, dense retrievers later)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.precision import check_precision
from rankdistill.ray_runtime import THREADED_TORCH_ENV

STRATEGIES = ("ddp", "deepspeed")

# fields a resumed run may change: how long it runs, how often it logs / checkpoints, where it
# stores, on which resources; every other field changes what the checkpoint's weights mean
RESUMABLE_CHANGES = frozenset({"max_steps", "epochs", "log_every", "checkpoint_every", "run_name", "storage_path",
                               "audit_examples", "use_gpu", "cpus_per_worker", "worker_env",
                               "gradient_checkpointing"})


@dataclass
class TrainingConfig:
    """How Ray Train runs the student.

    ``strategy``: ``ddp`` (torch DistributedDataParallel) or ``deepspeed`` (ZeRO ``zero_stage``
    1/2/3). On CPU both run over gloo. ``batch_size`` counts queries per worker and step (each
    query brings its list of passages). Training stops after ``max_steps`` optimizer steps or
    ``epochs`` passes over the data, whichever comes first; ``epochs: null`` sets no epoch cap (the
    data repeats until ``max_steps``). When ``epochs`` cuts ``max_steps`` short, the run says so
    (a warning naming both and the steps it will run; see :func:`~rankdistill.training.loop.steps_for`).

    ``precision``: ``fp32``; ``bf16`` (DDP: ``torch.autocast`` on CPU or GPU; DeepSpeed: its
    bf16 mode); ``fp16`` (DDP: ``torch.autocast`` + ``GradScaler`` — on CPU this runs, but
    slowly, as CPUs emulate most fp16 kernels; DeepSpeed: its fp16 mode, GPUs only); ``auto``:
    each Train worker picks ``bf16`` where its own device has a bf16 unit (a CUDA GPU that
    supports bf16; an x86 CPU with AVX512-BF16 or AMX) and ``fp32`` elsewhere, since bf16
    autocast on a CPU without one is slower than fp32. The choice is made on the worker, not the
    driver (nodes differ), and logged (``train_precision`` MLflow tag, one line per rank). See
    :func:`~rankdistill.precision.resolve_precision`.

    ``gradient_accumulation``: micro-batches of ``batch_size`` queries per optimizer step (each
    worker); the loss of each micro-batch is divided by it, so a step's gradient is the mean over
    its micro-batches. In-batch negatives (a dense student's ``L_CL``) span one micro-batch on one
    worker, as in the official ColBERT / PairDistill code (its ``accumsteps``), not the whole step.

    ``gradient_checkpointing``: activation checkpointing of the student's Hugging Face backbone(s)
    (:meth:`~rankdistill.models.base.Reranker.enable_gradient_checkpointing`): each encoder layer
    keeps only its input and recomputes its activations in the backward pass; the same gradients
    for about a third more compute, and activation memory falls from all of a layer's tensors to
    one hidden state per layer (``benchmarks/train_memory.py``).

    ``worker_env``: environment variables of the Ray Train worker processes (Ray's
    ``RunConfig.worker_runtime_env``); the default ``MALLOC_ARENA_MAX=1`` keeps glibc from
    re-faulting activation memory every step in the worker's training thread (see
    ``rankdistill.ray_runtime.THREADED_TORCH_ENV``). ``{}`` turns it off; values must be strings.

    ``audit_examples``: every rank writes the ``example_id`` of each row it trains on, per
    step, to ``<storage>/<run_name>/audit/rank<r>/step<NNNNNN>.json`` (a debugging aid to check
    data order and resume; rows must carry an ``example_id``).
    """

    strategy: str = "ddp"
    zero_stage: int = 2
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False  # activation checkpointing of the student's backbone(s)
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_steps: int = 200
    epochs: int | None = 1  # null: no epoch cap, max_steps is what runs
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where the worker's device has a bf16 unit)
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: only the final one
    # ListConRanker's first stage: this many steps with the embedding model frozen, run as a
    # separate Ray Train run before the remaining steps (max_steps counts both stages)
    freeze_backbone_steps: int = 0
    run_name: str = "train"  # Ray Train run name; re-running with the same name resumes
    storage_path: str | None = None  # default: <output_dir>/ray_train (use shared storage on clusters)
    audit_examples: bool = False
    worker_env: dict[str, str] = field(default_factory=lambda: dict(THREADED_TORCH_ENV))

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy '{self.strategy}' ({', '.join(STRATEGIES)})", "training.strategy")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"must be 0..3, got {self.zero_stage}", "training.zero_stage")
        check_precision(self.precision, "training.precision")
        if self.precision == "fp16" and self.strategy == "deepspeed" and not self.use_gpu:
            raise ConfigError("DeepSpeed's fp16 mode needs GPUs (training.use_gpu: true); on CPU use bf16 or fp32, "
                              "or strategy ddp (torch.autocast + GradScaler)", "training.precision")
        for name in ("max_steps", "epochs", "num_workers", "batch_size", "gradient_accumulation", "log_every"):
            value = getattr(self, name)
            if value is None and name == "epochs":
                continue
            if value < 1:
                raise ConfigError(f"must be at least 1, got {value}", f"training.{name}")
        for name in ("checkpoint_every", "freeze_backbone_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be 0 or more, got {getattr(self, name)}", f"training.{name}")
        if self.learning_rate <= 0:
            raise ConfigError(f"must be positive, got {self.learning_rate}", "training.learning_rate")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.warmup_ratio}", "training.warmup_ratio")
        if not isinstance(self.worker_env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.worker_env.items()):
            raise ConfigError(f"must map variable names to strings (quote numbers), got {self.worker_env!r}",
                              "training.worker_env")

    def resume_identity(self) -> dict[str, Any]:
        """The fields a checkpoint of this run may only be resumed with unchanged."""
        return {k: v for k, v in asdict(self).items() if k not in RESUMABLE_CHANGES}
