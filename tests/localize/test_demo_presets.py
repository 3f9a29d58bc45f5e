"""The localization demo's presets: the files under configs/localize/, which the demo
trains with its paths under its --out; it refuses to start without the main demo's
outputs."""

from pathlib import Path

import pytest

from finegym_ray.config import RUNS_FOLDER, load_config
from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.localize.demo import check_demo_inputs, demo_paths, localize_config

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
