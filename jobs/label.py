"""Label candidate lists with an LLM teacher on Ray Data and store the labels (resumable).

    python jobs/label.py --config configs/label.yaml
    python jobs/label.py --config configs/label-trec-dl-2019-replay.yaml
    python jobs/label.py --config configs/label.yaml kind=pairwise teacher.template=pairdistill-pairwise
    ray job submit --working-dir . -- python jobs/label.py --config configs/label.yaml pipeline.num_actors=4
"""

from rankdistill.cli import run_job
from rankdistill.workflows.label import LabelConfig, run_label

if __name__ == "__main__":
    run_job(LabelConfig, run_label, description=__doc__)
