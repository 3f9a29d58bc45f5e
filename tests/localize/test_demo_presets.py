"""The localization demo's presets in code (localize/demo.py) and its files under
configs/localize/ hold the same values, and the demo refuses to start without the main
demo's outputs."""

from pathlib import Path

import pytest

from finegym_ray.config import apply_overrides, load_config
from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.localize.demo import EXTRACT, check_demo_inputs, localize_config
from finegym_ray.localize.extract import ExtractConfig

CONFIGS = Path(__file__).parents[2] / "configs" / "localize"


@pytest.mark.parametrize("level", ["action", "subaction"])
def test_demo_presets_match_their_config_files(level, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[2])
    from_file = load_config(LocalizeConfig, CONFIGS / f"syngym_{level}.yaml")
    in_code = localize_config("finegym_demo", level)
    assert {**vars(from_file), "features": "", "annotations": "", "runs": ""} == \
        {**vars(in_code), "features": "", "annotations": "", "runs": ""}
    assert Path(from_file.features).resolve() == Path(in_code.features)
    assert Path(from_file.annotations).resolve() == Path(in_code.annotations)
    assert load_config(ExtractConfig, CONFIGS / f"extract_syngym_{level}.yaml") == \
        apply_overrides(ExtractConfig(level=level), EXTRACT[level])


def test_the_demo_needs_the_main_demos_run(tmp_path):
    with pytest.raises(ValueError, match="run 'finegym-ray demo --out"):
        check_demo_inputs(str(tmp_path))
