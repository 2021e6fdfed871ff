"""Train a cross-encoder student on Ray Train and evaluate it by reranking a first-stage run.

    python jobs/train_reranker.py --config configs/train_reranker-mono.yaml
    ray job submit --working-dir . -- python jobs/train_reranker.py --config configs/train_reranker-set-encoder.yaml
"""

from rankdistill.cli import run_job
from rankdistill.workflows.train_reranker import TrainRerankerConfig, run_train_reranker

if __name__ == "__main__":
    run_job(TrainRerankerConfig, run_train_reranker, description=__doc__)
