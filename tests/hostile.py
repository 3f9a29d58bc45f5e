"""What a hostile file holds, for the tests that show it is refused and runs nothing."""

from __future__ import annotations


class WritesMarker:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code in a pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
