"""The localization demo's presets: the files under configs/localize/, which the demo
trains with its paths under its --out, on SynGym videos of its own; it refuses to start
without the main demo's run."""

from pathlib import Path

import pytest

from finegym_ray.config import RUNS_FOLDER, load_config
from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.localize.demo import SYNTH_PRESET, check_demo_inputs, demo_paths, localize_config

CONFIGS = Path(__file__).parents[2] / "configs" / "localize"


@pytest.mark.parametrize("level", ["action", "subaction"])
def test_the_config_files_train_where_the_demo_does_by_default(level, monkeypatch):
    # `finegym-ray localize train --config configs/localize/syngym_LEVEL.yaml`, run from the
    # checkout, reads and writes what `finegym-ray localize demo` (--out finegym_demo) does.
    monkeypatch.chdir(Path(__file__).parents[2])
    from_file = load_config(LocalizeConfig, CONFIGS / f"syngym_{level}.yaml")
    paths = demo_paths("finegym_demo")
    for key in ("features", "annotations"):
        assert Path(getattr(from_file, key)).resolve() == Path(paths[key])
    demo = localize_config("elsewhere", level, ["epochs=1"])
    assert (demo.level, demo.epochs, demo.features) == (level, 1, demo_paths("elsewhere")["features"])
    # Its runs beside the main demo's, where every command looks by default.
    assert from_file.runs == demo.runs == RUNS_FOLDER


def test_the_demo_needs_the_main_demos_run(tmp_path):
    with pytest.raises(ValueError, match="run 'finegym-ray demo --out"):
        check_demo_inputs(str(tmp_path), str(tmp_path / "runs"))


def test_the_demos_videos_are_its_own_and_its_validation_is_16_videos():
    # Not the main demo's 16 videos (the backbone trained on those): 64 others, a quarter
    # of them in the detector's val split.
    from finegym_ray.synth.config import preset

    mine, main = preset(SYNTH_PRESET), preset("demo")
    assert mine.videos == 64 and mine.seed != main.seed
    assert demo_paths("o")["videos"].startswith(demo_paths("o")["folder"])
    for level in ("action", "subaction"):
        assert localize_config("o", level).val_fraction * mine.videos == 16
