"""What a hostile file holds (a pickle that runs code, YAML that expands to billions of
strings), for the tests that show it is refused and runs nothing."""

from __future__ import annotations


class WritesMarker:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code in a pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """YAML of a few hundred bytes whose aliases expand to ``width ** levels`` strings
    ("billion laughs"): ``a: &a [x, ...]``, ``b: &b [*a, ...]``, ..."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [{','.join('x' * width)}]"]
    lines += [f"{n}: &{n} [{','.join([f'*{p}'] * width)}]" for p, n in zip(names, names[1:])]
    return "\n".join(lines) + "\n"
