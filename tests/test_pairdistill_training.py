"""PairDistill end to end on Ray: label store -> Ray Data examples -> Ray Train (DDP) with a
BiEncoder and L = L_CL + λ_KD L_KD + λ_pair L_pair -> a student that ranks the positives first."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from rankdistill.data.records import Document, Query

WORDS = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "castle", "rocket", "garden", "violin", "meadow"]


def synthetic(n: int, seed: int):
    """Queries of two words; the positive passage has the marker word "relevant" and the query's
    words, the three negatives random other words (the task of tests/test_training.py)."""
    rng = random.Random(seed)
    queries, corpus, qrels = {}, {}, {}
    for i in range(n):
        words = rng.sample(WORDS, 2)
        others = [w for w in WORDS if w not in words]
        qid = f"q{seed}-{i}"
        queries[qid] = Query(qid, " ".join(words))
        corpus[f"{qid}-pos"] = Document(f"{qid}-pos", " ".join(["relevant", *words, *rng.sample(others, 2)]))
        for j in range(3):
            corpus[f"{qid}-neg{j}"] = Document(f"{qid}-neg{j}", " ".join(rng.sample(others, 5)))
        qrels[qid] = {f"{qid}-pos": 1}
    return queries, corpus, qrels


def write_labels(store_root: Path, queries, seed: int = 0) -> None:
    """A pointwise teacher that scores the positive high and a pairwise teacher that prefers it."""
    from rankdistill.teachers.store import LabelStore

    rng = random.Random(seed)
    store = LabelStore(store_root)
    point, pair = [], []
    for qid in queries:
        docs = [f"{qid}-pos"] + [f"{qid}-neg{j}" for j in range(3)]
        for rank, d in enumerate(docs, 1):
            s = (2.0 if d.endswith("pos") else -2.0) + rng.uniform(-0.5, 0.5)
            point.append({"teacher": "mono", "template_id": "yn", "template_hash": "h1", "qid": qid, "docid": d,
                          "rank": rank, "score": s, "logprob_yes": s, "logprob_no": -1.0})
        for a, b in [(docs[0], docs[1]), (docs[2], docs[0]), (docs[1], docs[2]), (docs[2], docs[3])]:
            p = 0.9 if a.endswith("pos") else (0.1 if b.endswith("pos") else 0.5)
            pair.append({"teacher": "duo", "template_id": "ab", "template_hash": "h2", "qid": qid,
                         "docid_a": a, "docid_b": b, "rank_a": 1, "rank_b": 2, "logprob_a_wins": math.log(p),
                         "p_a_wins": p, "seed": 0})
    store.write("pointwise", point)
    store.write("pairwise", pair)


@pytest.mark.slow
def test_pairdistill_trains_a_bi_encoder_from_store_labels_on_ray(tmp_path: Path, local_ray):
    from model_fixtures import tiny_reranker
    from rankdistill.losses import PairDistillLoss
    from rankdistill.models import BiEncoder
    from rankdistill.training import TrainingConfig, fit
    from rankdistill.training.pair_examples import EXTRA_FIELDS, PairExamplesConfig, pair_example_dataset

    queries, corpus, qrels = synthetic(48, seed=0)
    write_labels(tmp_path / "labels", queries)
    config = PairExamplesConfig(label_store=str(tmp_path / "labels"), pointwise_teacher="mono",
                                pairwise_teacher="duo", passages_per_query=4)
    dataset = pair_example_dataset(queries, corpus, config, qrels, queries_per_task=16)
    student_dir = tmp_path / "student"
    tiny_reranker("bi-encoder", pooling="mean", similarity="dot").save_pretrained(student_dir)

    def make_student():
        return BiEncoder.from_pretrained(str(student_dir)).train()

    def make_loss():
        return PairDistillLoss(lambda_kd=1.0, lambda_pair=3.0)

    result = fit(make_student, make_loss, dataset,
                 TrainingConfig(num_workers=1, batch_size=4, learning_rate=3e-3, warmup_ratio=0.0, epochs=20,
                                max_steps=40, log_every=5, run_name="pairdistill"),
                 tmp_path / "out", extra_fields=EXTRA_FIELDS)
    assert result.steps == 40
    trained = BiEncoder.from_pretrained(result.model_dir)
    before = BiEncoder.from_pretrained(str(student_dir))
    held_out, held_corpus, _ = synthetic(12, seed=99)

    def hits(model) -> int:
        n = 0
        for qid, q in held_out.items():
            docs = [f"{qid}-pos"] + [f"{qid}-neg{j}" for j in range(3)]
            scores = model.score(q.text, [held_corpus[d].contents for d in docs])
            n += int(max(range(4), key=scores.__getitem__) == 0)
        return n

    # chance is 3 of 12; the untrained student got 3, a 40-step run 9 (example order across Ray
    # tasks may vary, hence the margin)
    after = hits(trained)
    assert after >= 7 and after >= hits(before) + 4
