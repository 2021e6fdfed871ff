"""Evaluate a first stage: BM25 on Ray (or a given TREC run) → ir-measures → MLflow.

    python jobs/evaluate.py --config configs/evaluate.yaml dataset.name=scifact
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/evaluate.yaml
"""

from rankdistill.cli import run_job
from rankdistill.workflows.evaluate import EvaluateConfig, run_evaluate

if __name__ == "__main__":
    run_job(EvaluateConfig, run_evaluate, description=__doc__)
