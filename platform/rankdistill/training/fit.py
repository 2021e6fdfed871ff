"""``fit``: train a student on Ray Train (DDP or DeepSpeed) from a Ray Dataset of examples."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankdistill.training.config import TrainingConfig
from rankdistill.training.loop import MODEL_DIR, STATE_FILE, steps_for, train_loop_per_worker


@dataclass
class FitResult:
    model_dir: Path  # the trained student (save_pretrained layout)
    steps: int
    checkpoint_path: str  # where Ray Train keeps the final checkpoint
    metrics: dict[str, Any]


def fit(
    make_student: Callable[[], Any],
    make_loss: Callable[[], Any],
    train_dataset: Any,
    config: TrainingConfig,
    output_dir: str | Path,
    tracking: dict[str, str] | None = None,
    extra_fields: tuple[str, ...] = (),
    step_offset: int = 0,
) -> FitResult:
    """Train on Ray Train and copy the final student to ``<output_dir>/model``.

    ``make_student`` / ``make_loss`` are called inside every worker (they are shipped by
    cloudpickle, so closures over configs are fine). ``tracking`` is ``{"uri", "run_id"}`` of
    the job's MLflow run, to which rank 0 logs ``train_loss``, ``train_lr`` and throughput.
    Re-running with the same ``config.run_name`` and storage path resumes from the last checkpoint.
    """
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    # the training loop logs its own progress; Ray Data's split bars would flood the worker logs
    ray.data.DataContext.get_current().enable_progress_bars = False
    output_dir = Path(output_dir).resolve()
    storage = Path(config.storage_path).resolve() if config.storage_path else output_dir / "ray_train"
    storage.mkdir(parents=True, exist_ok=True)
    total_steps = steps_for(train_dataset.count(), config)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "training": asdict(config),
            "make_student": make_student,
            "make_loss": make_loss,
            "extra_fields": list(extra_fields),
            "tracking": tracking,
            "total_steps": total_steps,
            "step_offset": step_offset,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=config.run_name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
        datasets={"train": train_dataset},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    model_dir = output_dir / "model"
    with result.checkpoint.as_directory() as ckpt:
        import json

        state = json.loads((Path(ckpt) / STATE_FILE).read_text())
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(Path(ckpt) / MODEL_DIR, model_dir)
    return FitResult(model_dir, int(state["step"]), result.checkpoint.path, dict(result.metrics or {}))
