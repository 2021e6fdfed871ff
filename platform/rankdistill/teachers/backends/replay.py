"""The ``replay`` backend: recorded teacher outputs, keyed by query id and the doc ids in prompt
order, so the orchestration can be tested exactly without an LLM.

The recording is JSON lines, one call per line: ``{"qid", "docids", "response"}`` for listwise
windows (e.g. ``teacher/rankvicuna-7b.bm25.windows.jsonl`` of the shared TREC-DL 2019 folder) and
``{"qid", "docids", "logprobs": {token: logprob}}`` for pairwise (docids ``[a, b]`` in prompt
order) and pointwise (``[docid]``) calls, and for listwise windows in mode ``first`` (the window's
docids in prompt order, ``logprobs`` keyed by identifier: ``{"A": -0.3, "B": -2.1, ...}``). Every key presented is remembered in :attr:`presented`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rankdistill.errors import ConfigError, DataFormatError, TeacherOutputError
from rankdistill.teachers.backends.base import BackendConfig, Prompt, TeacherBackend, as_prompts

Key = tuple[str, tuple[str, ...]]


def read_recording(path: str | Path) -> tuple[dict[Key, str], dict[Key, dict[str, float]]]:
    responses: dict[Key, str] = {}
    logprobs: dict[Key, dict[str, float]] = {}
    from rankdistill.storage import is_uri

    if is_uri(path):  # a recording in object storage, read by whichever node holds the actor
        import io

        from rankdistill.storage import filesystem

        fs, inner = filesystem(path)
        with fs.open_input_stream(inner) as stream:
            opened = io.StringIO(stream.read().decode("utf-8-sig"))
    else:
        opened = open(path, encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    with opened as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"bad JSON ({exc.msg})", path, line_no) from None
            if not isinstance(obj, dict) or "qid" not in obj or not isinstance(obj.get("docids"), list):
                raise DataFormatError("a recording line needs 'qid' and 'docids' (a list)", path, line_no)
            key = (str(obj["qid"]), tuple(str(d) for d in obj["docids"]))
            if "response" in obj:
                if key in responses and responses[key] != obj["response"]:
                    raise DataFormatError(f"two different responses recorded for {key}", path, line_no)
                responses[key] = str(obj["response"])
            elif isinstance(obj.get("logprobs"), dict):
                logprobs[key] = {str(k): float(v) for k, v in obj["logprobs"].items()}
            else:
                raise DataFormatError("a recording line needs 'response' or 'logprobs'", path, line_no)
    return responses, logprobs


class ReplayBackend(TeacherBackend):
    name = "replay"

    def __init__(self, config: BackendConfig):
        super().__init__()
        if not config.replay_file:
            raise ConfigError("the replay backend needs replay_file", "teacher.backend.replay_file")
        self.path = config.replay_file
        self.responses, self.logprobs = read_recording(config.replay_file)
        self.strict = config.replay_strict
        self.presented: list[Key] = []
        if config.tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)

    @property
    def description(self) -> str:
        return f"replay:{self.path}"

    def _key(self, prompt: Prompt) -> Key:
        key = (prompt.qid, tuple(prompt.docids))
        self.presented.append(key)
        return key

    def generate(self, prompts: Sequence[Prompt | str], max_new_tokens: int) -> list[str]:
        items = as_prompts(prompts)
        self._count(items)
        out = []
        for prompt in items:
            key = self._key(prompt)
            if key not in self.responses:
                if self.strict:
                    raise TeacherOutputError(
                        f"{self.path}: no recorded response for query '{key[0]}' and window {list(key[1])}"
                    )
                out.append("")
            else:
                out.append(self.responses[key])
        return out

    def token_logprobs(self, prompts: Sequence[Prompt | str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        items = as_prompts(prompts)
        self._count(items)
        out = []
        for prompt in items:
            key = self._key(prompt)
            recorded = self.logprobs.get(key)
            if recorded is None or not all(t in recorded for t in candidate_tokens):
                raise TeacherOutputError(
                    f"{self.path}: no recorded logprobs of {list(candidate_tokens)} for query '{key[0]}', "
                    f"documents {list(key[1])}"
                )
            out.append({t: recorded[t] for t in candidate_tokens})
        return out

    def identifier_logprobs(self, prompts: Sequence[Prompt | str], identifiers: Sequence[str]) -> list[list[float]]:
        rows = self.token_logprobs(prompts, identifiers)
        return [[row[name] for name in identifiers] for row in rows]
