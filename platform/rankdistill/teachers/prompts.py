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
``passage_fix``
    ``none`` or ``ftfy``: applied to each passage after stripping, before truncation (rank_llm
    0.26's ``_convert_doc_to_prompt_content``), so it changes the messages themselves.
``text_fix``
    ``none`` or ``ftfy``: applied to the whole rendered prompt string (rank_llm 0.0.5's
    ``create_prompt``, and 0.26's for local models after the chat template).
``replace_bracket_numbers``
    rank_llm's ``[12]`` → ``(12)`` in passages and query, so identifiers stay unambiguous.
``identifiers`` (listwise)
    ``numeric`` (``[1]``, ``[2]``, ...; the default) or ``alpha`` (``[A]``, ``[B]``, ...: rank_llm's
    ``use_alpha``, which FIRST's single-token decoding needs; at most 26 passages a window).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
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
    "truncation", "text_fix", "passage_fix", "replace_bracket_numbers", "identifiers",
}
IDENTIFIERS = ("numeric", "alpha")
#: rank_llm's ``ALPH_START_IDX``: passage ``rank`` (1-based) is ``chr(ALPH_START + rank)``
ALPH_START = ord("A") - 1
MAX_ALPHA_WINDOW = 26
_LABEL_KEYS = {"pairwise": ("first", "second"), "pointwise": ("yes", "no")}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def substitute(text: str, values: Mapping[str, Any]) -> str:
    """Replace ``{name}`` for the names in ``values`` only, in one pass (no re-expansion)."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


# ---------------------------------------------------------------------------------------------
# Text normalisation: rank_llm runs ftfy.fix_text (ftfy's defaults) on every passage (0.26) and on
# the whole chat prompt (0.0.5 and 0.26's local models); ftfy repairs MS MARCO's mojibake
# (``â€”`` → ``—``), HTML entities, curly quotes, ligatures, and normalises to NFC.
# ---------------------------------------------------------------------------------------------
def _ftfy(text: str) -> str:
    import ftfy

    return ftfy.fix_text(text)


TEXT_FIXES: dict[str, Callable[[str], str]] = {"none": lambda s: s, "ftfy": _ftfy}
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
    def alpha(self) -> bool:
        """Identifiers are letters (``[A]``...), rank_llm's ``use_alpha``."""
        return self.content.get("identifiers", "numeric") == "alpha"

    def identifier(self, rank: int) -> str:
        """The identifier of the passage shown ``rank``-th (1-based): ``"3"`` or ``"C"``."""
        return chr(ALPH_START + rank) if self.alpha else str(rank)

    def identifiers(self, window: int) -> list[str]:
        """The identifiers of a window of ``window`` passages, in prompt order."""
        if self.alpha and window > MAX_ALPHA_WINDOW:
            raise ConfigError(f"template '{self.id}' names passages [A]..[Z]: a window holds at most "
                              f"{MAX_ALPHA_WINDOW} passages, not {window}", "listwise.window_size")
        return [self.identifier(r) for r in range(1, window + 1)]

    @property
    def needs_tokenizer(self) -> bool:
        return self.truncation.unit == "tokens" or self.content.get("chat") == "tokenizer"

    # -- rendering ------------------------------------------------------------------------------
    def _clean(self, text: str, tokenizer: Any = None, max_words: int | None = None) -> str:
        """rank_llm's order: strip, passage fix, truncate, ``[n]`` → ``(n)``; ``max_words``
        overrides the template's word budget (the context-fitting loop lowers it)."""
        text = TEXT_FIXES[self.content.get("passage_fix", "none")](text.strip())
        truncation = self.truncation if max_words is None else Truncation("words", max_words)
        text = truncation.apply(text, tokenizer)
        if self.content.get("replace_bracket_numbers"):
            text = replace_bracket_numbers(text)
        return text

    def _query(self, query: str) -> str:
        return replace_bracket_numbers(query) if self.content.get("replace_bracket_numbers") else query

    def render(self, messages: Sequence[Mapping[str, str]], tokenizer: Any = None) -> str:
        """Chat messages (``[{"role", "content"}]``) as the one prompt string the model reads:
        the template's chat format (or the tokenizer's chat template), then ``text_fix``."""
        chat = self.content.get("chat", "none")
        if chat == "none":
            text = "".join(m["content"] for m in messages if m["role"] == "user")
        elif chat == "tokenizer":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ConfigError(
                    f"template '{self.id}' uses the model's chat template, but the backend's tokenizer "
                    "has none", "teacher.template"
                )
            text = tokenizer.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in messages], tokenize=False,
                add_generation_prompt=True,
            )
        else:
            text = "".join(substitute(chat[m["role"]], {"content": m["content"]}) for m in messages)
            text += chat.get("generation", "")
        return TEXT_FIXES[self.content.get("text_fix", "none")](text)

    def _chat(self, messages: list[tuple[str, str]], tokenizer: Any = None) -> str:
        return self.render(_as_messages(messages), tokenizer)

    def _with_system(self, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        system = self.content.get("system")
        return ([("system", system)] if system else []) + turns

    def listwise(self, query: str, passages: Sequence[str], tokenizer: Any = None,
                 max_words: int | None = None) -> str:
        """The prompt string for one window (``passages`` in prompt order [1]..[n])."""
        return self.render(self.listwise_messages(query, passages, tokenizer, max_words), tokenizer)

    def listwise_messages(self, query: str, passages: Sequence[str], tokenizer: Any = None,
                          max_words: int | None = None) -> list[dict[str, str]]:
        """The chat messages of one window, as rank_llm's inference handlers build them
        (``[{"role": "system"|"user"|"assistant", "content": ...}]``; no text_fix yet)."""
        self._expect("listwise")
        c = self.content
        q = self._query(query)
        num = len(passages)
        texts = [self._clean(p, tokenizer, max_words) for p in passages]
        names = self.identifiers(num)
        if c.get("style", "single_turn") == "single_turn":
            body = substitute(c["prefix"], {"num": num, "query": q})
            for name, text in zip(names, texts, strict=True):
                body += substitute(c["passage"], {"rank": name, "passage": text})
            body += substitute(c["suffix"], {"num": num, "query": q})
            turns = [("user", body)]
        else:
            turns = [("user", substitute(c["prefix"], {"num": num, "query": q})),
                     ("assistant", substitute(c["prefix_assistant"], {"num": num, "query": q}))]
            for name, text in zip(names, texts, strict=True):
                turns.append(("user", substitute(c["passage"], {"rank": name, "passage": text})))
                turns.append(("assistant", substitute(c["passage_assistant"], {"rank": name})))
            turns.append(("user", substitute(c["suffix"], {"num": num, "query": q})))
        return _as_messages(self._with_system(turns))

    def fit_listwise(self, query: str, passages: Sequence[str], tokenizer: Any, context_size: int) -> FittedPrompt:
        """rank_llm's ``create_prompt`` loop: render with the template's word budget (300), count
        the prompt's tokens with the teacher's tokenizer (``tokenizer.encode``, special tokens
        included) and, while they exceed ``context_size − num_output_tokens(window)``, lower the
        budget by ``max(1, overflow // (window · 4))`` words per passage.

        Raises ConfigError when even one-word passages do not fit (rank_llm would loop forever)."""
        start = self.truncation
        if start.unit != "words" or start.max is None:
            raise ConfigError(
                f"fitting prompts to the context lowers a per-passage word budget; template '{self.id}' "
                f"truncates by {start.unit} (max {start.max})", "teacher.template.truncation",
            )
        window = len(passages)
        budget = context_size - num_output_tokens(tokenizer, window, self.alpha)
        max_words, tried = start.max, []
        while True:
            tried.append(max_words)
            text = self.listwise(query, passages, tokenizer, max_words)
            num_tokens = len(tokenizer.encode(text))
            if num_tokens <= budget:
                return FittedPrompt(text, num_tokens, tried)
            max_words -= max(1, (num_tokens - budget) // (window * 4))
            if max_words < 1:
                raise ConfigError(
                    f"a window of {window} passages does not fit context_size {context_size} even with "
                    f"1-word passages ({num_tokens} tokens, budget {budget}): raise it or shrink the window",
                    "listwise.context_size",
                )

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


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt fitted to the context: its text, its token count and every word budget tried."""

    text: str
    num_tokens: int
    max_words_tried: list[int]


def num_output_tokens(tokenizer: Any, window: int, alpha: bool = False) -> int:
    """rank_llm's estimate of the answer's length: the tokens of ``[1] > [2] > ... > [window]``
    (``[A] > [B] > ...`` with alphabetic identifiers)."""
    text = " > ".join(f"[{chr(ALPH_START + i + 1) if alpha else i + 1}]" for i in range(window))
    return len(tokenizer.encode(text, add_special_tokens=False))


def _as_messages(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


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
    for key in ("text_fix", "passage_fix"):
        if content.get(key, "none") not in TEXT_FIXES:
            bad(f"must be one of {list(TEXT_FIXES)}", key)
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
        if content.get("identifiers", "numeric") not in IDENTIFIERS:
            bad(f"must be one of {list(IDENTIFIERS)}", "identifiers")
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
