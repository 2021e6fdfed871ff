"""A trained rankdistill reranker as a teacher: duo for pairwise labels, any student for pointwise.

``teacher.backend: {name: reranker, model: <folder of a saved student, its storage URI, or a Hub id>}``. It judges texts
directly instead of answering prompts, so the pairwise and pointwise labelers call
:meth:`RerankerBackend.judge_pairs` / :meth:`RerankerBackend.judge_points` in place of
``token_logprobs`` and store the same label rows:

- pairwise (a duo cross-encoder, :class:`rankdistill.models.DuoCrossEncoder`): the "first" token
  gets ``log P(shown-first ≻ shown-second)`` and the "second" token ``log(1 - P)``, so the
  labeler's two-order average ``P(a ≻ b) = (P(a ≻ b) + 1 - P(b ≻ a)) / 2`` is duoBERT's
  symmetric pair probability;
- pointwise (any student): "yes" gets ``log σ(s)``, "no" ``log σ(-s)`` of the student's score ``s``.

Listwise labels need a generating LLM (``hf`` or ``vllm``); asking this backend for them is a
config error.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from rankdistill.errors import ConfigError
from rankdistill.teachers.backends.base import BackendConfig, Prompt, TeacherBackend

_FLOOR = 1e-12  # probabilities are clipped to [1e-12, 1 - 1e-12] before the log


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


class RerankerBackend(TeacherBackend):
    """Holds one saved student (``load_reranker(config.model)``) on ``config.device``."""

    name = "reranker"
    judges_text = True

    def __init__(self, config: BackendConfig):
        super().__init__()
        if not config.model:
            raise ConfigError("the folder of a trained rankdistill reranker is needed", "teacher.backend.model")
        from rankdistill.model_source import local_model_folder
        from rankdistill.models import load_reranker
        from rankdistill.teachers.backends.hf import pick_device

        self.path = config.model
        # a folder, a storage URI (copied once per node) or a Hugging Face Hub id
        folder = local_model_folder(config.model, "teacher.backend.model")
        self.model = load_reranker(folder).to(pick_device(config.device)).eval()
        self.precision = self.model.use_precision(config.precision)  # auto: decided on this actor's device
        self.batch_size = config.batch_size

    @property
    def description(self) -> str:
        return f"reranker:{type(self.model).__name__}:{self.path} ({self.precision})"

    def _not_prompted(self, what: str) -> ConfigError:
        return ConfigError(
            f"the 'reranker' backend judges passages with a trained student and cannot {what}; "
            "listwise labels need a generating LLM (backend hf or vllm)",
            "teacher.backend.name",
        )

    def generate(self, prompts: Sequence[Prompt | str], max_new_tokens: int) -> list[str]:
        raise self._not_prompted("generate text")

    def token_logprobs(self, prompts: Sequence[Prompt | str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        raise self._not_prompted("answer prompts")

    def _per_query(self, items: Sequence[tuple[str, ...]], judge) -> list[float]:
        """``judge(query, [rest of each item])`` once per query; results back in item order."""
        by_query: dict[str, list[int]] = defaultdict(list)
        for n, item in enumerate(items):
            by_query[item[0]].append(n)
        out: list[float] = [0.0] * len(items)
        for query, rows in by_query.items():
            self._count(rows)
            for n, value in zip(rows, judge(query, [items[n][1:] for n in rows]), strict=True):
                out[n] = float(value)
        return out

    def judge_pairs(self, pairs: Sequence[tuple[str, str, str]], first: str, second: str) -> list[dict[str, float]]:
        """``(query, shown_first, shown_second)`` → ``{first: log P(shown_first ≻ shown_second),
        second: log(1 - P)}``, one model call per query."""
        if not hasattr(self.model, "pair_probabilities"):
            raise ConfigError(
                f"pairwise labels need a pairwise student (duo); {self.path} holds a {type(self.model).__name__}",
                "teacher.backend.model",
            )
        probabilities = self._per_query(
            pairs, lambda query, shown: self.model.pair_probabilities(query, shown, self.batch_size))
        clipped = [min(max(p, _FLOOR), 1.0 - _FLOOR) for p in probabilities]
        return [{first: math.log(p), second: math.log1p(-p)} for p in clipped]

    def judge_points(self, points: Sequence[tuple[str, str]], yes: str, no: str) -> list[dict[str, float]]:
        """``(query, passage)`` → ``{yes: log σ(s), no: log σ(-s)}`` of the student's score ``s``."""
        scores = self._per_query(
            points, lambda query, rest: self.model.score(query, [r[0] for r in rest], self.batch_size))
        return [{yes: _log_sigmoid(s), no: _log_sigmoid(-s)} for s in scores]
