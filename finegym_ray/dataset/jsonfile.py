"""JSON that someone else wrote (annotation, ground-truth and detection files, a run's
records), read within bounds: at most ``MAX_JSON_BYTES`` read, integers that fit in 64
bits (a longer one, such as 400 digits, would overflow every float or int64 it reaches),
nesting Python can walk. Whatever is outside them is a :class:`FormatError` naming the
file, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import json
from typing import Any

from .. import storage
from .errors import FormatError

# FineGym's annotation JSON is ~10 MB and a detection file for every FineGym video some
# tens of MB; json.loads takes about 10x a file's size in memory.
MAX_JSON_BYTES = 256 << 20
_INT_RANGE = range(-2**63, 2**63)
_MAX_INT_CHARS = len(str(-2**63))  # a longer text is refused before int() reads it


def read_json_text(uri: str, *, max_bytes: int = MAX_JSON_BYTES) -> str:
    """The text of the JSON file ``uri`` (local or s3://). ValueError naming it when it
    holds more than ``max_bytes`` bytes, FormatError when it is not UTF-8."""
    try:
        return storage.read_text(uri, max_bytes=max_bytes)
    except UnicodeDecodeError as e:
        raise FormatError(uri, None, f"not a JSON file (not UTF-8 text at byte {e.start})") from None


class _HugeInt(ValueError):
    pass


def _bounded_int(text: str) -> int:
    value = int(text) if len(text) <= _MAX_INT_CHARS else None
    if value is None or value not in _INT_RANGE:
        raise _HugeInt(f"an integer of {len(text.lstrip('-'))} digits ({text[:12]}...) is beyond 64 bits: "
                       f"no field holds one")
    return value


def parse_json(text: str, path: str) -> Any:
    """``text`` as JSON, within the bounds of the module docstring; FormatError naming
    ``path`` (and the line, for malformed JSON) otherwise."""
    try:
        return json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as e:
        raise FormatError(path, e.lineno, f"malformed JSON: {e.msg} (column {e.colno})") from None
    except _HugeInt as e:
        raise FormatError(path, None, str(e)) from None
    except RecursionError:
        raise FormatError(path, None, "malformed JSON: nested too deeply") from None
