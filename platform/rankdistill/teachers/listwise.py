"""Listwise orchestration: sliding windows over many queries at once, in lockstep.

Windows inside a query depend on each other (each reorders the output of the previous one), so a
query can only have one window in flight. :func:`rerank_listwise` therefore advances all the
queries it is given together: every round sends the next window of every unfinished query to the
backend in one call, so backend batches stay full (a batch of B queries → rounds of B prompts).

The schedule follows rank_llm's ``sliding_windows``: windows of ``window_size`` moving by
``stride`` from the back of ``[rank_start, rank_end)`` to the front (or front to back), repeated for
``passes`` passes; the window that reaches ``rank_start`` is the last of a pass.

Two modes read a window's order from the teacher:

``generate`` (default)
    greedy decoding of the whole permutation (``[3] > [1] > ...``), parsed and repaired
    (:func:`~rankdistill.teachers.parsing.parse_permutation`).
``first``
    FIRST (Reddy et al. 2024, "FIRST: Faster Improved Listwise Reranking with Single Token
    Decoding"), as rank_llm's ``use_logits`` path does it: the prompt gets rank_llm's trailing
    ``"["`` and one forward pass reads the next-token log-probabilities of the window's
    identifiers (``A``, ``B``, ...: a template with ``identifiers: alpha``; each must be one token
    of the teacher's vocabulary). The window is reordered by them, highest first (ties keep the
    prompt order). The log-probabilities are kept with the window (``identifier_logprobs``, in
    prompt order), a soft listwise label for :class:`~rankdistill.losses.WindowKLDistillation` (loss ``window_kl``).
    rank_llm reads only the top 30 logprobs of the whole vocabulary and appends identifiers outside
    them in prompt order; here every identifier is read, so such tails are ordered by their
    logits too (the top of the window, which the logits do reach, is ordered the same).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from rankdistill.data.records import CandidateList
from rankdistill.errors import ConfigError
from rankdistill.teachers.backends.base import Prompt, TeacherBackend
from rankdistill.teachers.parsing import parse_permutation

MODES = ("generate", "first")
from rankdistill.teachers.prompts import PromptTemplate


@dataclass
class ListwiseConfig:
    window_size: int = 20
    stride: int = 10
    passes: int = 1
    rank_start: int = 0
    rank_end: int | None = 100  # null: the whole list
    direction: str = "back_to_front"  # back_to_front | front_to_back
    max_new_tokens: int | None = None  # default: the tokens of "[1] > [2] > ... > [w]" (rank_llm)
    # the teacher's context (tokens): passages shrink until prompt + answer fit, as rank_llm's
    # create_prompt does (needs the backend's tokenizer; a backend without one sends prompts as is)
    context_size: int | None = 4096
    # generate: decode the permutation | first: rank by the first identifier's logits (FIRST)
    mode: str = "generate"

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"must be one of {', '.join(MODES)}, got '{self.mode}'", "listwise.mode")
        if self.window_size < 2:
            raise ConfigError("must be >= 2", "listwise.window_size")
        if not 0 < self.stride <= self.window_size:
            raise ConfigError("must satisfy 0 < stride <= window_size", "listwise.stride")
        if self.passes < 1:
            raise ConfigError("must be >= 1", "listwise.passes")
        if self.direction not in ("back_to_front", "front_to_back"):
            raise ConfigError("must be back_to_front or front_to_back", "listwise.direction")
        if self.context_size is not None and self.context_size < 1:
            raise ConfigError("must be a positive number of tokens or null", "listwise.context_size")
        if self.rank_start < 0:
            raise ConfigError(f"must be >= 0, got {self.rank_start}", "listwise.rank_start")
        if self.rank_end is not None and self.rank_end <= self.rank_start:
            raise ConfigError(f"must be > rank_start ({self.rank_start}), got {self.rank_end}", "listwise.rank_end")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"must be >= 1, got {self.max_new_tokens}", "listwise.max_new_tokens")


def sliding_windows(
    num_candidates: int,
    window_size: int = 20,
    stride: int = 10,
    rank_start: int = 0,
    rank_end: int | None = None,
    direction: str = "back_to_front",
) -> list[tuple[int, int]]:
    """The ``(start, end)`` half-open windows of one pass, in call order.

    >>> sliding_windows(100)[:3], sliding_windows(100)[-1], len(sliding_windows(100))
    ([(80, 100), (70, 90), (60, 80)], (0, 20), 9)
    """
    end = num_candidates if rank_end is None else min(rank_end, num_candidates)
    start_limit = max(0, rank_start)
    if end - start_limit < 2:
        return []
    windows: list[tuple[int, int]] = []
    if direction == "back_to_front":
        e, s = end, max(end - window_size, start_limit)
        while True:
            windows.append((s, e))
            if s == start_limit:
                break
            e, s = e - stride, max(s - stride, start_limit)
            if e - s < 2:
                break
    elif direction == "front_to_back":
        s, e = start_limit, min(start_limit + window_size, end)
        while True:
            windows.append((s, e))
            if e == end:
                break
            s, e = s + stride, min(e + stride, end)
            if e - s < 2:
                break
    else:
        raise ConfigError(f"unknown direction '{direction}'", "listwise.direction")
    return windows


def list_key(docids: Sequence[str], config: ListwiseConfig) -> str:
    """Identifies one listwise job on one query: the input ranking and the window schedule."""
    payload = json.dumps(
        {"docids": list(docids), "window": config.window_size, "stride": config.stride, "passes": config.passes,
         "start": config.rank_start, "end": config.rank_end, "direction": config.direction,
         "context": config.context_size, **({"mode": config.mode} if config.mode != "generate" else {})},
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class WindowRecord:
    """One window call: what was shown, what came back, how it was repaired."""

    qid: str
    pass_index: int
    window_index: int
    start: int
    end: int
    docids_in: list[str]
    response: str
    ranking_out: list[str]
    repair: str
    n_out_of_range: int
    n_repeats: int
    n_missing: int
    ranking_after: list[str]
    mode: str = "generate"
    # mode first: log p(identifier of docids_in[i] | prompt + "["), in prompt order
    identifier_logprobs: list[float] | None = None


@dataclass
class ListwiseResult:
    candidates: CandidateList  # the final ranking (best first)
    windows: list[WindowRecord] = field(default_factory=list)
    list_key: str = ""


class _QueryState:
    def __init__(self, cl: CandidateList, schedule: list[tuple[int, int, int, int]], key: str):
        self.cl = cl
        self.ranking = list(cl.docids)
        self.by_id = {c.docid: c for c in cl.candidates}
        self.schedule = schedule
        self.step = 0
        self.records: list[WindowRecord] = []
        self.key = key

    @property
    def done(self) -> bool:
        return self.step >= len(self.schedule)

    def window(self) -> list[str]:
        _, _, start, end = self.schedule[self.step]
        return self.ranking[start:end]

    def apply(self, response: str, alpha: bool = False) -> None:
        pass_index, window_index, start, end = self.schedule[self.step]
        shown = self.ranking[start:end]
        parsed = parse_permutation(response, len(shown), alpha)
        reordered = [shown[i] for i in parsed.order]
        self.ranking[start:end] = reordered
        self.records.append(WindowRecord(
            qid=self.cl.qid, pass_index=pass_index, window_index=window_index, start=start, end=end,
            docids_in=shown, response=response, ranking_out=reordered, repair=parsed.kind,
            n_out_of_range=parsed.out_of_range, n_repeats=parsed.repeats, n_missing=parsed.missing,
            ranking_after=list(self.ranking),
        ))
        self.step += 1

    def apply_logprobs(self, logprobs: Sequence[float], names: Sequence[str]) -> None:
        """Mode ``first``: reorder the window by its identifiers' log-probabilities."""
        pass_index, window_index, start, end = self.schedule[self.step]
        shown = self.ranking[start:end]
        order = first_order(logprobs)
        reordered = [shown[i] for i in order]
        self.ranking[start:end] = reordered
        self.records.append(WindowRecord(
            qid=self.cl.qid, pass_index=pass_index, window_index=window_index, start=start, end=end,
            docids_in=shown, response=" > ".join(f"[{names[i]}]" for i in order), ranking_out=reordered,
            repair="ok", n_out_of_range=0, n_repeats=0, n_missing=0, ranking_after=list(self.ranking),
            mode="first", identifier_logprobs=[float(v) for v in logprobs],
        ))
        self.step += 1

    def result(self) -> ListwiseResult:
        return ListwiseResult(CandidateList(self.cl.query, [self.by_id[d] for d in self.ranking]), self.records, self.key)


def first_order(logprobs: Sequence[float]) -> list[int]:
    """Prompt positions by descending log-probability, ties in prompt order.

    >>> first_order([-2.0, -0.5, -2.0, -1.0])
    [1, 3, 0, 2]
    """
    return sorted(range(len(logprobs)), key=lambda i: -logprobs[i])


#: what rank_llm appends to a FIRST prompt before reading the first token's logits
FIRST_PROMPT_SUFFIX = "["


def output_token_budget(backend: TeacherBackend, window_size: int, template: PromptTemplate | None = None) -> int:
    """rank_llm's estimate: the tokens of ``[1] > [2] > ... > [w]`` (``[A] > ...`` when alpha)."""
    alpha = template is not None and template.alpha
    text = " > ".join(f"[{chr(ord('A') + i) if alpha else i + 1}]" for i in range(window_size))
    counted = backend.count_tokens(text)
    return counted if counted else 4 * window_size + 8


def check_first_mode(backend: TeacherBackend, template: PromptTemplate, window_size: int) -> None:
    """Before any call: mode ``first`` needs identifiers that are single tokens of the teacher's
    tokenizer (ConfigError naming the template otherwise). ``replay`` reads recorded identifiers
    (its optional tokenizer only fits prompts to the context): its recording is the check."""
    names = template.identifiers(window_size)
    if backend.tokenizer is not None and backend.name != "replay":
        from rankdistill.teachers.backends.hf import identifier_token_ids

        identifier_token_ids(backend.tokenizer, names, template.id)


def rerank_listwise(
    lists: Sequence[CandidateList],
    backend: TeacherBackend,
    template: PromptTemplate,
    config: ListwiseConfig | None = None,
) -> list[ListwiseResult]:
    """Rerank every list with sliding windows, all queries' windows advancing together."""
    config = config or ListwiseConfig()
    config.check()
    first = config.mode == "first"
    if first:
        check_first_mode(backend, template, config.window_size)
    states = []
    for cl in lists:
        windows = sliding_windows(len(cl), config.window_size, config.stride, config.rank_start,
                                  config.rank_end, config.direction)
        schedule = [(p, w, s, e) for p in range(config.passes) for w, (s, e) in enumerate(windows)]
        states.append(_QueryState(cl, schedule, list_key(cl.docids, config)))
    max_new = config.max_new_tokens or output_token_budget(backend, config.window_size, template)
    tokenizer = backend.tokenizer
    while True:
        active = [s for s in states if not s.done]
        if not active:
            break
        prompts = []
        for state in active:
            shown = state.window()
            passages = [state.by_id[d].contents for d in shown]
            if config.context_size and tokenizer is not None:
                text = template.fit_listwise(state.cl.query.text, passages, tokenizer, config.context_size).text
            else:
                text = template.listwise(state.cl.query.text, passages, tokenizer)
            prompts.append(Prompt(text + FIRST_PROMPT_SUFFIX if first else text, state.cl.qid, tuple(shown)))
        if first:
            # windows of one round may differ in size (a short list's last window): one call per size
            by_size: dict[int, list[int]] = {}
            for i, prompt in enumerate(prompts):
                by_size.setdefault(len(prompt.docids), []).append(i)
            for size, members in by_size.items():
                names = template.identifiers(size)
                rows = backend.identifier_logprobs([prompts[i] for i in members], names)
                for i, row in zip(members, rows, strict=True):
                    active[i].apply_logprobs(row, names)
        else:
            responses = backend.generate(prompts, max_new)
            for state, response in zip(active, responses, strict=True):
                state.apply(response, template.alpha)
    return [s.result() for s in states]
