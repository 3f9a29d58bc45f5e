"""Typed configs: dataclasses loaded from YAML and overridden with ``key=value`` strings.

Unknown keys are errors (a typo must not silently fall back to a default). Values are
parsed as YAML scalars (``videos=8``, ``fps=29.97``, ``name=foo``) and checked against
the field's type. Nested dataclasses take dotted keys (``synth.videos=8``); so do fields
typed as a mapping (``dict[str, ...]``), which take new keys too (``flow.options.warps=3``):
what their keys mean is for the owning dataclass to check. Floats are
read as YAML 1.2 reads them: ``1e-3`` is a float (PyYAML's YAML 1.1 makes it a string).
Each config's own ``__post_init__`` checks ranges (see :func:`check_range`); whatever it
refuses comes out as a ConfigError, as do unreadable files and YAML that does not parse.
YAML is read within bounds, as it may come from others (a run's config.yaml, a sweep's
state): at most ``MAX_YAML_BYTES``, and at most ``MAX_YAML_NODES`` values once its
aliases are expanded, none of them recursive. Anchors and merge keys as people write
them pass; a few hundred bytes of nested aliases ("billion laughs", billions of values
to every reader that walks them) do not.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import InputError

T = TypeVar("T")

# Where every command that trains, lists or evaluates runs looks unless told otherwise
# (--runs, runs=): the demo's and the localization demo's runs too.
RUNS_FOLDER = "./finegym_runs"
MAX_YAML_BYTES = 1 << 20  # configs are a few KB
MAX_YAML_NODES = 100_000  # values, aliases expanded; a config has a few hundred


class ConfigError(InputError):
    """A config file or override that does not fit the config's fields."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot (``1e-3``, ``5E+4``) and
    refuses documents beyond ``MAX_YAML_NODES``."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _count_expanded(node, {})
        return self.construct_document(node)


def _count_expanded(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """The values under ``node`` with every alias written out, counted once per node
    (``sizes``: id -> count, None while it is being counted); yaml.YAMLError beyond
    MAX_YAML_NODES or for an alias inside its own anchor."""
    key = id(node)
    if key in sizes:
        if sizes[key] is None:
            raise yaml.YAMLError("a recursive alias (an anchor that holds an alias to itself)")
        return sizes[key]
    sizes[key] = None
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    count = 1 + sum(_count_expanded(child, sizes) for child in children)
    if count > MAX_YAML_NODES:
        raise yaml.YAMLError(f"more than {MAX_YAML_NODES} values once its aliases are expanded "
                             f"(nested aliases that multiply: refused)")
    sizes[key] = count
    return count


# Added after PyYAML's own resolvers, so only scalars that were strings before change:
# digits with an exponent and no dot. Integers and YAML 1.1 floats resolve as before.
# (add_implicit_resolver copies the table for the subclass: SafeLoader is untouched.)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)[eE][0-9]+$"), list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """``text`` as YAML (safe types only, YAML 1.2 floats, within the bounds of the
    module docstring); raises yaml.YAMLError."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"{len(text)} characters, more than the {MAX_YAML_BYTES} a YAML file here may hold")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError, IndexError) as e:
        # PyYAML's constructors raise these for an explicit tag on a value that does
        # not fit it ("!!int x", "!!int ''"): bad input like any other YAML error.
        raise yaml.constructor.ConstructorError(None, None, f"cannot read {text!r}: {e}") from None


def parse_recorded_yaml(text: str, where: str) -> Any:
    """``text``, a YAML file read back from disk or a bucket (``where`` names it: a run's
    config.yaml, demo.yaml), parsed within :func:`parse_yaml`'s bounds; a ConfigError
    naming ``where`` when it does not parse or exceeds them."""
    try:
        return parse_yaml(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{where}: not a YAML file this project wrote: {' '.join(str(e).split())[:300]}") from None


def check_range(problems: list[str], name: str, value: Any, *, gt: float | None = None, ge: float | None = None,
                lt: float | None = None, le: float | None = None, optional: bool = False) -> None:
    """Append a message to ``problems`` unless ``value`` is a finite number within the
    bounds given (``gt`` >, ``ge`` >=, ``lt`` <, ``le`` <=); ``optional``: None passes too.

    NaN fails every comparison, so a check written as ``if value <= 0: refuse`` lets it
    through; this one refuses NaN and inf whatever the bounds.
    """
    if value is None and optional:
        return
    bounds = [f"{op} {b}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = (number and (isinstance(value, int) or math.isfinite(value))
          and (gt is None or value > gt) and (ge is None or value >= ge)
          and (lt is None or value < lt) and (le is None or value <= le))
    if not ok:
        what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        problems.append(f"{name} must be {what}{' or null' if optional else ''}, got {value!r}")


# The one grammar of the names that name a folder (runs, sweeps): one plain folder name,
# never a path ("/", "\\", "..", absolute), a hidden file or an option ("-x"), and the
# same on every file system and in S3 keys.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_MAX_CHARS = 100


def check_name(problems: list[str], key: str, value: Any, *, max_chars: int = NAME_MAX_CHARS) -> None:
    """Append a message to ``problems`` unless ``value`` is "" (the config's default
    name) or a folder name of the one grammar: 1 to ``max_chars`` characters of A-Z,
    a-z, 0-9, '.', '_' and '-', the first a letter or digit, no '..'."""
    if value == "":
        return
    if (not isinstance(value, str) or _FOLDER_NAME.fullmatch(value) is None or ".." in value
            or len(value) > max_chars):
        problems.append(f"{key} must be one plain folder name (1 to {max_chars} characters of A-Z, a-z, 0-9, "
                        f"'.', '_' and '-', the first a letter or digit, no '..'), got {value!r}")


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
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value} is too large for a float") from None
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def _guess(unknown: str, known) -> str:
    """`` (did you mean 'KEY'?)`` for the known key closest to a mistyped one, else ""."""
    close = difflib.get_close_matches(unknown, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}{_guess(unknown[0], names)}; "
                          f"known: {', '.join(sorted(names))}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as e:  # the dataclass's own range checks
        raise ConfigError(str(e) if where == "config" else f"{where}: {e}") from None


def apply_overrides(config: T, overrides: list[str]) -> T:
    """Return a copy of ``config`` with ``key=value`` overrides applied (dotted keys for nesting)."""
    data = dataclasses.asdict(config)  # type: ignore[call-overload]
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node, tp = data, type(config)
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node, tp = node[part], _member_type(tp, part)
        if parts[-1] not in node and not _is_mapping(tp):
            raise ConfigError(f"override {item!r}: unknown key {key!r}{_guess(parts[-1], node)}; "
                              f"known: {', '.join(sorted(node))}")
        try:
            node[parts[-1]] = parse_yaml(raw) if raw else ""
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"override {item!r}: not a YAML value: {' '.join(str(e).split())}") from None
    return from_dict(type(config), data)


def _section(tp: Any) -> Any:
    """``tp`` without None and non-section arms: the dataclass or mapping type in
    ``X | None`` or ``FlowConfig | str``, else ``tp``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        sections = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a) or _is_mapping(a)]
        return sections[0] if sections else tp
    return tp


def _member_type(tp: Any, key: str) -> Any:
    """The declared type of ``key`` in a section of type ``tp`` (a dataclass, or a
    mapping type); Any where the types do not say."""
    tp = _section(tp)
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(key, Any)
    if typing.get_origin(tp) is dict and len(typing.get_args(tp)) == 2:
        return typing.get_args(tp)[1]
    return Any


def _is_mapping(tp: Any) -> bool:
    tp = _section(tp)
    return tp is dict or typing.get_origin(tp) is dict


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: T | None = None) -> T:
    """``base`` (or ``cls()``), updated from the YAML file at ``path``, then from ``overrides``."""
    config = base if base is not None else cls()
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_YAML_BYTES + 1)
            if len(data) > MAX_YAML_BYTES:
                raise ConfigError(f"{path}: more than {MAX_YAML_BYTES} bytes, larger than a YAML config can be")
            text = data.decode("utf-8")
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a YAML config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML config file (not UTF-8 text)") from None
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as e:  # permission denied, not a directory, ...
            raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
        try:
            data = parse_yaml(text) or {}
        except (yaml.YAMLError, RecursionError) as e:
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


def changed_settings(recorded: dict | None, current: dict, defaults: dict) -> list[str]:
    """The settings whose recorded value differs from ``current`` (plain dicts, as
    ``asdict`` gives them, nested sections included), each as "key old -> new". A key the
    record lacks was added after the record was written, so what the record describes was
    made with its default (``defaults``): it differs only where ``current`` sets another
    value. A key that only the record has was removed since, and differs."""
    recorded = recorded or {}
    changes = []
    for key in sorted(set(recorded) | set(current)):
        old = recorded[key] if key in recorded else defaults.get(key)
        new = current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{change}" for change in changed_settings(old, new, defaults.get(key) or {})]
        elif old != new:
            changes.append(f"{key} {old!r} -> {new!r}")
    return changes


def to_yaml(config: Any) -> str:
    """The resolved config as YAML, to save next to a run's outputs."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
