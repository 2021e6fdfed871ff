"""Invariants of every shipped config (issue 18, Part 1 item 7): selection never sees what is
reported (dev ≠ test), evaluation retrieves at least as deep as the deepest cutoff measured, and
``max_steps`` is what runs (``epochs`` does not cut it short silently)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from rankdistill.config import load_config
from rankdistill.storage import is_uri
from rankdistill.training.loop import steps_for
from rankdistill.workflows.evaluate import EvaluateConfig
from rankdistill.workflows.pairdistill import PairDistillConfig
from rankdistill.workflows.train_reranker import TrainRerankerConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def kind_of(path: Path):
    name = path.stem
    if name == "quickstart" or name.startswith("pairdistill"):
        return PairDistillConfig
    if name.startswith("train_reranker"):
        return TrainRerankerConfig
    if name.startswith("evaluate"):
        return EvaluateConfig
    return None  # label configs: no evaluation, no training


def shipped(kind):
    return [p for p in sorted(CONFIGS.glob("*.yaml")) if kind_of(p) is kind]


def deepest_cutoff(measures) -> int:
    cutoffs = [int(m) for m in re.findall(r"@(\d+)", " ".join(measures))]
    return max(cutoffs, default=0)


def test_every_shipped_config_is_known_here():
    assert {p.stem for p in CONFIGS.glob("*.yaml") if kind_of(p) is None} <= {
        "label", "label-vllm", "label-trec-dl-2019-replay", "label-first"}
    assert shipped(PairDistillConfig) and shipped(TrainRerankerConfig) and shipped(EvaluateConfig)


@pytest.mark.parametrize("path", shipped(PairDistillConfig), ids=lambda p: p.stem)
def test_pairdistill_configs_select_on_dev_not_test_and_evaluate_deep_enough(path):
    config = load_config(PairDistillConfig, path)
    s = config.splits
    assert s.train != s.test, f"{path.name}: training on the test split"
    if s.dev is None:
        assert s.dev_queries >= 1  # carved from train, so disjoint from test
    else:
        assert s.dev != s.test, f"{path.name}: splits.dev {s.dev} is the reported test split"
    cutoff = deepest_cutoff([*config.measures, config.select_on])
    assert config.candidates.eval_depth >= cutoff, (
        f"{path.name}: candidates.eval_depth {config.candidates.eval_depth} < the deepest cutoff {cutoff}")


def test_the_gpu_config_is_the_papers_run():
    config = load_config(PairDistillConfig, CONFIGS / "pairdistill-gpu.yaml")
    assert config.splits.dev is None and config.splits.dev_queries == 1000 and config.splits.test == "dev"
    assert config.training.max_steps == 100_000 and config.training.epochs is None
    assert config.candidates.eval_depth == 1000
    assert config.student.backbone == "colbert-ir/colbertv2.0"
    assert config.pointwise_teacher.backend.model == "cross-encoder/ms-marco-MiniLM-L-6-v2"
    assert config.pairwise_teacher.backend.model == "castorini/duot5-3b-msmarco"
    assert config.pointwise_teacher.backend.fallback is None and config.pairwise_teacher.backend.fallback is None
    assert config.loss.options == {"lambda_kd": 1.0, "lambda_pair": 3.0, "temperature": 1.0, "pair_reduction": "pairs"}
    t = config.training  # the official effective batch (bsize 32 = 4 ranks x 4 queries x accumsteps 2)
    assert (t.num_workers, t.batch_size, t.gradient_accumulation) == (4, 4, 2) and t.gradient_checkpointing


def test_the_gpu_configs_step_fits_an_a10g_with_20_percent_margin_by_the_memory_model():
    """The model states by the ZeRO paper's accounting (hand-checked below) plus the activations
    the README's benchmarks/train_memory.py table measured for the config's shape (3.5 GiB:
    4 x 64 x 180, checkpointed, 12 layers) leave >= 20% of an A10G's 22.5 GiB free."""
    from rankdistill.training.memory import CARDS, CUDA_OVERHEAD, GIB, model_state_bytes, verdict

    p = 109_000_000  # ColBERT on BERT-base (benchmark line)
    # ZeRO-2, 4 GPUs: bf16 weights 2P, bf16 grads 2P + 2P/4, fp32 master + Adam m, v + fp32 grads 16P/4
    assert model_state_bytes(p, 2, 4) == int(2 * p + 2.5 * p + 4 * p)
    peak = model_state_bytes(p, 2, 4) + int(3.5 * GIB)
    assert (peak + CUDA_OVERHEAD) / CARDS["A10G 24 GB"] <= 0.8
    assert verdict(peak, "A10G 24 GB").startswith("fits (")
    assert verdict(61 * GIB, "A10G 24 GB") == "does not fit"


@pytest.mark.parametrize("path", shipped(EvaluateConfig), ids=lambda p: p.stem)
def test_evaluate_configs_retrieve_deep_enough(path):
    config = load_config(EvaluateConfig, path)
    assert config.retrieval.k >= deepest_cutoff(config.evaluation.measures)


def _training_queries(dataset: str, split: str) -> tuple[int, int]:
    """(queries, queries with a judged-relevant passage) of a local dataset split."""
    from conftest import shared_dataset

    spec, folder = shared_dataset(dataset)
    queries, qrels = folder.queries(split), folder.qrels(split)
    judged = sum(1 for q in queries if any(g >= spec.relevance_threshold for g in qrels.get(q, {}).values()))
    return len(queries), judged


def _assert_max_steps_runs(path: Path, training, num_examples: int) -> None:
    assert steps_for(num_examples, training) == training.max_steps, (
        f"{path.name}: training.epochs {training.epochs} caps training.max_steps {training.max_steps} at "
        f"{steps_for(num_examples, training)} steps for {num_examples} examples")


@pytest.mark.parametrize("path", shipped(PairDistillConfig) + shipped(TrainRerankerConfig), ids=lambda p: p.stem)
def test_max_steps_is_what_runs(path):
    config = load_config(kind_of(path), path)
    training = config.training
    if training.epochs is None:
        return  # no epoch cap: max_steps runs
    if isinstance(config, PairDistillConfig):
        dataset, split = config.dataset, config.splits.train
    else:
        dataset, split = config.data.dataset, config.data.split
    assert not is_uri(dataset), f"{path.name}: a remote dataset with an epoch cap; set training.epochs: null"
    total, judged = _training_queries(dataset, split)
    if isinstance(config, PairDistillConfig):
        examples = total - (config.splits.dev_queries if config.splits.dev is None else 0)
        if config.splits.max_train_queries is not None:
            examples = min(examples, config.splits.max_train_queries)
        _assert_max_steps_runs(path, training, examples)
        return
    examples = judged if config.data.max_queries is None else min(judged, config.data.max_queries)
    frozen = training.freeze_backbone_steps
    if frozen:  # two runs: the frozen stage, then the rest
        _assert_max_steps_runs(path, dataclasses.replace(training, max_steps=frozen), examples)
        training = dataclasses.replace(training, max_steps=training.max_steps - frozen)
    _assert_max_steps_runs(path, training, examples)
