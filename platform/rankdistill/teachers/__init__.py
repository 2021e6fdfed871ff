"""Teachers: prompt templates as data, backends (hf, vllm, replay), listwise / pairwise / pointwise
orchestration, the resumable Parquet label store and the Ray Data labeling pipeline.

Nothing heavy is imported here (no torch, no ray): backends load lazily.
"""

from rankdistill.teachers.backends import BackendConfig, Prompt, TeacherBackend, make_backend
from rankdistill.teachers.listwise import (
    ListwiseConfig,
    ListwiseResult,
    WindowRecord,
    rerank_listwise,
    sliding_windows,
)
from rankdistill.teachers.pairwise import PairwiseConfig, sample_pairs, score_pairs
from rankdistill.teachers.parsing import REPAIR_KINDS, ParsedPermutation, classify_response, parse_permutation
from rankdistill.teachers.pointwise import PointwiseConfig, score_points
from rankdistill.teachers.prompts import PromptTemplate, available_templates, load_template
from rankdistill.teachers.store import KEY_COLUMNS, LabelStore

__all__ = [
    "KEY_COLUMNS",
    "REPAIR_KINDS",
    "BackendConfig",
    "LabelStore",
    "ListwiseConfig",
    "ListwiseResult",
    "PairwiseConfig",
    "ParsedPermutation",
    "PointwiseConfig",
    "Prompt",
    "PromptTemplate",
    "TeacherBackend",
    "WindowRecord",
    "available_templates",
    "classify_response",
    "load_template",
    "make_backend",
    "parse_permutation",
    "rerank_listwise",
    "sample_pairs",
    "score_pairs",
    "score_points",
    "sliding_windows",
]
