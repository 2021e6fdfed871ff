"""Training configuration shared by every student (cross-encoders now, dense retrievers later)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingConfig:
    """How Ray Train runs the student.

    ``strategy``: ``ddp`` (torch DistributedDataParallel) or ``deepspeed`` (ZeRO ``zero_stage``
    1/2/3). On CPU both run over gloo. ``batch_size`` counts queries per worker and step (each
    query brings its list of passages). Training stops after ``max_steps`` optimizer steps or
    ``epochs`` passes over the data, whichever comes first.
    """

    strategy: str = "ddp"
    zero_stage: int = 2
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_steps: int = 200
    epochs: int = 1
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16/bf16 on GPUs)
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: only the final one
    # ListConRanker's first stage: this many steps with the embedding model frozen, run as a
    # separate Ray Train run before the remaining steps (max_steps counts both stages)
    freeze_backbone_steps: int = 0
    run_name: str = "train"  # Ray Train run name; re-running with the same name resumes
    storage_path: str | None = None  # default: <output_dir>/ray_train (use shared storage on clusters)
