"""``fit``: train a student on Ray Train (DDP or DeepSpeed) from a Ray Dataset of examples."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.training.config import TrainingConfig
from rankdistill.training.loop import MODEL_DIR, STATE_FILE, steps_for, train_loop_per_worker


@dataclass
class FitResult:
    model_dir: Path  # the trained student (save_pretrained layout)
    steps: int
    checkpoint_path: str  # where Ray Train keeps the final checkpoint
    metrics: dict[str, Any]


def rank_shards(dataset: Any, num_workers: int) -> list[Any]:
    """One fixed slice of the rows per rank: rank ``r`` gets rows ``[r*n, (r+1)*n)`` of the
    dataset in its order (``n = count // num_workers``; the remainder is dropped, as
    :func:`steps_for` assumes).

    Ray Train's own dataset sharding (``streaming_split``) hands blocks to whichever worker asks
    first, so which rank sees which rows, and in which order, changes from run to run. A resumed
    run could then not skip "the batches already trained on": it would see some examples twice
    and others never. ``Dataset.split(equal=True)`` on the materialised rows, with Ray Data told
    to preserve their order, is the same split in every run.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    previous = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        return dataset.split(num_workers, equal=True)
    finally:
        context.execution_options.preserve_order = previous


def storage_location(config: TrainingConfig, output_dir: Path) -> str:
    """Where Ray Train stores the run: ``training.storage_path`` (a storage URI such as
    ``s3://bucket/ray_train``, or a folder), else ``<output_dir>/ray_train``. On a cluster of
    several nodes a folder must be a shared mount (checked: :func:`check_shared_folder`)."""
    from rankdistill.ray_runtime import check_shared_folder
    from rankdistill.storage import is_uri

    if config.storage_path and is_uri(config.storage_path):
        return config.storage_path  # never through Path(): it would make "s3://b" a local "<cwd>/s3:/b"
    storage = Path(config.storage_path).resolve() if config.storage_path else output_dir / "ray_train"
    storage.mkdir(parents=True, exist_ok=True)
    check_shared_folder(storage, "training.storage_path")
    return str(storage)


def run_path(storage: str | Path, config: TrainingConfig) -> str:
    """Ray Train's folder of the run ``config.run_name`` (checkpoints, audit files): a path or URI."""
    from rankdistill.storage import join

    return join(storage, config.run_name)


def stored_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``training_state.json`` of a run's latest registered checkpoint, or None."""
    import ray.train
    from pyarrow import fs

    from rankdistill.storage import filesystem, join

    filesystem_, snapshot = filesystem(join(run_dir, "checkpoint_manager_snapshot.json"))
    if filesystem_.get_file_info(snapshot).type == fs.FileType.NotFound:
        return None
    checkpoint = ray.train.Result.from_path(str(run_dir)).checkpoint
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / STATE_FILE).read_text())


def check_resumable(state: dict[str, Any], config: TrainingConfig, identity: dict[str, Any], total_steps: int,
                    run_dir: str | Path) -> None:
    """Resume only a run of the same training: raise :class:`ConfigError` listing every field
    that differs between the stored checkpoint and this call (or when it is past ``total_steps``)."""
    stored_training = {k: v for k, v in state.get("training", {}).items() if k in config.resume_identity()}
    stored = {**{f"training.{k}": v for k, v in stored_training.items()}, **_flatten(state.get("identity", {}))}
    current = {**{f"training.{k}": v for k, v in config.resume_identity().items()}, **_flatten(identity)}
    differences = [f"{key}: stored {stored.get(key)!r}, now {current.get(key)!r}"
                   for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]
    if differences:
        raise ConfigError(
            f"{run_dir} holds a checkpoint of a different training run, which cannot be resumed with this config "
            f"({'; '.join(differences)}); use another training.run_name or output_dir, or delete {run_dir}",
            "training.run_name")
    if int(state["step"]) > total_steps:
        raise ConfigError(f"the checkpoint in {run_dir} is at step {state['step']}, beyond the {total_steps} steps "
                          f"asked for now; use another training.run_name or output_dir", "training.max_steps")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def fit(
    make_student: Callable[[], Any],
    make_loss: Callable[[], Any],
    train_dataset: Any,
    config: TrainingConfig,
    output_dir: str | Path,
    tracking: dict[str, str] | None = None,
    extra_fields: tuple[str, ...] = (),
    step_offset: int = 0,
    identity: dict[str, Any] | None = None,
) -> FitResult:
    """Train on Ray Train and copy the final student to ``<output_dir>/model`` (``output_dir``: a
    folder on the driver; Ray Train's storage is ``training.storage_path``, see :func:`storage_location`).

    ``make_student`` / ``make_loss`` are called inside every worker (they are shipped by
    cloudpickle, so closures over configs are fine). ``tracking`` is ``{"uri", "run_id"}`` of
    the job's MLflow run, to which rank 0 logs ``train_loss``, ``train_lr`` and throughput.
    ``identity`` describes what else defines the run (e.g. the student, loss and data configs).

    Re-running with the same ``config.run_name`` and storage path resumes from the last
    checkpoint, but only when the stored training config (bar the fields of
    ``config.RESUMABLE_CHANGES``, e.g. a larger ``max_steps``), ``identity`` and number of
    examples equal this call's; otherwise :class:`ConfigError` lists the differences.
    """
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    # the training loop logs its own progress; Ray Data's bars would flood the worker logs
    ray.data.DataContext.get_current().enable_progress_bars = False
    output_dir = Path(output_dir).resolve()  # on the driver (the caller uploads it where it belongs)
    storage = storage_location(config, output_dir)
    num_examples = train_dataset.count()
    total_steps = steps_for(num_examples, config)
    if config.audit_examples and "example_id" not in train_dataset.schema().names:
        raise ConfigError("needs an 'example_id' field in every training row", "training.audit_examples")
    identity = {**_jsonable(identity or {}), "num_examples": num_examples}
    state = stored_state(run_path(storage, config))
    if state is not None:
        check_resumable(state, config, identity, total_steps, run_path(storage, config))
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
            "identity": identity,
            "shards": rank_shards(train_dataset, config.num_workers),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=config.run_name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=0),
            worker_runtime_env={"env_vars": dict(config.worker_env)} if config.worker_env else None,
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    model_dir = output_dir / "model"
    with result.checkpoint.as_directory() as ckpt:
        state = json.loads((Path(ckpt) / STATE_FILE).read_text())
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(Path(ckpt) / MODEL_DIR, model_dir)
    return FitResult(model_dir, int(state["step"]), result.checkpoint.path, dict(result.metrics or {}))
