"""The paper's studies: table building and intervals on made-up scores, the study store's
refusals, and the studies run end to end (sweep, evaluations, table, PNG) on the
session's 2-CPU Ray cluster with the SynGym preset's files shrunk to one-epoch trials
of a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegym_ray import charts
from finegym_ray.preprocess.config import PreprocessConfig
from finegym_ray.synth.config import SynthConfig
from finegym_ray.tune import studies
from finegym_ray.tune.config import load_sweep

from .test_sweep import TRAIN

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "configs" / "studies" / "syngym"


def _scores(labels: np.ndarray, right: np.ndarray, k: int, seed: int = 0) -> pa.Table:
    """A scores table: each clip's top score on its label where ``right``, else on the next class."""
    rng = np.random.default_rng(seed)
    scores = rng.random((len(labels), k)) * 0.1
    scores[np.arange(len(labels)), np.where(right, labels, (labels + 1) % k)] += 1
    return pa.table({"key": [f"clip{i:04d}" for i in range(len(labels))], "label": labels,
                     "scores": list(scores.astype(np.float32))})


def _scored(right_share: float, n: int = 300, k: int = 4, seed: int = 0) -> studies.Scored:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    return studies.Scored(_scores(labels, rng.random(n) < right_share, k, seed), samples=300)


def _one(right_share: float, seed: int = 0) -> studies.Seeds:
    """A configuration trained with one seed."""
    return studies.Seeds([_scored(right_share, seed=seed)])


def test_order_table_pairs_the_shuffled_evaluation_with_the_ordered_one():
    ordered, worse = _one(0.9, seed=1), _one(0.5, seed=2)
    table = studies.order_table({"trn": (ordered, worse), "tsn": (ordered, ordered)}).to_pylist()
    assert [(r["model"], r["test"]) for r in table] == [("trn", "ordered"), ("trn", "shuffled"),
                                                        ("tsn", "ordered"), ("tsn", "shuffled")]
    trn = table[1]
    assert trn["diff_mean_class"] == pytest.approx(worse.scored[0].point["mean_class"]
                                                   - ordered.scored[0].point["mean_class"])
    assert trn["diff_mean_class_lo"] <= trn["diff_mean_class"] <= trn["diff_mean_class_hi"] < 0
    assert table[3]["diff_top1"] == table[3]["diff_top1_lo"] == table[3]["diff_top1_hi"] == 0  # same scores
    assert table[0]["diff_top1"] is None and table[0]["clips"] == table[0]["labelled"] == 300
    for r in table:
        assert r["mean_class_lo"] <= r["mean_class"] <= r["mean_class_hi"]


def test_frames_test_segments_and_motion_tables():
    frames = studies.frames_table({3: _one(0.6), 1: _one(0.3), 4: _one(0.7)}).to_pylist()
    assert [r["segments"] for r in frames] == [1, 3, 4]
    assert [r["paper_gym99_mean_class"] for r in frames] == [0.3546, 0.614, None]

    table = studies.test_segments_table({"tsm": {3: _one(0.8), 12: _one(0.4)}}, trained=3).to_pylist()
    assert [(r["test_segments"], r["trained_segments"]) for r in table] == [(3, 3), (12, 3)]
    assert table[0]["diff_mean_class"] == 0 and table[1]["diff_mean_class_hi"] < 0

    # Class 2 is always right with flow, never with RGB; class 3 has no clip.
    labels = np.array([0, 1, 2] * 40)
    # The split labels 130 keys; 10 have no clip (a missing video).
    rgb = studies.Seeds([studies.Scored(_scores(labels, labels != 2, 4), samples=200, labelled=130)])
    flow = studies.Seeds([studies.Scored(_scores(labels, labels != 0, 4), samples=200, labelled=130)])
    rows = studies.motion_table(rgb, flow, ["a", "b", "c", "d"]).to_pylist()
    assert [r["class"] for r in rows] == [None, 0, 1, 2] and rows[0]["clips"] == 120 and rows[3]["clips"] == 40
    assert rows[0]["labelled"] == 130 and rows[1]["labelled"] is None
    assert (rows[1]["flow_minus_rgb"], rows[3]["flow_minus_rgb"]) == (-1.0, 1.0)
    # Each class is all right or all wrong: every resample's mean class is the same 2/3.
    assert rows[0]["flow_minus_rgb"] == rows[0]["flow_minus_rgb_lo"] == rows[0]["flow_minus_rgb_hi"] == 0
    text = studies.format_study(studies.motion_table(rgb, flow, ["a", "b", "c", "d"]))
    assert "flow_minus_rgb" in text and "66.7 [" in text and "_lo" not in text
    assert text.splitlines()[0].split()[:4] == ["class", "name", "clips", "labelled"]
    with pytest.raises(ValueError, match="same validation clips"):
        studies.motion_table(rgb, studies.Seeds([studies.Scored(_scores(labels[:60], labels[:60] > 0, 4))]),
                             list("abcd"))


def test_pretraining_table_and_its_grid():
    # Class 0 is always right from Kinetics, never from ImageNet; class 1 always right from both.
    labels = np.array([0, 1] * 30)
    kinetics = studies.Seeds([studies.Scored(_scores(labels, np.ones(60, bool), 3), samples=200)])
    imagenet = studies.Seeds([studies.Scored(_scores(labels, labels == 1, 3), samples=200)])
    rows = studies.pretraining_table(kinetics, imagenet, ["a", "b", "c"]).to_pylist()
    assert [(r["class"], r["name"]) for r in rows] == [(None, "all (mean class)"), (0, "a"), (1, "b")]
    assert [(r["kinetics"], r["imagenet"], r["kinetics_minus_imagenet"]) for r in rows] == [
        (1.0, 0.5, 0.5), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0)]
    assert rows[1]["kinetics_minus_imagenet_lo"] == rows[1]["kinetics_minus_imagenet_hi"] == 1.0
    assert rows[0]["kinetics_minus_imagenet_by_seed"] == [0.5]
    assert studies.format_study(studies.pretraining_table(kinetics, imagenet, list("abc"))).splitlines()[0].split()[
        4:] == ["seeds", "kinetics", "imagenet", "kinetics_minus_imagenet"]
    with pytest.raises(ValueError, match="kinetics and imagenet need as many seeds"):
        studies.pretraining_table(studies.Seeds(kinetics.scored * 2), imagenet, list("abc"))

    sweep, _ = load_sweep(str(PRESET / "pretraining.yaml"), [])
    assert studies.pretraining_grid(sweep) == ["study:set", None]
    for grid, msg in (("[a.pt]", "two initialisations"), ("[a.pt, a.pt]", "two initialisations"),
                      ("[study:nope, null]", "study:nope names no task")):
        with pytest.raises(ValueError, match=msg):
            studies.check_study("pretraining", load_sweep(str(PRESET / "pretraining.yaml"),
                                                          [f"space.pretrained.grid={grid}"])[0])
    with pytest.raises(ValueError, match="the kinetics weights KINETICS_WEIGHTS are not there"):
        studies.with_initialisations(*load_sweep(str(PRESET.parent / "pretraining.yaml"), []))


def _trained(*shares: float) -> studies.Seeds:
    """A configuration trained once per share of right clips (seeds 0, 1, ...), on the same clips."""
    return studies.Seeds([_scored(share, seed=i) for i, share in enumerate(shares)])


def test_seeds_that_agree_keep_the_clips_interval_and_seeds_that_disagree_widen_it():
    one = _scored(0.7, seed=3)
    single, same = studies.Seeds([one]).fields(), studies.Seeds([one, one, one]).fields()
    assert (single["seeds"], same["seeds"]) == (1, 3)
    for m in studies.METRICS:
        for end in ("", "_lo", "_hi"):
            assert same[m + end] == pytest.approx(single[m + end], abs=1e-12), m + end
        assert same[f"{m}_by_seed"] == [single[m]] * 3 and single[f"{m}_by_seed"] == [single[m]]

    apart = _trained(0.5, 0.7, 0.9).fields()
    by_seed = apart["mean_class_by_seed"]
    assert apart["mean_class"] == pytest.approx(np.mean(by_seed)) and len(set(by_seed)) == 3
    alone = [studies.Seeds([_scored(share, seed=i)]).fields() for i, share in enumerate((0.5, 0.7, 0.9))]
    assert apart["mean_class_hi"] - apart["mean_class_lo"] > max(f["mean_class_hi"] - f["mean_class_lo"]
                                                                  for f in alone)
    assert apart["mean_class_lo"] < min(by_seed) and max(by_seed) < apart["mean_class_hi"]


def test_differences_are_taken_seed_by_seed_then_averaged():
    ordered, shuffled = _trained(0.9, 0.6), _trained(0.5, 0.4)
    rows = studies.order_table({"trn": (ordered, shuffled), "tsn": (ordered, ordered)}).to_pylist()
    trn, tsn = rows[1], rows[3]
    per_seed = [s - o for s, o in zip(shuffled.values("mean_class")[0], ordered.values("mean_class")[0])]
    assert trn["diff_mean_class_by_seed"] == pytest.approx(per_seed)
    assert trn["diff_mean_class"] == pytest.approx(np.mean(per_seed)) and trn["seeds"] == 2
    assert rows[0]["diff_mean_class_by_seed"] is None
    # Levels far apart between the seeds, the same difference in each: the difference is exactly 0.
    assert tsn["diff_top1_lo"] == tsn["diff_top1"] == tsn["diff_top1_hi"] == 0
    assert tsn["mean_class_hi"] - tsn["mean_class_lo"] > 0.2  # while each level's interval holds both seeds

    labels = np.array([0, 1, 2] * 40)
    rgb = studies.Seeds([studies.Scored(_scores(labels, labels != 2, 4, seed), samples=200) for seed in (0, 1)])
    flow = studies.Seeds([studies.Scored(_scores(labels, labels != 0, 4, seed), samples=200) for seed in (0, 1)])
    motion = studies.motion_table(rgb, flow, list("abcd")).to_pylist()
    assert [r["flow_minus_rgb_by_seed"] for r in motion[1:]] == [[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="as many seeds"):
        studies.motion_table(rgb, studies.Seeds(flow.scored[:1]), list("abcd"))


def test_the_printed_table_says_how_many_seeds_and_the_csv_holds_each_seed(tmp_path):
    import pyarrow.csv as pacsv

    table = studies.frames_table({3: _trained(0.6, 0.7), 5: _trained(0.7, 0.8)})
    assert table.column("mean_class_by_seed").type == pa.list_(pa.float64())
    text = studies.format_study(table)
    assert text.splitlines()[0].split()[:4] == ["segments", "clips", "labelled", "seeds"]
    assert "by_seed" not in text and "mean over 2 training seeds" in text.splitlines()[-1]
    assert "1 training seed" in studies.format_study(studies.frames_table({3: _one(0.6)})).splitlines()[-1]
    sink = pa.BufferOutputStream()
    pacsv.write_csv(studies._lists_as_json(table), sink)
    (tmp_path / "study.csv").write_bytes(sink.getvalue().to_pybytes())
    row = pacsv.read_csv(tmp_path / "study.csv").to_pylist()[0]
    assert json.loads(row["mean_class_by_seed"]) == pytest.approx(table.column("mean_class_by_seed")[0].as_py())


def test_a_study_trains_each_config_once_per_seed_each_seed_a_sweep_of_its_own():
    from finegym_ray.cli.study import study_config
    from finegym_ray.tune.config import seed_sweeps

    def seeds(name, preset="finegym", **kw):
        sweep, base = study_config(name, preset=preset, config=None, data="/clips", smoke_test=kw.pop("smoke", False),
                                   overrides=kw.pop("overrides", []), **kw)
        return [(s.name, b.seed, s.seeds) for s, b in seed_sweeps(sweep, base)], sweep, seed_sweeps(sweep, base)

    names, sweep, pairs = seeds("frames")
    assert names == [("frames", 0, 1), ("frames_seed1", 1, 1), ("frames_seed2", 2, 1)]
    assert all(s.space == sweep.space and s.sweeps == sweep.sweeps for s, _ in pairs)
    # The first seed's sweep is the one-seed study's: a rerun with more seeds resumes it.
    assert pairs[0] == seed_sweeps(*study_config("frames", preset="finegym", config=None, data="/clips",
                                                 overrides=[], smoke_test=False, seeds=1))[0]
    for name in studies.STUDIES:
        assert seeds(name)[1].seeds == 3 and seeds(name, "syngym")[1].seeds == 1
        assert seeds(name, smoke=True)[1].seeds == 1  # the smoke test trains one seed
    assert seeds("order", "syngym", seeds=2, overrides=["train.seed=5"])[0] == [("order", 5, 1),
                                                                                 ("order_seed1", 6, 1)]
    assert seeds("order", smoke=True, seeds=2)[1].seeds == 2  # --seeds wins over the presets
    for overrides, msg in ((["seeds=0"], "seeds must be"), (["space.seed.grid=[0, 1]"], "drop space.seed"),
                           ([f"name={'n' * 90}"], "too long for 3 seeds")):
        with pytest.raises(ValueError, match=msg):
            seeds("motion", overrides=overrides)


def test_a_rerun_with_more_seeds_resumes_the_seeds_it_has_and_starts_only_the_new(tmp_path):
    import yaml

    from finegym_ray.tune.config import seed_sweeps
    from finegym_ray.tune.sweep import _record_settings, run_sweep

    def record(seeds: int) -> list[bool]:  # per seed's sweep: True where its folder resumes
        sweep, base = load_sweep(str(PRESET / "frames.yaml"), [f"sweeps={tmp_path}", f"seeds={seeds}"])
        return [_record_settings(str(tmp_path / s.name), s, b) for s, b in seed_sweeps(sweep, base)]

    assert record(2) == [False, False] and record(3) == [True, True, False] and record(1) == [True]
    # A folder that a version without seeds made resumes too.
    uri = tmp_path / "frames" / "sweep.yaml"
    saved = yaml.safe_load(uri.read_text())
    del saved["sweep"]["seeds"]
    uri.write_text(yaml.safe_dump(saved))
    assert record(1) == [True]
    sweep, base = load_sweep(str(PRESET / "frames.yaml"), ["seeds=2"])
    with pytest.raises(ValueError, match="a sweep trains each config once"):
        run_sweep(sweep, base)


def test_study_store_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mine.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="not made by the study preset"):
        studies.make_study_store(str(tmp_path / "store"), SynthConfig(), PreprocessConfig())
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / studies.STORE_MARKER).write_text("made_by: finegym-ray study\nsynth: {noise: 99}\npreprocess: {}\n")
    with pytest.raises(ValueError, match="other synth or preprocess settings"):
        studies.make_study_store(str(marked), SynthConfig(), PreprocessConfig())
    assert (tmp_path / "store" / "mine.txt").read_text() == "a user's file"


def test_a_study_store_made_before_a_setting_existed_is_the_same_store(tmp_path):
    from dataclasses import asdict

    synth, preprocess = SynthConfig(), PreprocessConfig()
    older = {k: v for k, v in asdict(synth).items() if not k.startswith("pose_")}  # made before SynGym drew poses
    store = tmp_path / "store"
    store.mkdir()
    (store / studies.STORE_MARKER).write_text(json.dumps({"made_by": "finegym-ray study", "synth": older,
                                                          "preprocess": asdict(preprocess)}))
    (store / "summary.json").write_text("{}")
    assert studies.make_study_store(str(store), synth, preprocess) == str(store)
    with pytest.raises(ValueError, match="synth.pose_jitter 1.0 -> 3.0"):
        studies.make_study_store(str(store), SynthConfig(pose_jitter=3.0), preprocess)


def test_making_the_study_store_says_what_it_does_with_progress(ray_cluster, tmp_path):
    from finegym_ray.cli import smoke
    from finegym_ray.config import apply_overrides

    lines: list[str] = []
    store = tmp_path / "store"
    synth, preprocess = (apply_overrides(SynthConfig(), smoke.SYNTH),
                         apply_overrides(PreprocessConfig(), smoke.PREPROCESS))
    studies.make_study_store(str(store), synth, preprocess, say=lines.append)
    assert lines[0].startswith(f"rendering SynGym into {tmp_path / 'syngym'} as Ray tasks (2 videos"), lines
    assert [line.split(" videos")[0] for line in lines[1:3]] == ["1/2", "2/2"] and "/s" in lines[1], lines
    assert f"cutting clips into {store}" in lines and pq.read_table(store / "clips").num_rows > 0


def test_the_preset_files_load():
    synth, _ = studies.store_settings(str(PRESET / "store.yaml"))
    assert synth.events == [4] and synth.figure_scale > 1
    for name in studies.STUDIES:
        for folder in (PRESET, PRESET.parent):
            sweep, base = load_sweep(str(folder / f"{name}.yaml"), [])
            assert sweep.name == name and len(sweep.space) == 1, (folder, name)


# One-epoch trials of test_sweep's tiny TSN, one CPU each; grids cut to what shows the study.
TINY = [f"train.{k}={json.dumps(v)}" for k, v in TRAIN.items()] + [
    "train.epochs=1", "train.val_every=1", "max_concurrent_trials=1"]
GRIDS = {"frames": ["space.segments.grid=[1, 2]"], "order": [], "test_segments": ["space.model.grid=[tsn]"],
         "motion": []}


def _run(name: str, data: str, sweeps: Path, lines: list[str]) -> dict:
    sweep, base = load_sweep(str(PRESET / f"{name}.yaml"), [*TINY, f"train.data={data}", f"sweeps={sweeps}",
                                                           *GRIDS[name]])
    return studies.run_study(name, sweep, base, test_segments=(3,), samples=200, say=lines.append)


def _evaluated_run(runs: Path, name: str, labels: np.ndarray, right: np.ndarray, classes: list[str]) -> str:
    """A run folder holding what its evaluation leaves: eval/scores.parquet, eval/metrics.json."""
    (runs / name / "eval").mkdir(parents=True)
    pq.write_table(_scores(labels, right, len(classes)), runs / name / "eval" / "scores.parquet")
    (runs / name / "eval" / "metrics.json").write_text(json.dumps(
        {"labelled": len(labels), "per_class": [{"class": i, "name": c} for i, c in enumerate(classes)]}))
    return str(runs / name)


def test_motion_compares_the_rgb_and_flow_trials_evaluations_per_class(tmp_path):
    """The motion study from its two trials' evaluations as scoring leaves them: the trials
    grouped by modality, the classes named as the evaluation names them, the flow run right
    on every clip and the RGB run on half."""
    from finegym_ray.train.config import TrainConfig
    from finegym_ray.tune.results import TrialRecord

    labels = np.arange(120) % 3
    classes = ["salto", "split leap", "turn"]
    trials = [TrialRecord("rgb0", _evaluated_run(tmp_path, "rgb", labels, np.arange(120) % 2 == 0, classes),
                          {"modality": "rgb"}, "finished"),
              TrialRecord("flow0", _evaluated_run(tmp_path, "flow", labels, np.ones(120, bool), classes),
                          {"modality": "flow"}, "finished")]
    with charts.recording() as drawn:
        table, png = studies.STUDIES["motion"]([trials], TrainConfig(), samples=100, say=lambda _m: None)
    rows = table.to_pylist()
    assert rows[0]["class"] is None and [r["name"] for r in rows[1:]] == classes
    assert all(r["clips"] == 40 for r in rows[1:]) and rows[0]["clips"] == 120
    assert {c[:8] for c in classes} <= {t[:8] for t in drawn}  # the chart names the classes, not their ids
    assert [r["flow"] for r in rows] == [1.0] * 4
    assert rows[0]["rgb"] == pytest.approx(0.5) and rows[0]["rgb_lo"] < 0.5 < rows[0]["rgb_hi"]
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(ValueError, match="motion compares an rgb and a flow run"):
        studies.STUDIES["motion"]([trials[:1]], TrainConfig(), samples=100, say=lambda _m: None)


# Not pretraining: it trains its source weights, then two I3D trials (158 s in CI's
# suite, more than any other study); nor motion, which trains an RGB and a flow TSN and
# evaluates each as frames does (146 s); nor order, which trains a TSN and a TRN and
# evaluates each twice (95 s). Their tables and grids are tested without Ray (motion from
# its trials' evaluations just above, order's pairing of the shuffled evaluation with the
# ordered one at the top of this file; the shuffled scoring in train/test_evaluate.py),
# and they run through run_study as the others do.
@pytest.mark.parametrize("name", [n for n in studies.STUDIES if n not in ("pretraining", "motion", "order")])
@pytest.mark.e2e
def test_each_study_writes_its_table_and_chart(name, tiny_store, tmp_path, request):
    # test_segments on a store where a video is missing: its table says on how many of the labelled clips.
    data = (request.getfixturevalue("partial_store") if name == "test_segments" else tiny_store)[0]
    lines: list[str] = []
    result = _run(name, data, tmp_path, lines)
    table = result["table"].to_pylist()
    folder = tmp_path / name / "study"
    assert pq.read_table(folder / "study.parquet").num_rows == len(table)
    assert (folder / "study.csv").read_text().count("\n") == len(table) + 1
    png = cv2.imread(str(folder / "study.png"))
    assert png is not None and png.shape[:2] == (440, 860)
    for r in table:
        assert r["mean_class_lo"] <= r["mean_class"] + 1e-9 and r["mean_class"] <= r["mean_class_hi"] + 1e-9, r
    runs = {t.trial_id: t.run for t in result["sweep"]["trials"]}
    if name == "frames":
        assert [r["segments"] for r in table] == [1, 2]
        # Again: the sweep resumes with nothing to train and the evaluations are reused.
        metrics = [Path(run) / "eval" / "metrics.json" for run in runs.values()]
        mtimes = [m.stat().st_mtime for m in metrics]
        again: list[str] = []
        assert _run(name, data, tmp_path, again)["table"].to_pylist() == table
        assert any("resuming the sweep" in line for line in again) and not any(" started " in x for x in again)
        assert [m.stat().st_mtime for m in metrics] == mtimes
    else:
        assert [(r["model"], r["test_segments"]) for r in table] == [("tsn", 2), ("tsn", 3)]
        assert table[0]["diff_mean_class"] == 0
        from finegym_ray.train.data import load_split_labels

        gone = request.getfixturevalue("partial_store")[2]
        labelled = load_split_labels(data, "subaction_event", "train").labels  # the preset validates on train
        assert all((r["clips"], r["labelled"]) == (sum(not k.startswith(gone + "_") for k in labelled), len(labelled))
                   for r in table)
        assert any(line.startswith("training on the clips that exist: train ") for line in lines), lines
        (run,) = runs.values()
        assert (Path(run) / "eval" / "segments_3" / "metrics.json").exists()


@pytest.mark.parametrize("preset", ["finegym", "syngym"])
@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_every_study_smoke_test_fits_two_cpus_without_a_gpu(name, preset):
    from finegym_ray.capacity import shortfall, sweep_needs
    from finegym_ray.cli.study import study_config

    sweep, _ = study_config(name, preset=preset, config=None, data=None, overrides=[], smoke_test=True)
    assert shortfall(sweep_needs(sweep.resources), [{"CPU": 2.0}]) is None
