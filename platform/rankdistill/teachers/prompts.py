"""Prompt templates as data: one YAML file per template under ``teachers/templates/``.

A template names its ``id``, ``version`` and ``kind`` (listwise, pairwise, pointwise) and holds the
exact text the teacher model was trained on, including its chat format. Its :attr:`~PromptTemplate.hash`
is the SHA-256 of the canonical content (every field that changes a prompt or a label, not the
description), so the label store can tell labels of different prompts apart.

Fields (all strings are used verbatim; ``{name}`` placeholders are substituted in one pass, so
braces inside passages never expand):

``chat``
    how the conversation becomes one string: ``none`` (the user text as is: T5 models), ``tokenizer``
    (the serving model's own chat template), or a mapping of per-role formats with ``{content}``:
    ``system``, ``user``, ``assistant`` and ``generation`` (what opens the model's turn).
``system``
    the system message (optional).
``style`` (listwise)
    ``single_turn``: one user turn ``prefix`` + ``passage`` × n + ``suffix``; ``multi_turn``
    (RankGPT): ``prefix``/``prefix_assistant``, then per passage ``passage``/``passage_assistant``,
    then ``suffix``. Placeholders: ``{num}``, ``{query}``, ``{rank}``, ``{passage}``.
``user`` (pairwise / pointwise)
    the user text with ``{query}`` and ``{doc_a}``/``{doc_b}`` or ``{document}``.
``label_tokens``
    pairwise ``{first, second}`` (the answer meaning "the first-shown passage wins" and the other),
    pointwise ``{yes, no}``.
``truncation``
    ``{unit: words|tokens, max: N}`` per passage (tokens of the serving model's tokenizer).
``text_fix``
    ``none`` or ``rankllm`` (what rank_llm's ``ftfy.fix_text`` does to MS MARCO text, without ftfy:
    see :func:`fix_text_rankllm`).
``replace_bracket_numbers``
    rank_llm's ``[12]`` → ``(12)`` in passages and query, so identifiers stay unambiguous.
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from rankdistill.errors import ConfigError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
KINDS = ("listwise", "pairwise", "pointwise")
_DOC_FIELDS = ("description", "source")
_KNOWN_FIELDS = {
    "id", "version", "kind", "description", "source", "style", "chat", "system", "prefix",
    "prefix_assistant", "passage", "passage_assistant", "suffix", "user", "label_tokens",
    "truncation", "text_fix", "replace_bracket_numbers",
}
_LABEL_KEYS = {"pairwise": ("first", "second"), "pointwise": ("yes", "no")}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def substitute(text: str, values: Mapping[str, Any]) -> str:
    """Replace ``{name}`` for the names in ``values`` only, in one pass (no re-expansion)."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


# ---------------------------------------------------------------------------------------------
# Text normalisation (rank_llm applies ftfy.fix_text to the whole prompt)
# ---------------------------------------------------------------------------------------------
_CP1252_BYTE: dict[str, int] = {}
for _b in range(0x80, 0x100):
    _CP1252_BYTE[chr(_b)] = _b
    try:
        _CP1252_BYTE[bytes([_b]).decode("cp1252")] = _b
    except UnicodeDecodeError:
        pass
_CONTINUATION = "".join(re.escape(c) for c, b in _CP1252_BYTE.items() if 0x80 <= b <= 0xBF)
_MOJIBAKE = re.compile(f"[\u00c2-\u00f4](?:[{_CONTINUATION}])+")
_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
              "\ufb05": "st", "\ufb06": "st"}
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")


def _undo_mojibake(match: re.Match) -> str:
    text = match.group(0)
    for end in range(len(text), 1, -1):
        try:
            return bytes(_CP1252_BYTE[c] for c in text[:end]).decode("utf-8") + text[end:]
        except (UnicodeDecodeError, KeyError):
            continue
    return text


def fix_text_rankllm(text: str) -> str:
    """The parts of ``ftfy.fix_text`` (ftfy's defaults) that matter for MS MARCO passages, with no
    dependency on ftfy: HTML entities (lines without ``<``), UTF-8 read as Windows-1252/Latin-1
    (e.g. ``â€”`` → ``—``), byte-order marks, U+2028/9 line separators, Latin ligatures, curly quotes
    → straight, NFC. ftfy decides some mixed cases by a badness heuristic; on the 387 recorded DL19
    RankVicuna prompts this reproduces all but a handful byte for byte (tested)."""
    text = "\n".join(
        line if "<" in line else _HTML_ENTITY.sub(lambda m: html.unescape(m.group(0)), line)
        for line in text.split("\n")
    )
    previous = None
    while previous != text:
        previous, text = text, _MOJIBAKE.sub(_undo_mojibake, text)
    text = text.replace("\ufeff", "").replace("\u2028", "\n").replace("\u2029", "\n")
    for ligature, plain in _LIGATURES.items():
        text = text.replace(ligature, plain)
    text = _SINGLE_QUOTES.sub("'", text)
    text = _DOUBLE_QUOTES.sub('"', text)
    return unicodedata.normalize("NFC", text)


TEXT_FIXES: dict[str, Callable[[str], str]] = {"none": lambda s: s, "rankllm": fix_text_rankllm}
_BRACKET_NUMBER = re.compile(r"\[(\d+)\]")


def replace_bracket_numbers(text: str) -> str:
    return _BRACKET_NUMBER.sub(r"(\1)", text)


@dataclass(frozen=True)
class Truncation:
    unit: str = "words"  # words | tokens
    max: int | None = 300

    def apply(self, text: str, tokenizer: Any = None) -> str:
        if self.max is None:
            return text
        if self.unit == "words":
            return " ".join(text.split()[: self.max])
        if tokenizer is None:
            raise ConfigError(
                "token truncation needs the serving model's tokenizer (this backend has none: "
                "give backend.tokenizer, or use truncation unit 'words')", "teacher.template"
            )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max:
            return text
        return tokenizer.decode(ids[: self.max], skip_special_tokens=True).strip()


@dataclass(frozen=True)
class PromptTemplate:
    """A validated template; render with :meth:`listwise`, :meth:`pairwise`, :meth:`pointwise`."""

    content: dict[str, Any] = field(repr=False)
    path: str | None = None

    # -- identity -------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return str(self.content["id"])

    @property
    def version(self) -> int:
        return int(self.content["version"])

    @property
    def kind(self) -> str:
        return str(self.content["kind"])

    @cached_property
    def canonical(self) -> str:
        """The content that defines prompts and labels, as sorted-key JSON."""
        core = {k: v for k, v in self.content.items() if k not in _DOC_FIELDS}
        return json.dumps(core, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical.encode("utf-8")).hexdigest()[:16]

    @property
    def label_tokens(self) -> dict[str, str]:
        return dict(self.content.get("label_tokens") or {})

    @property
    def truncation(self) -> Truncation:
        t = self.content.get("truncation") or {}
        return Truncation(unit=t.get("unit", "words"), max=t.get("max"))

    @property
    def needs_tokenizer(self) -> bool:
        return self.truncation.unit == "tokens" or self.content.get("chat") == "tokenizer"

    # -- rendering ------------------------------------------------------------------------------
    def _clean(self, text: str, tokenizer: Any = None) -> str:
        text = self.truncation.apply(text.strip(), tokenizer)
        if self.content.get("replace_bracket_numbers"):
            text = replace_bracket_numbers(text)
        return text

    def _query(self, query: str) -> str:
        return replace_bracket_numbers(query) if self.content.get("replace_bracket_numbers") else query

    def _chat(self, messages: list[tuple[str, str]], tokenizer: Any = None) -> str:
        chat = self.content.get("chat", "none")
        if chat == "none":
            text = "".join(content for role, content in messages if role == "user")
        elif chat == "tokenizer":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ConfigError(
                    f"template '{self.id}' uses the model's chat template, but the backend's tokenizer "
                    "has none", "teacher.template"
                )
            text = tokenizer.apply_chat_template(
                [{"role": r, "content": c} for r, c in messages], tokenize=False, add_generation_prompt=True
            )
        else:
            text = "".join(substitute(chat[role], {"content": content}) for role, content in messages)
            text += chat.get("generation", "")
        return TEXT_FIXES[self.content.get("text_fix", "none")](text)

    def _with_system(self, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        system = self.content.get("system")
        return ([("system", system)] if system else []) + turns

    def listwise(self, query: str, passages: Sequence[str], tokenizer: Any = None) -> str:
        self._expect("listwise")
        c = self.content
        q = self._query(query)
        num = len(passages)
        texts = [self._clean(p, tokenizer) for p in passages]
        if c.get("style", "single_turn") == "single_turn":
            body = substitute(c["prefix"], {"num": num, "query": q})
            for rank, text in enumerate(texts, start=1):
                body += substitute(c["passage"], {"rank": rank, "passage": text})
            body += substitute(c["suffix"], {"num": num, "query": q})
            turns = [("user", body)]
        else:
            turns = [("user", substitute(c["prefix"], {"num": num, "query": q})),
                     ("assistant", substitute(c["prefix_assistant"], {"num": num, "query": q}))]
            for rank, text in enumerate(texts, start=1):
                turns.append(("user", substitute(c["passage"], {"rank": rank, "passage": text})))
                turns.append(("assistant", substitute(c["passage_assistant"], {"rank": rank})))
            turns.append(("user", substitute(c["suffix"], {"num": num, "query": q})))
        return self._chat(self._with_system(turns), tokenizer)

    def pairwise(self, query: str, doc_a: str, doc_b: str, tokenizer: Any = None) -> str:
        self._expect("pairwise")
        user = substitute(self.content["user"], {
            "query": self._query(query), "doc_a": self._clean(doc_a, tokenizer), "doc_b": self._clean(doc_b, tokenizer),
        })
        return self._chat(self._with_system([("user", user)]), tokenizer)

    def pointwise(self, query: str, document: str, tokenizer: Any = None) -> str:
        self._expect("pointwise")
        user = substitute(self.content["user"], {"query": self._query(query), "document": self._clean(document, tokenizer)})
        return self._chat(self._with_system([("user", user)]), tokenizer)

    def _expect(self, kind: str) -> None:
        if self.kind != kind:
            raise ConfigError(f"template '{self.id}' is {self.kind}, not {kind}", "teacher.template")


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_template(content: dict[str, Any], where: str) -> None:
    def bad(problem: str, key: str | None = None):
        raise ConfigError(problem, key, where)

    unknown = set(content) - _KNOWN_FIELDS
    if unknown:
        bad(f"unknown template fields {sorted(unknown)} (known: {sorted(_KNOWN_FIELDS)})")
    for key in ("id", "version", "kind"):
        if key not in content:
            bad("missing field", key)
    kind = content["kind"]
    if kind not in KINDS:
        bad(f"must be one of {list(KINDS)}, got {kind!r}", "kind")
    chat = content.get("chat", "none")
    if not (chat in ("none", "tokenizer") or (isinstance(chat, dict) and "user" in chat)):
        bad("must be 'none', 'tokenizer' or a mapping with at least a 'user' format", "chat")
    if isinstance(chat, dict) and content.get("system") and "system" not in chat:
        bad("a system message needs a 'system' format", "chat")
    if content.get("text_fix", "none") not in TEXT_FIXES:
        bad(f"must be one of {list(TEXT_FIXES)}", "text_fix")
    trunc = content.get("truncation") or {}
    if trunc.get("unit", "words") not in ("words", "tokens"):
        bad("must be 'words' or 'tokens'", "truncation.unit")
    if trunc.get("max") is not None and (not isinstance(trunc["max"], int) or trunc["max"] < 1):
        bad("must be a positive integer or null", "truncation.max")
    if kind == "listwise":
        style = content.get("style", "single_turn")
        needed = ("prefix", "passage", "suffix") + (
            ("prefix_assistant", "passage_assistant") if style == "multi_turn" else ())
        if style not in ("single_turn", "multi_turn"):
            bad("must be single_turn or multi_turn", "style")
        if style == "multi_turn" and isinstance(chat, dict) and "assistant" not in chat:
            bad("multi_turn needs an 'assistant' format", "chat")
    else:
        needed = ("user",)
        keys = _LABEL_KEYS[kind]
        tokens = content.get("label_tokens") or {}
        if set(tokens) != set(keys) or not all(isinstance(tokens[k], str) and tokens[k] for k in keys):
            bad(f"{kind} templates need label_tokens with exactly {list(keys)}", "label_tokens")
    for key in needed:
        if not isinstance(content.get(key), str):
            bad("missing or not a string", key)


def template_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = TEMPLATE_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(
        f"unknown template '{name_or_path}' (shipped: {', '.join(available_templates())}; or a path to a YAML file)",
        "teacher.template",
    )


def available_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))


def load_template(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> PromptTemplate:
    """A shipped template by name (``rankzephyr``) or a YAML path; ``overrides`` (e.g.
    ``{"chat": "tokenizer", "truncation": {"max": 64}}``) change the content, and so the hash."""
    path = template_path(name_or_path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad YAML: {exc}", path=path) from None
    if not isinstance(content, dict):
        raise ConfigError("a template must be a mapping", path=path)
    if overrides:
        content = _merge(content, overrides)
    validate_template(content, str(path))
    return PromptTemplate(content, str(path))
