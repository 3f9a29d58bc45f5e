from dataclasses import dataclass, field

import pytest

from finegym_ray.config import ConfigError, apply_overrides, load_config, to_yaml


@dataclass
class Inner:
    lr: float = 0.1
    name: str = "a"


@dataclass
class Outer:
    videos: int = 4
    fps: float | None = None
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("videos: 8\ninner:\n  lr: 1\n")
    c = load_config(Outer, p, ["inner.name=b", "fps=29.97", "tags=[x, y]"])
    assert c == Outer(videos=8, fps=29.97, tags=["x", "y"], inner=Inner(lr=1.0, name="b"))
    assert load_config(Outer, None, ["fps=null"]).fps is None
    assert "videos: 8" in to_yaml(c)


@pytest.mark.parametrize("overrides, msg", [
    (["vidoes=3"], "unknown key 'vidoes'"),
    (["videos=three"], "expected int"),
    (["inner.depth=3"], "unknown key"),
    (["videos"], "key=value"),
    (["videos.x=1"], "not a section"),
])
def test_bad_overrides(overrides, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(Outer(), overrides)


def test_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("videos: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, p)
    p.write_text("inner: {lr: 1, typo: 2}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(Outer, p)
