"""FineGym category files.

- ``set_categories.txt``: ``set: 21; FX_leap_jump_hop``; the first digit of a set id is
  its event id.
- ``gym99_categories.txt`` / ``gym288_categories.txt``:
  ``Clabel:   0; set:  1; Glabel:   1; (VT) name``: Clabel is the class index in the
  subset, Glabel the index among the 530 full categories.
- ``gym530_categories.txt``: ``Glabel:   0; set:  1; (VT) name``.

Spacing varies between files, so parsing is tolerant of it. Names are not unique:
nothing here is keyed on a name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import FormatError

_SET_RE = re.compile(r"\s*set:\s*(\d+)\s*;\s*(\S.*?)\s*")
_CLABEL_RE = re.compile(r"\s*Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s?(.*?)\s*")
_GLABEL_RE = re.compile(r"\s*Glabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s?(.*?)\s*")


def event_of_set(set_id: int) -> int:
    """The event id of a set: its first digit (set 1 -> VT 1, set 21 -> FX 2)."""
    return int(str(set_id)[0])


@dataclass(frozen=True)
class SetCategory:
    set_id: int
    name: str

    @property
    def event(self) -> int:
        return event_of_set(self.set_id)


@dataclass(frozen=True)
class ElementCategory:
    """One element class: ``label`` is its index in the subset, ``glabel`` in Gym530."""

    label: int
    set_id: int
    glabel: int
    name: str

    @property
    def event(self) -> int:
        return event_of_set(self.set_id)


@dataclass(frozen=True)
class ElementCategories:
    """The classes of one subset (``gym99``, ``gym288``, ``gym530``), in label order."""

    subset: str
    classes: tuple[ElementCategory, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def by_glabel(self) -> dict[int, ElementCategory]:
        return {c.glabel: c for c in self.classes}


def _lines(text: str) -> Iterable[tuple[int, str]]:
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield n, line


def parse_set_categories(text: str, path: str = "<set_categories>") -> list[SetCategory]:
    """Parse ``set_categories.txt``; set ids must be unique and start with an event digit 1-9."""
    sets: list[SetCategory] = []
    seen: dict[int, int] = {}
    for n, line in _lines(text):
        m = _SET_RE.fullmatch(line)
        if m is None:
            raise FormatError(path, n, f"expected 'set: <id>; <name>', got {line!r}")
        set_id = int(m[1])
        if set_id < 1:
            raise FormatError(path, n, f"set id must be >= 1, got {set_id}")
        if set_id in seen:
            raise FormatError(path, n, f"set {set_id} already defined on line {seen[set_id]}")
        seen[set_id] = n
        sets.append(SetCategory(set_id, m[2]))
    if not sets:
        raise FormatError(path, None, "no set categories in the file")
    return sets


def parse_element_categories(
    text: str,
    path: str = "<categories>",
    sets: Mapping[int, SetCategory] | None = None,
) -> ElementCategories:
    """Parse a ``gymNN_categories.txt`` (Clabel lines) or ``gym530_categories.txt`` (Glabel lines).

    Labels must be 0..N-1 in file order. The subset is named ``gym<N>``. With ``sets``,
    every set id must be one of them.
    """
    classes: list[ElementCategory] = []
    glabels: dict[int, int] = {}
    kind = None
    for n, line in _lines(text):
        m = _CLABEL_RE.fullmatch(line)
        if m is not None:
            line_kind, label, set_id, glabel, name = "clabel", int(m[1]), int(m[2]), int(m[3]), m[4]
        else:
            m = _GLABEL_RE.fullmatch(line)
            if m is None:
                raise FormatError(
                    path, n,
                    f"expected 'Clabel: <n>; set: <id>; Glabel: <n>; <name>' or "
                    f"'Glabel: <n>; set: <id>; <name>', got {line!r}",
                )
            line_kind, label, set_id, name = "glabel", int(m[1]), int(m[2]), m[3]
            glabel = label
        if kind is None:
            kind = line_kind
        elif kind != line_kind:
            raise FormatError(path, n, "mixes Clabel lines and Glabel-only lines")
        if label != len(classes):
            raise FormatError(path, n, f"label {label} out of order: expected {len(classes)}")
        if glabel in glabels:
            raise FormatError(path, n, f"Glabel {glabel} already used on line {glabels[glabel]}")
        if set_id < 1 or (sets is not None and set_id not in sets):
            raise FormatError(path, n, f"set {set_id} is not a known set")
        glabels[glabel] = n
        classes.append(ElementCategory(label, set_id, glabel, name))
    if not classes:
        raise FormatError(path, None, "no categories in the file")
    return ElementCategories(f"gym{len(classes)}", tuple(classes))


def format_set_categories(sets: Iterable[SetCategory]) -> str:
    """``set_categories.txt`` text."""
    return "".join(f"set: {s.set_id}; {s.name}\n" for s in sets)


def format_element_categories(cats: ElementCategories, *, glabel_only: bool = False) -> str:
    """``gymNN_categories.txt`` text, or with ``glabel_only`` the ``gym530_categories.txt`` form."""
    if glabel_only:
        return "".join(f"Glabel:{c.glabel:4d}; set:{c.set_id:3d}; {c.name}\n" for c in cats.classes)
    return "".join(
        f"Clabel:{c.label:4d}; set:{c.set_id:3d}; Glabel:{c.glabel:4d}; {c.name}\n" for c in cats.classes
    )
