"""The one error type every FineGym file parser raises."""

from __future__ import annotations

from ..errors import InputError


class FormatError(InputError):
    """A FineGym file that does not parse: names the file and, where known, the line.

    The CLI turns it into a one-line message and exit code 2, so the message must say
    everything a user needs to find and fix the input.
    """

    def __init__(self, path: str, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
