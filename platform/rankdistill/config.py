"""Dataclass configs loaded from YAML with ``key.sub=value`` overrides; unknown keys are errors.

Every job has one top-level dataclass (e.g. :class:`rankdistill.workflows.evaluate.EvaluateConfig`)
whose fields are plain values or nested dataclasses. :func:`load_config` builds it from a YAML
file plus command-line overrides, checking every key and coercing every value to the field's type.
A dataclass whose keys were renamed lists them in a ``RENAMED_KEYS`` class variable
(``{"first_stage": "method"}``): an old key is an error naming the new one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from rankdistill.errors import ConfigError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str, path: str | None) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError("may not be null", key, path)
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping for {tp.__name__}, got {value!r}", key, path)
        return _build(tp, value, key, path)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", key, path)
        items = [_coerce(v, item_tp, f"{key}[{i}]", path) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key, path)
        return dict(value)
    if typing.get_origin(tp) is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"must be one of {list(allowed)}, got {value!r}", key, path)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"expected true/false, got {value!r}", key, path)
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"expected {tp.__name__}, got {value!r}", key, path)
        try:
            number = tp(value) if not isinstance(value, str) else tp(float(value)) if tp is int else tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected {tp.__name__}, got {value!r}", key, path) from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"expected an integer, got {value!r}", key, path)
        if tp is float and not math.isfinite(number):
            raise ConfigError(f"expected a finite number, got {value!r}", key, path)
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"expected a string, got {value!r}", key, path)
        return str(value)
    return value


def _build(cls: type[T], values: dict[str, Any], prefix: str, path: str | None) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            renamed = getattr(cls, "RENAMED_KEYS", {}).get(name)  # a dataclass's {old key: new key}
            if renamed is not None:
                new = f"{prefix}.{renamed}" if prefix else renamed
                raise ConfigError(f"renamed: {key} is now {new}", key, path)
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key (known keys here: {known})", key, path)
        kwargs[name] = _coerce(value, hints[name], key, path)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(str(exc), prefix or cls.__name__, path) from None
    except ConfigError as exc:
        if exc.path is not None:
            raise
        # a dataclass's own check (``__post_init__``) names its field; put it under its section
        # (a check that already names its own section, ``training.max_steps``, is not prefixed twice)
        section = prefix.rsplit(".", 1)[-1]
        if prefix and exc.key and exc.key.startswith(f"{section}."):
            key = f"{prefix}{exc.key[len(section):]}"
        else:
            key = f"{prefix}.{exc.key}" if prefix and exc.key else exc.key or prefix or None
        raise ConfigError(exc.problem, key, path) from None


def check_range(key: str, value: float | None, minimum: float | None = None, maximum: float | None = None,
                above: float | None = None) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``value`` (``None`` passes: "unset") lies in
    ``[minimum, maximum]`` (and ``> above``). Config dataclasses call it from ``__post_init__``
    with their own field name; :func:`load_config` prefixes the section (``retrieval.k``)."""
    if value is None:
        return
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum:g}, got {value!r}", key)
    if above is not None and not value > above:
        raise ConfigError(f"must be > {above:g}, got {value!r}", key)
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be <= {maximum:g}, got {value!r}", key)


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}, got {value!r}", key)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set a sub-key of a non-mapping value {child!r}", dotted)
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=3"`` → ``("a.b", 3)``; the value is parsed as YAML (so ``true``, ``[1,2]``, ``null`` work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from an optional YAML file and ``key.sub=value`` overrides."""
    tree: dict[str, Any] = {}
    source = str(path) if path else None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError("config file does not exist", path=source) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"bad YAML{where}: {exc}", path=source) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("top level must be a mapping", path=source)
        tree = loaded or {}
    given: dict[str, str] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        try:
            _set_dotted(tree, key, value)
        except ConfigError as exc:
            raise ConfigError(exc.problem, exc.key, f"command-line override '{item}'") from None
        given[key] = item
    try:
        return _build(cls, tree, "", source)
    except ConfigError as exc:
        item = _override_of(exc.key, given)
        if item is None:
            raise
        raise ConfigError(exc.problem, exc.key, f"command-line override '{item}'") from None


def _override_of(key: str | None, given: dict[str, str]) -> str | None:
    """The command-line override that set ``key`` (or a mapping above it, or a value below it)."""
    if not key:
        return None
    for dotted, item in reversed(list(given.items())):
        if key == dotted or key.startswith((f"{dotted}.", f"{dotted}[")) or dotted.startswith(f"{key}."):
            return item
    return None


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (what is logged and saved as YAML)."""
    return dataclasses.asdict(config)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
