"""FineGym split files (``gym99_train_element_v1.1.txt`` ...): one ``<key> <label>`` per line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import FormatError
from .keys import parse_instance_key

_SPLIT_NAME_RE = re.compile(r"(?:^|[_\-.])(train|val|test)(?:[_\-.]|$)")
_SUBSET_RE = re.compile(r"^(gym\d+)_")


@dataclass(frozen=True)
class SplitEntry:
    key: str
    label: int
    line: int


def parse_split(text: str, path: str = "<split>", num_classes: int | None = None) -> list[SplitEntry]:
    """Parse a split file. Every key must parse and every label be in [0, num_classes).

    A key listed twice with the same label is kept once; with two labels it is an error.
    """
    entries: list[SplitEntry] = []
    seen: dict[str, SplitEntry] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(path, n, f"expected '<key> <label>', got {line!r}")
        key, label_s = parts
        try:
            parse_instance_key(key)
        except ValueError as e:
            raise FormatError(path, n, str(e)) from None
        if not label_s.isdigit() or not label_s.isascii():
            raise FormatError(path, n, f"label must be a non-negative integer, got {label_s!r}")
        label = int(label_s)
        if num_classes is not None and label >= num_classes:
            raise FormatError(path, n, f"label {label} out of range: the categories have {num_classes} classes")
        if key in seen:
            if seen[key].label != label:
                raise FormatError(path, n, f"{key} has label {label} here and {seen[key].label} "
                                           f"on line {seen[key].line}")
            continue
        seen[key] = SplitEntry(key, label, n)
        entries.append(seen[key])
    return entries


def format_split(entries: Iterable[tuple[str, int]]) -> str:
    """Split file text for (key, label) pairs."""
    return "".join(f"{k} {label}\n" for k, label in entries)


def split_name_from_path(path: str) -> str | None:
    """``train``/``val``/``test`` from a FineGym split file name, or None."""
    m = _SPLIT_NAME_RE.search(path.rsplit("/", 1)[-1])
    return m[1] if m else None


def subset_from_path(path: str) -> str | None:
    """``gym99``/``gym288``/... from a split or category file name, or None."""
    m = _SUBSET_RE.match(path.rsplit("/", 1)[-1])
    return m[1] if m else None
