"""The DeepSpeed config a :class:`TrainingConfig` implies."""

from __future__ import annotations

from typing import Any

from rankdistill.training.config import TrainingConfig


def deepspeed_config(config: TrainingConfig) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "gradient_clipping": config.max_grad_norm,
        "zero_optimization": {"stage": config.zero_stage},
        # the optimizer is torch's AdamW (no JIT-compiled fused kernels needed on CPU)
        "zero_allow_untested_optimizer": True,
        # every rank saves under the same tag (a step number); a mismatch is a bug, not a warning
        "checkpoint": {"tag_validation": "Fail"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if config.zero_stage == 3:
        ds["zero_optimization"].update(
            {"stage3_gather_16bit_weights_on_model_save": True, "stage3_param_persistence_threshold": 0}
        )
    if config.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif config.precision == "fp16":
        ds["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return ds
