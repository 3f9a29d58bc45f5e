from dataclasses import dataclass, field

import pytest
import yaml

from finegym_ray.config import ConfigError, apply_overrides, load_config, to_yaml
from tests.support.hostile import alias_bomb


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
    # Explicit tags on values that do not fit them (found by the fuzz test below).
    (["videos=!!int x"], "not a YAML value"),
    (["videos=!!int ''"], "not a YAML value"),
    (["videos=!!timestamp 2020-99-99"], "not a YAML value"),
])
def test_bad_overrides(overrides, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(Outer(), overrides)


def test_an_unknown_key_suggests_the_closest_known_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'vidoes' \(did you mean 'videos'\?\)"):
        apply_overrides(Outer(), ["vidoes=3"])
    p = tmp_path / "c.yaml"
    p.write_text("inner: {lr: 1, nmae: b}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) nmae \(did you mean 'name'\?\)"):
        load_config(Outer, p)
    with pytest.raises(ConfigError) as e:  # nothing close: no guess
        apply_overrides(Outer(), ["zzzz=3"])
    assert "did you mean" not in str(e.value)


def test_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("videos: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, p)
    p.write_text("inner: {lr: 1, typo: 2}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(Outer, p)


# ---------------------------------------------------------------- issue 15, item 11

import dataclasses  # noqa: E402
import math  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from finegym_ray.preprocess.config import PreprocessConfig  # noqa: E402
from finegym_ray.synth.config import PRESETS, SynthConfig  # noqa: E402
from finegym_ray.train.config import DEMO, TrainConfig  # noqa: E402


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as the string "1e-3"; YAML 1.2 and every user read a float.
    assert apply_overrides(Outer(), ["inner.lr=1e-3"]).inner.lr == 0.001
    assert apply_overrides(TrainConfig(), ["lr=1e-3", "weight_decay=5E-4"]).lr == 0.001
    assert apply_overrides(TrainConfig(), ["lr=2.5e-4"]).lr == 0.00025
    p = tmp_path / "t.yaml"
    p.write_text("lr: 1e-3\nweight_decay: 1.0e+2\n")
    c = load_config(TrainConfig, p)
    assert (c.lr, c.weight_decay) == (0.001, 100.0)
    # Integers stay integers, strings stay strings.
    assert apply_overrides(TrainConfig(), ["epochs=3", "name=1e3x"]) == dataclasses.replace(
        TrainConfig(), epochs=3, name="1e3x")
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(TrainConfig(), ["epochs=1e3"])


def test_a_folder_or_unreadable_file_as_config_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path)) as e:
        load_config(TrainConfig, tmp_path)
    assert "folder" in str(e.value)
    binary = tmp_path / "weights.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe")
    with pytest.raises(ConfigError, match="weights.pt"):
        load_config(TrainConfig, binary)


def test_an_alias_bomb_a_recursive_alias_or_a_huge_file_is_refused_and_plain_anchors_still_work(tmp_path):
    from finegym_ray.config import parse_yaml

    bomb = alias_bomb()
    assert len(bomb.encode()) < 500
    with pytest.raises(yaml.YAMLError, match="alias"):
        parse_yaml(bomb)
    with pytest.raises(yaml.YAMLError, match="alias"):
        parse_yaml("a: &a [*a]\n")
    p = tmp_path / "bomb.yaml"
    p.write_text(bomb + "tags: *i\n")
    with pytest.raises(ConfigError, match=f"{p}: not valid YAML: .*alias"):
        load_config(Outer, p)
    p.write_text("videos: 8\n" + "#" * (4 << 20) + "\n")
    with pytest.raises(ConfigError, match=f"{p}: .*bytes"):
        load_config(Outer, p)
    # Anchors and merge keys as people write them by hand still read.
    assert parse_yaml("base: &b {lr: 0.5, name: b}\ninner:\n  <<: *b\n  name: c\n") == {
        "base": {"lr": 0.5, "name": "b"}, "inner": {"lr": 0.5, "name": "c"}}


@pytest.mark.parametrize("cls, base, override, field", [
    (TrainConfig, TrainConfig(), "lr=.nan", "lr"),
    (TrainConfig, TrainConfig(), "lr=.inf", "lr"),
    (TrainConfig, TrainConfig(), "lr=-1e-3", "lr"),
    (TrainConfig, TrainConfig(), "dropout=-3", "dropout"),
    (TrainConfig, TrainConfig(), "dropout=1", "dropout"),
    (TrainConfig, TrainConfig(), "depth=-5", "depth"),
    (TrainConfig, TrainConfig(), "depth=51", "depth"),
    (TrainConfig, TrainConfig(), "base_width=0", "base_width"),
    (TrainConfig, TrainConfig(), "blocks=[2, 0, 2, 2]", "blocks"),
    (TrainConfig, TrainConfig(), "shift_fraction=0.6", "shift_fraction"),
    (TrainConfig, TrainConfig(), "momentum=.nan", "momentum"),
    (TrainConfig, TrainConfig(), "weight_decay=-1", "weight_decay"),
    (TrainConfig, TrainConfig(), "grad_clip=.inf", "grad_clip"),
    (TrainConfig, TrainConfig(), "label_smoothing=1.5", "label_smoothing"),
    (TrainConfig, TrainConfig(), "cpus_per_worker=.nan", "cpus_per_worker"),
    (TrainConfig, TrainConfig(), "shuffle_buffer=-1", "shuffle_buffer"),
    (TrainConfig, TrainConfig(), "seed=-1", "seed"),
    (PreprocessConfig, PreprocessConfig(), "flow_bound=.inf", "flow_bound"),
    (PreprocessConfig, PreprocessConfig(), "flow_bound=.nan", "flow_bound"),
    (PreprocessConfig, PreprocessConfig(), "cache_gb=-1", "cache_gb"),
    (PreprocessConfig, PreprocessConfig(), "cache_gb=.nan", "cache_gb"),
    (PreprocessConfig, PreprocessConfig(), "max_fps=.inf", "max_fps"),
    (PreprocessConfig, PreprocessConfig(), "unit_seconds=.inf", "unit_seconds"),
    (PreprocessConfig, PreprocessConfig(), "cpus_per_worker=.inf", "cpus_per_worker"),
    (SynthConfig, SynthConfig(), "noise=-1", "noise"),
    (SynthConfig, SynthConfig(), "noise=.nan", "noise"),
    (SynthConfig, SynthConfig(), "camera_jitter=.inf", "camera_jitter"),
    (SynthConfig, SynthConfig(), "imbalance=.nan", "imbalance"),
    (SynthConfig, SynthConfig(), "mens_event_fraction=.nan", "mens_event_fraction"),
    (SynthConfig, SynthConfig(), "subaction_median_s=0", "subaction_median_s"),
    (SynthConfig, SynthConfig(), "idle_range_s=[1.0, .inf]", "idle_range_s"),
    (SynthConfig, SynthConfig(), "gop_s=.nan", "gop_s"),
    (SynthConfig, SynthConfig(), "crf=52", "crf"),
    (SynthConfig, SynthConfig(), "clutter=-1", "clutter"),
    (SynthConfig, SynthConfig(), "x264_preset=warp", "x264_preset"),
    (SynthConfig, SynthConfig(), "seed=-1", "seed"),
])
def test_out_of_range_values_are_refused_naming_the_field(cls, base, override, field):
    with pytest.raises(ConfigError, match=field):
        apply_overrides(base, [override])


def test_the_shipped_defaults_and_presets_are_in_range():
    for config in (TrainConfig(), DEMO, PreprocessConfig(), SynthConfig(), *PRESETS.values()):
        _assert_in_range(config)


def test_supported_depths_are_the_models():
    from finegym_ray.models.resnet import DEPTHS
    from finegym_ray.train.config import DEPTHS as CONFIG_DEPTHS

    assert sorted(CONFIG_DEPTHS) == sorted(DEPTHS)


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)


def _assert_in_range(config):
    """The ranges as the issue states them, checked independently of the code under test."""
    for f in dataclasses.fields(config):
        for x in _numbers(getattr(config, f.name)):
            assert math.isfinite(x), (f.name, x)
    if isinstance(config, TrainConfig):
        from finegym_ray.models.resnet import DEPTHS

        assert config.lr > 0 and 0 <= config.dropout < 1 and config.depth in DEPTHS and config.base_width >= 1
        assert 0 <= config.momentum < 1 and config.weight_decay >= 0 and 0 <= config.label_smoothing < 1
        assert 0 <= config.shift_fraction <= 0.5 and config.cpus_per_worker > 0 and config.seed >= 0
        assert config.blocks is None or (config.blocks and min(config.blocks) >= 1)
    elif isinstance(config, PreprocessConfig):
        assert config.flow_bound > 0 and config.cache_gb >= 0 and config.unit_seconds > 0
        assert config.max_fps is None or config.max_fps > 0
    else:
        assert config.videos >= 1 and config.noise >= 0 and config.camera_jitter >= 0 and config.zoom >= 0
        assert config.subaction_median_s > 0 and config.gop_s > 0 and 0 <= config.crf <= 51
        assert 0 <= config.mens_event_fraction <= 1 and 0 <= config.val_fraction < 1 and config.seed >= 0


_FIELDS = sorted({f.name for c in (TrainConfig, PreprocessConfig, SynthConfig) for f in dataclasses.fields(c)})
_KEYS = st.one_of(st.sampled_from(_FIELDS), st.sampled_from(["", ".", "lr.x", "a..b", "x=y", " lr", "lr "]),
                  st.text(max_size=12))
# Values the way the YAML parser sees them: YAML's special floats, exponents, huge
# numbers, flow collections, tags, dates, control characters, plus random text.
_VALUES = st.one_of(
    st.sampled_from([".nan", ".NaN", ".inf", "-.inf", "+.inf", "nan", "inf", "1e-3", "-1e-3", "1E400", "-1e400",
                     "0", "-0", "-5", "0x10", "0o7", "1_000", "1:30", "2e", ".5", "5.", "1e3", "10" * 40,
                     "[1, 2]", "[.inf, 1]", "[1, 1e400]", "[", "]", "{a: 1}", "{", "null", "~", "true", "yes",
                     "no", "!!python/name:os.system", "!!binary AAAA", "!!float 1", "!!int x", "2001-01-01",
                     "'x'", '"\\x00"', "\x00", "\x1b", "&a 1", "*a", "- 1", "? x", "|", "%YAML 1.2",
                     "[" * 200, "---", "...", "#", "tsm", "flow", "dis", "ultrafast"]),
    st.text(max_size=16),
    st.integers().map(str),
    st.floats().map(repr),
)
_OVERRIDES = st.lists(st.tuples(_KEYS, _VALUES).map("=".join), max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([TrainConfig(), DEMO, PreprocessConfig(), SynthConfig()]), _OVERRIDES)
def test_fuzzed_overrides_give_a_config_in_range_or_a_config_error(base, overrides):
    try:
        config = apply_overrides(base, overrides)
    except ConfigError:
        return
    assert type(config) is type(base)
    _assert_in_range(config)


def test_a_setting_added_since_a_record_was_written_counts_as_its_default():
    from finegym_ray.config import changed_settings

    defaults = {"noise": 2.0, "pose_jitter": 1.0, "flow": {"method": "dis", "bound": 20}}
    old = {"noise": 2.0, "flow": {"method": "dis"}}  # written before pose_jitter and flow.bound existed
    assert changed_settings(old, defaults, defaults) == []
    assert changed_settings(old, {**defaults, "pose_jitter": 3.0}, defaults) == ["pose_jitter 1.0 -> 3.0"]
    assert changed_settings(old, {**defaults, "flow": {"method": "tvl1", "bound": 20}}, defaults) == [
        "flow.method 'dis' -> 'tvl1'"]
    assert changed_settings({**old, "gone": 1}, defaults, defaults) == ["gone 1 -> None"]
