"""Typed configs: dataclasses loaded from YAML and overridden with ``key=value`` strings.

Unknown keys are errors (a typo must not silently fall back to a default). Values are
parsed as YAML scalars (``videos=8``, ``fps=29.97``, ``name=foo``) and checked against
the field's type. Nested dataclasses take dotted keys (``synth.videos=8``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's fields."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def apply_overrides(config: T, overrides: list[str]) -> T:
    """Return a copy of ``config`` with ``key=value`` overrides applied (dotted keys for nesting)."""
    data = dataclasses.asdict(config)  # type: ignore[call-overload]
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {key!r}; known: {', '.join(sorted(node))}")
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return from_dict(type(config), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: T | None = None) -> T:
    """``base`` (or ``cls()``), updated from the YAML file at ``path``, then from ``overrides``."""
    config = base if base is not None else cls()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        merged = dataclasses.asdict(config)  # type: ignore[call-overload]
        _deep_update(merged, data)
        config = from_dict(cls, merged, str(path))
    return apply_overrides(config, overrides or [])


def _deep_update(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_update(into[k], v)
        else:
            into[k] = v


def to_yaml(config: Any) -> str:
    """The resolved config as YAML, to save next to a run's outputs."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
