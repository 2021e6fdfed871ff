"""PairDistill (the main job): a dense student distilled from pointwise and pairwise LLM or
cross-encoder teachers, iteratively, every stage on Ray; tracked in MLflow, registered as a model.

    python jobs/pairdistill.py --config configs/quickstart.yaml
    ray job submit --working-dir . -- python jobs/pairdistill.py --config configs/pairdistill-gpu.yaml
"""

from rankdistill.cli import run_job
from rankdistill.workflows.pairdistill import PairDistillConfig, run_pairdistill

if __name__ == "__main__":
    run_job(PairDistillConfig, run_pairdistill, description=__doc__, require_config="configs/quickstart.yaml")
