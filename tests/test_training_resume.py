"""Kill a Ray Train + DeepSpeed ZeRO-2 run with SIGKILL, resume it, and compare it with a run
that was never interrupted: the same steps, the same examples per step, the same weights."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MAX_STEPS, CHECKPOINT_EVERY = 8, 3


def _config(storage: Path, **changes):
    import dataclasses

    from rankdistill.training import TrainingConfig

    # as tests/resume_driver.py builds it (2 workers x 4 queries; 40 examples = 5 batches per
    # rank and epoch, so the 8 steps cross an epoch boundary; half a CPU per worker, so that the
    # reference and the run to be killed fit side by side on the 2 CPUs of ``local_ray``)
    config = TrainingConfig(strategy="deepspeed", zero_stage=2, num_workers=2, cpus_per_worker=0.5, batch_size=4,
                            learning_rate=3e-3, warmup_ratio=0.25, max_steps=MAX_STEPS, epochs=100, log_every=1,
                            checkpoint_every=CHECKPOINT_EVERY, run_name="resume", storage_path=str(storage),
                            audit_examples=True)
    return dataclasses.replace(config, **changes)


def _fit(student: Path, storage: Path, output: Path, **changes):
    import ray.data
    from rankdistill.losses.registry import get_loss
    from rankdistill.models import load_reranker
    from rankdistill.training import fit
    from resume_driver import examples

    return fit(functools.partial(load_reranker, str(student)), functools.partial(get_loss, "infonce"),
               ray.data.from_items(examples(40)), _config(storage, **changes), output)


def _audit(run_dir: Path) -> dict[tuple[int, int], dict]:
    """``{(rank, step): record}`` of the audit files of a run."""
    records = {}
    for path in sorted((run_dir / "audit").glob("rank*/step*.json")):
        record = json.loads(path.read_text())
        records[(record["rank"], record["step"])] = record
    return records


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _checkpoint_model(run_dir: Path, step: int) -> Path:
    for state in run_dir.glob("checkpoint_*/training_state.json"):
        if json.loads(state.read_text())["step"] == step:
            return state.parent / "model"
    raise AssertionError(f"no checkpoint of step {step} in {run_dir}")


def _wait_for_free_cpus(total: float, timeout: float = 120.0) -> None:
    """Ray kills the actors of a dead driver; wait until their CPUs are free again."""
    import ray

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < total:
        assert time.monotonic() < deadline, "the killed job's Ray Train workers did not go away"
        time.sleep(0.5)


@pytest.mark.slow
def test_deepspeed_zero2_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, local_ray):
    import ray
    import torch
    from model_fixtures import tiny_reranker
    from rankdistill.training.fit import stored_state

    student = tmp_path / "student"
    tiny_reranker("mono").save_pretrained(student)  # dropout 0.1: resume must restore the RNG too

    # 1. in a separate driver process, the training stalls in step 5 (after the step-3
    # checkpoint), to be SIGKILLed there; 2. meanwhile, in this process, the same training
    # never interrupted (the reference)
    storage, run_dir = tmp_path / "storage", tmp_path / "storage" / "resume"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(HERE.parent / "platform"), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(
        [sys.executable, str(HERE / "resume_driver.py"), "--student", str(student), "--output", str(tmp_path / "out1"),
         "--storage", str(storage), "--max-steps", str(MAX_STEPS), "--checkpoint-every", str(CHECKPOINT_EVERY),
         "--stall-after", "4"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        reference = _fit(student, tmp_path / "ref-storage", tmp_path / "ref-out")
        assert reference.steps == MAX_STEPS
        deadline = time.monotonic() + 240
        while True:
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint and step 4 in time"
            try:
                state = stored_state(run_dir)
            except (ValueError, OSError):  # the snapshot is being written
                state = None
            if state is not None and (run_dir / "audit" / "rank0" / "step000004.json").exists():
                break
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    killed_at = stored_state(run_dir)["step"]
    assert killed_at == CHECKPOINT_EVERY  # killed mid-run, after a checkpoint
    _wait_for_free_cpus(2.0)

    # 3. the same call again resumes from that checkpoint and finishes
    resumed = _fit(student, storage, tmp_path / "out2")
    assert resumed.steps == MAX_STEPS

    # each step was trained once on the final path: by the first run up to the checkpoint, by
    # the resumed run after it; and on the same examples, per rank and step, as the reference
    ref_audit, audit = _audit(tmp_path / "ref-storage" / "resume"), _audit(run_dir)
    assert set(audit) == set(ref_audit) == {(r, s) for r in (0, 1) for s in range(1, MAX_STEPS + 1)}
    for (rank, step), record in audit.items():
        assert record["resumed_from"] == (0 if step <= killed_at else killed_at), (rank, step)
        assert record["example_ids"] == ref_audit[(rank, step)]["example_ids"], (rank, step)
    seen = Counter(i for r in audit.values() for batch in r["example_ids"] for i in batch)
    assert seen == Counter(i for r in ref_audit.values() for batch in r["example_ids"] for i in batch)
    # by hand: rank r owns ex[20r : 20r+20] in order; its 8 batches of 4 are one epoch (5 batches)
    # and 3 more, so the first 12 of its 20 examples are seen twice, the other 8 once
    assert seen == Counter({f"ex{i:03d}": (2 if i % 20 < 12 else 1) for i in range(40)})

    # Weights. Both runs compute the same float32 operations in the same order (same data per
    # rank and step, RNG restored for dropout, one thread per worker, gloo sums of 2 ranks are
    # order-independent), so they are expected to agree exactly; the tolerance, 1e-6 absolute,
    # only leaves room for a reordered floating-point reduction (a few ulps of weights of order
    # 1). It is far below what the test must detect, e.g. a step more or less: the reference's step-6
    # and step-8 weights differ by ~1e-3 (Adam moves each weight by about the learning rate),
    # asserted below to be over 1000x the tolerance.
    final_ref, final = _weights(reference.model_dir), _weights(resumed.model_dir)
    assert final.keys() == final_ref.keys()
    worst = max(float((final[k] - final_ref[k]).abs().max()) for k in final)
    assert worst <= 1e-6, worst
    before = _weights(_checkpoint_model(tmp_path / "ref-storage" / "resume", 6))
    one_step = max(float((before[k] - final_ref[k]).abs().max()) for k in final)
    assert one_step > 1000 * 1e-6, one_step
    initial = _weights(student)
    assert any(not torch.equal(initial[k], final[k]) for k in final if k in initial)

    # 4. the finished run's folder with another learning rate: not "resumed" (which would return
    # this model as if trained with it) but refused, naming the difference, before Ray Train starts
    from rankdistill.errors import ConfigError

    with pytest.raises(ConfigError, match=r"training.learning_rate: stored 0.003, now 0.001"):
        _fit(student, storage, tmp_path / "out3", learning_rate=1e-3)
