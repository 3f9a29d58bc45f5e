"""The errors that refuse what a user gave: a setting, a name, a file, a folder, storage.

``finegym-ray`` prints the message of a :class:`BadInput` as one line and exits 2, so
the message must say what was refused and why. Any other exception is a bug and keeps
its traceback. Nothing here imports anything of the project: every layer may raise them.
"""

from __future__ import annotations


class BadInput(Exception):
    """Base of the refusals of input. Each kind also derives from the builtin error a
    caller would catch for it (ValueError, OSError), as :class:`InputError` does."""


class InputError(BadInput, ValueError):
    """A refused value or state of the input, e.g. a count below 1, an unknown name, a
    missing option, an output folder made with other settings."""
