"""A trained rankdistill reranker as a teacher: duo for pairwise labels, any student for pointwise.

``teacher.backend: {name: reranker, model: <folder of a saved student>}``. It judges texts
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
    judges_text = True  # labelers pass texts to judge_pairs / judge_points, not prompts

    def __init__(self, config: BackendConfig):
        super().__init__()
        if not config.model:
            raise ConfigError("the folder of a trained rankdistill reranker is needed", "teacher.backend.model")
        from rankdistill.models import load_reranker
        from rankdistill.teachers.backends.hf import pick_device

        self.path = config.model
        self.model = load_reranker(config.model).to(pick_device(config.device)).eval()
        self.batch_size = config.batch_size

    @property
    def description(self) -> str:
        return f"reranker:{type(self.model).__name__}:{self.path}"

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

    def judge_pairs(self, pairs: Sequence[tuple[str, str, str]], first: str, second: str) -> list[dict[str, float]]:
        """``(query, shown_first, shown_second)`` → ``{first: log P(shown_first ≻ shown_second),
        second: log(1 - P)}``, one model call per query."""
        if not hasattr(self.model, "pair_probabilities"):
            raise ConfigError(
                f"pairwise labels need a pairwise student (duo); {self.path} holds a {type(self.model).__name__}",
                "teacher.backend.model",
            )
        by_query: dict[str, list[int]] = defaultdict(list)
        for n, (query, _, _) in enumerate(pairs):
            by_query[query].append(n)
        probabilities: list[float] = [0.0] * len(pairs)
        for query, rows in by_query.items():
            self._count(rows)
            values = self.model.pair_probabilities(query, [pairs[n][1:] for n in rows], self.batch_size)
            for n, p in zip(rows, values, strict=True):
                probabilities[n] = min(max(float(p), _FLOOR), 1.0 - _FLOOR)
        return [{first: math.log(p), second: math.log1p(-p)} for p in probabilities]

    def judge_points(self, points: Sequence[tuple[str, str]], yes: str, no: str) -> list[dict[str, float]]:
        """``(query, passage)`` → ``{yes: log σ(s), no: log σ(-s)}`` of the student's score ``s``."""
        by_query: dict[str, list[int]] = defaultdict(list)
        for n, (query, _) in enumerate(points):
            by_query[query].append(n)
        scores: list[float] = [0.0] * len(points)
        for query, rows in by_query.items():
            self._count(rows)
            values = self.model.score(query, [points[n][1] for n in rows], self.batch_size)
            for n, s in zip(rows, values, strict=True):
                scores[n] = float(s)
        return [{yes: _log_sigmoid(s), no: _log_sigmoid(-s)} for s in scores]
