"""Evaluation metrics one level up, the fusion of two runs' scores (no Ray), and the
test-time variants of the paper's Sec. 4.4 (other segments, shuffled frames)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from finegym_ray.cli import build_parser, main
from finegym_ray.config import to_yaml
from finegym_ray.models.recognizers import MODELS
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.data import SampleShards, SplitLabels, load_split_labels, shards_with
from finegym_ray.train.evaluate import (
    ScoreClips,
    check_complete,
    check_scored,
    checkpoint_at_test,
    config_at_test,
    coverage_note,
    coverage_of,
    default_fuse_weights,
    evaluate,
    format_results,
    frame_order,
    fuse_scores,
    fused_coverage,
    fusion_dropped,
    level_metrics,
    metrics_of,
    permute_frames,
    variant_name,
)


def _scores(pred, k):
    return np.eye(k)[pred]


def test_set_level_accuracy_from_element_predictions():
    # classes 0, 1 in set 21 and class 2 in set 22
    labels = np.array([0, 1, 2, 2])
    scores = _scores([1, 1, 2, 0], 3)
    m, cm = metrics_of(scores, labels, ["a", "b", "c"], {"set": (21, 21, 22)})
    assert m["top1"] == 0.5 and cm.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m["mean_class"] == pytest.approx((0 + 1 + 0.5) / 3)
    # sets: true 21 21 22 22, predicted 21 21 22 21
    assert m["levels"]["set"] == {"top1": 0.75, "mean_class": 0.75}
    assert level_metrics(scores, labels, (1, 1, 1)) == {"top1": 1.0, "mean_class": 1.0}


def test_fusion_averages_the_scores_of_the_clips_both_runs_scored_and_counts_the_others():
    a = pa.table({"key": ["x", "y"], "label": [0, 1], "scores": [[0.9, 0.1], [0.6, 0.4]]})
    b = pa.table({"key": ["x", "y"], "label": [0, 1], "scores": [[0.3, 0.7], [0.0, 1.0]]})
    fused = np.stack(fuse_scores(a, b, (1.0, 1.0)).column("scores").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(fused, [[0.6, 0.4], [0.3, 0.7]])
    assert fusion_dropped(a, b) == (0, 0)
    # Two stores that lack other clips: fused on the ones both have, by key, whatever the row order.
    c = pa.table({"key": ["z", "y"], "label": [0, 1], "scores": [[0.5, 0.5], [0.0, 1.0]]})
    fused = fuse_scores(a, c, (1.0, 1.0))
    assert fused.column("key").to_pylist() == ["y"] and fusion_dropped(a, c) == (1, 1)
    np.testing.assert_allclose(fused.column("scores").to_pylist(), [[0.3, 0.7]])
    with pytest.raises(ValueError, match="no clip in common"):
        fuse_scores(a.slice(0, 1), c.slice(0, 1), (1.0, 1.0))
    with pytest.raises(ValueError, match="label the clips differently"):
        fuse_scores(a, b.set_column(1, "label", pa.array([1, 1])), (1.0, 1.0))
    # The fusion's coverage: the run's labelled keys, less its own absent ones and those only it scored.
    split = SplitLabels({"x": 0, "y": 1}, ("p", "q"), absent={"w": "no video"})
    assert fused_coverage(split, 1, (1, 1)) == {"labelled": 3, "without_clip": 2, "without_clip_why": {
        "no video": 1, "scored by one run only": 1}}


def test_fusion_weights_default_to_tsns_and_weight_the_mean():
    # TSN (Wang et al., 2016) weights the RGB and flow streams 1 : 1.5.
    assert default_fuse_weights("rgb", "flow") == (1.0, 1.5)
    assert default_fuse_weights("flow", "rgb") == (1.5, 1.0)
    assert default_fuse_weights("rgb", "rgb") == (1.0, 1.0)
    a = pa.table({"key": ["x"], "label": [0], "scores": [[1.0, 0.0]]})
    b = pa.table({"key": ["x"], "label": [0], "scores": [[0.0, 1.0]]})
    fused = np.stack(fuse_scores(a, b, (1.0, 1.5)).column("scores").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(fused, [[0.4, 0.6]])  # a weighted mean: still sums to 1
    for bad in ((0.0, 1.0), (-1.0, 2.0), (1.0, float("nan"))):
        with pytest.raises(ValueError, match="weights"):
            fuse_scores(a, b, bad)


def test_fuse_weights_option_parses():
    args = build_parser().parse_args(["evaluate", "--run", "r", "--fuse", "f", "--fuse-weights", "1,2.5"])
    assert args.fuse_weights == (1.0, 2.5)
    assert build_parser().parse_args(["evaluate", "--run", "r"]).fuse_weights is None
    for bad in ("1", "1,2,3", "a,b"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["evaluate", "--run", "r", "--fuse-weights", bad])


def _scored(keys, labels, scores=None):
    scores = scores if scores is not None else [[1.0, 0.0]] * len(keys)
    return pa.table({"key": keys, "label": labels, "scores": scores})


def test_scored_clips_must_be_exactly_the_splits_clips():
    split = {"a": 0, "b": 1, "c": 1}
    check_scored(_scored(["a", "b", "c"], [0, 1, 1]), split, "RUN")  # complete: no error
    # A duplicate and a missing clip: the row count matches, the clips do not.
    with pytest.raises(RuntimeError, match=r"RUN: 1 of 3 .* not scored \(e\.g\. c\);.*scored twice or more: b"):
        check_scored(_scored(["a", "b", "b"], [0, 1, 1]), split, "RUN")
    with pytest.raises(RuntimeError, match=r"not in the split: z"):
        check_scored(_scored(["a", "b", "c", "z"], [0, 1, 1, 0]), split, "RUN")
    with pytest.raises(RuntimeError, match=r"label"):
        check_scored(_scored(["a", "b", "c"], [0, 0, 1]), split, "RUN")
    with pytest.raises(RuntimeError, match=r"not finite.*\bb\b"):
        check_scored(_scored(["a", "b", "c"], [0, 1, 1], [[1.0, 0.0], [float("nan")] * 2, [0.0, 1.0]]), split, "RUN")


def test_coverage_is_reported_beside_every_figure_and_the_strict_protocol_refuses_a_gap():
    split = SplitLabels({"a": 0, "b": 1, "c": 1}, ("x", "y"), absent={"d": "no video", "e": "no video",
                                                                     "f": "failed unit"})
    m = {"clips": 3, **coverage_of(split)}
    assert m == {"clips": 3, "labelled": 6, "without_clip": 3, "without_clip_why": {"no video": 2, "failed unit": 1}}
    assert coverage_note(m) == "on 3 of 6 clips; 3 without a clip (2 no video, 1 failed unit)"
    assert coverage_note({"clips": 8521, "labelled": 8521, "without_clip": 0}) == "on 8,521 of 8,521 clips"
    figures = {"top1": 0.5, "top1_lo": 0.25, "top1_hi": 0.75, "mean_class": 0.5, "mean_class_lo": 0.2,
               "mean_class_hi": 0.8, "model": "tsm", "modality": "rgb", "variant": ""}
    table = format_results({"run": {**figures, **m, "checkpoint": "runs/tsm/epoch_0001"}})
    head, row, note = table.splitlines()
    assert "clips of labelled" in head and "3 of 6" in row
    assert note == "tsm: mean class and top-1 on 3 of 6 clips; 3 without a clip (2 no video, 1 failed unit)"
    complete = {**figures, "clips": 3, **coverage_of(SplitLabels({"a": 0}, ("x",)))}
    assert len(format_results({"run": {**complete, "checkpoint": "runs/tsm/epoch_0001"}}).splitlines()) == 2
    check_complete(SplitLabels({"a": 0}, ("x",)), "RUN")
    with pytest.raises(ValueError, match=r"^RUN: 3 of 6 labelled clips have no clip \(2 no video, 1 failed unit\): "
                                         r"--require-complete"):
        check_complete(split, "RUN")


def test_metrics_carry_a_95_percent_bootstrap_interval():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 128)
    scores = rng.random((128, 4))
    scores[np.arange(64), labels[:64]] += 1  # about 60 % right
    m, _ = metrics_of(scores, labels, ["a", "b", "c", "d"])
    for name in ("top1", "mean_class"):
        lo, hi = m[f"{name}_lo"], m[f"{name}_hi"]
        assert lo < m[name] < hi and 0.1 < hi - lo < 0.25  # 128 clips: about +-8 points
    assert m["interval"] == {"level": 0.95, "method": "percentile bootstrap over clips", "samples": 1000, "seed": 0}
    table = format_results({"run": {**m, "model": "tsn", "modality": "flow", "checkpoint": "r/tsn/epoch_0001",
                                    "variant": "", "labelled": 128, "without_clip": 0}})
    row = table.splitlines()[1]
    assert f"{m['top1']:.1%} [{m['top1_lo']:.1%}, {m['top1_hi']:.1%}]".replace("%", "") in row.replace("%", "")
    assert "95 %" in table


# ----------------------------------------------------------------------------------
# Test-time variants (the paper's Sec. 4.4): other segments, shuffled frames. Runs are
# one checkpoint of an untrained tiny model: the variants concern what the model is
# shown, which needs weights, not training.
# ----------------------------------------------------------------------------------
TINY = dict(task="subaction_event", depth=10, base_width=8, crop=32, test_short=48, test_views=1, test_crops=1,
            batch_size=4)


def write_run(runs: Path, model: str, *, data: str = "unused", segments: int = 2,
              class_names: tuple[str, ...] = ("a", "b", "c"), modality: str = "rgb") -> str:
    """RUNS/<model>: one complete checkpoint of a freshly initialised ``model``."""
    torch.manual_seed(0)
    config = TrainConfig(data=data, runs=str(runs), model=model, name=model, segments=segments, modality=modality,
                         **TINY)
    net = MODELS[model](**config.model_kwargs(len(class_names)))
    run = str(runs / model)
    ckpt.write(run, 0, state={"model": net.state_dict()}, config_yaml=to_yaml(config),
               meta={"class_names": list(class_names)})
    return run


def _batch(t: int, n: int = 2, v: int = 2) -> dict:
    """n clips of v views of t random RGB frames, (n, v, t, 3, 32, 32) uint8."""
    rng = np.random.default_rng(0)
    return {"key": np.array([f"clip{i}" for i in range(n)], dtype=object), "label": np.zeros(n, np.int64),
            "flow_bound": np.zeros(n, np.float32), "x": rng.integers(0, 256, (n, v, t, 3, 32, 32), dtype=np.uint8)}


def test_frame_order_is_a_fixed_permutation_per_clip_and_seed_shared_by_its_views():
    orders = {(k, s): frame_order(k, 8, s) for k in ("clipA", "clipB") for s in (0, 1)}
    assert all(sorted(o) == list(range(8)) for o in orders.values())
    np.testing.assert_array_equal(frame_order("clipA", 8, 0), orders["clipA", 0])  # deterministic
    assert len({tuple(o) for o in orders.values()}) == 4  # key and seed both change it
    # Another process (its own hash salt) draws the same order.
    code = "from finegym_ray.train.evaluate import frame_order; print(frame_order('clipA', 8, 0).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert json.loads(out) == orders["clipA", 0].tolist()

    batch = _batch(8, v=3)
    x = batch["x"]
    shuffled = permute_frames(x, batch["key"], seed=1)
    for i, key in enumerate(batch["key"]):
        order = frame_order(key, 8, 1)
        for v in range(3):  # every view of a clip in the clip's one order
            np.testing.assert_array_equal(shuffled[i, v], x[i, v, order])
    assert permute_frames(x[:0], [], 0).shape == (0, *x.shape[1:])


def test_variant_names_and_which_models_take_other_segments():
    assert variant_name() == ""
    assert [variant_name(12), variant_name(shuffle_frames=True), variant_name(5, True), variant_name(None, True, 3),
            variant_name(3, False, 7)] == ["segments_12", "shuffled", "segments_5_shuffled", "shuffled_seed_3",
                                           "segments_3"]
    for model in ("tsn", "tsm"):
        config = TrainConfig(model=model, segments=3)
        assert config_at_test(config, 12).segments == 12 and config_at_test(config, None) is config
    for model, why in (("trn", "relation"), ("trn_multiscale", "relation"), ("i3d", "dense clip"),
                       ("nl_i3d", "dense clip")):
        config = TrainConfig(model=model, segments=4)
        assert config_at_test(config, 4) is config  # as trained is fine
        with pytest.raises(ValueError, match=why):
            config_at_test(config, 5)
    with pytest.raises(ValueError, match="must be >= 1"):
        config_at_test(TrainConfig(model="tsn"), 0)


def test_test_segments_reach_the_model_and_shuffling_changes_only_order_sensitive_models(tmp_path):
    checkpoint, config = checkpoint_at_test(write_run(tmp_path, "tsm", segments=2), 5)
    scorer = ScoreClips(checkpoint.load_state()["model"], 3, config, threads=1)
    assert {m.shift[0] for m in scorer.model.modules() if getattr(m, "shift", None)} == {5}  # TSM's shift
    seen = []
    scorer.model.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    batch = _batch(5)
    assert scorer(batch)["scores"].shape == (2, 3) and seen == [2 * 2 * 5]  # clips x views x segments

    assert all(not np.array_equal(frame_order(k, 4, 0), np.arange(4)) for k in _batch(4)["key"])
    for model, order_matters in (("trn", True), ("tsn", False)):
        checkpoint, config = checkpoint_at_test(write_run(tmp_path, model, segments=4))
        ordered, shuffled = (ScoreClips(checkpoint.load_state()["model"], 3, config, threads=1,
                                        shuffle_seed=s)(_batch(4))["scores"]
                             for s in (None, 0))
        # TSN averages per-segment scores, which no order changes; TRN's relations read the order.
        assert np.allclose(ordered, shuffled, rtol=1e-5, atol=1e-6) is not order_matters, model


def test_other_segments_for_trn_are_refused_before_any_scoring(tmp_path, capsys):
    run = write_run(tmp_path, "trn", segments=3)
    with pytest.raises(ValueError, match="trn's relation MLPs .* 3 trained segments .* 5 segments"):
        evaluate(run, segments=5, say=lambda _m: None)
    # The CLI: one line, exit 2, before Ray starts (no cluster is asked for).
    for argv, needle in ((["--segments", "5"], "5 segments"), (["--segments", "0"], "--segments must be >= 1")):
        assert main(["evaluate", "--run", run, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("finegym-ray: error: ") and needle in err[0], err


def test_evaluate_flags_parse():
    args = build_parser().parse_args(["evaluate", "--run", "r", "--segments", "12", "--shuffle-frames", "--seed", "3"])
    assert (args.segments, args.shuffle_frames, args.seed) == (12, True, 3)
    args = build_parser().parse_args(["evaluate", "--run", "r"])
    assert (args.segments, args.shuffle_frames, args.seed) == (None, False, 0)


@pytest.mark.e2e
def test_variant_evaluation_writes_its_own_folder_and_leaves_the_standard_one(ray_cluster, tiny_store, tmp_path):
    data, _ = tiny_store
    split = load_split_labels(data, "subaction_event", "val")
    run = Path(write_run(tmp_path, "tsm", data=data, segments=2, class_names=split.class_names))
    standard = evaluate(str(run), say=lambda _m: None)["run"]
    before = {p.name: p.read_bytes() for p in (run / "eval").iterdir() if p.is_file()}
    assert (standard["segments"], standard["shuffle_frames"], standard["variant"]) == (2, False, "")
    assert "standard" in format_results({"run": standard})

    # The CLI, as a driver joining the session's cluster.
    r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "evaluate", "--run", str(run), "--segments", "3",
                        "--shuffle-frames", "--address", ray_cluster.address],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = run / "eval" / "segments_3_shuffled"
    assert f"3 segments, frames shuffled (seed 0)) -> {out}" in r.stdout
    assert "segments_3_shuffled" in r.stdout.strip().splitlines()[-1]  # the table's test column
    assert {p.name: p.read_bytes() for p in (run / "eval").iterdir() if p.is_file()} == before
    m = json.loads((out / "metrics.json").read_text())
    assert (m["segments"], m["shuffle_frames"], m["seed"], m["variant"]) == (3, True, 0, "segments_3_shuffled")
    assert m["clips"] == standard["clips"] == len(split.labels)
    scores = {p: np.stack(pq.read_table(p / "scores.parquet").column("scores").to_numpy(zero_copy_only=False))
              for p in (run / "eval", out)}
    assert not np.allclose(*scores.values())  # other frames, in another order
    # The sampler draws 3 segments per view under the test config (SampleShards: what
    # sampled_clips maps over the shards, here called without Ray).
    _, config = checkpoint_at_test(str(run), 3)
    shard = shards_with(data, split.labels)[0]
    assert SampleShards(config, split.labels, train=False)({"shard": [shard]})["x"].shape[1:3] == (1, 3)


@pytest.mark.e2e
def test_fusion_records_its_weights_and_every_evaluation_its_interval(ray_cluster, tiny_store, tmp_path):
    data, _ = tiny_store
    names = load_split_labels(data, "subaction_event", "val").class_names
    rgb = write_run(tmp_path / "rgb", "tsn", data=data, class_names=names)
    flow = write_run(tmp_path / "flow", "tsn", data=data, class_names=names, modality="flow")
    said = []
    results = evaluate(rgb, fuse=flow, say=said.append)
    fused_dir = Path(results["fused"]["out"])
    assert fused_dir.parent == Path(rgb) / "eval" and fused_dir.name.startswith("fused_tsn_")
    m = json.loads((fused_dir / "metrics.json").read_text())
    assert m["fused"] == [rgb, flow] and m["fuse_weights"] == [1.0, 1.5]  # TSN's RGB : flow
    a, b, f = (np.stack(pq.read_table(p / "scores.parquet").column("scores").to_numpy(zero_copy_only=False))
               for p in (Path(rgb) / "eval", Path(flow) / "eval", fused_dir))
    np.testing.assert_allclose(f, (a + 1.5 * b) / 2.5, rtol=1e-6)
    for r in results.values():  # run, other, fused: each with its interval, printed beside the figure
        assert r["top1_lo"] <= r["top1"] <= r["top1_hi"] and r["mean_class_lo"] <= r["mean_class"] <= r["mean_class_hi"]
        assert any(f"top-1 {r['top1']:.1%} [{r['top1_lo']:.1%}, {r['top1_hi']:.1%}]" in line for line in said), said
    # Weights given: recorded as given.
    m = evaluate(rgb, fuse=flow, fuse_weights=(1.0, 1.0), say=lambda _m: None)["fused"]
    assert m["fuse_weights"] == [1.0, 1.0]


# ----------------------------------------------------------------------------------
# Refusals before any Ray work: a checkpoint whose unpickling would run code, and
# outputs that cannot be written.
# ----------------------------------------------------------------------------------
def _make_hostile(run: str, marker: Path) -> None:
    """Replace the state.pt of ``run``'s checkpoint with one whose unpickling would write
    ``marker``, and rewrite its manifest to vouch for it, as anyone with write access to
    a shared bucket could."""
    from tests.support.hostile import WritesMarker as _WritesMarker

    folder = Path(run) / "epoch_0001"
    torch.save({"model": _WritesMarker(str(marker))}, folder / "state.pt")
    blob = (folder / "state.pt").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"bytes": len(blob), "sha256": ckpt._sha256(blob)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _drivers() -> int:
    """How many drivers have ever joined the session's cluster (the GCS job table)."""
    import ray

    return len(ray._private.state.jobs())


def _evaluate_cli(*argv, read_only: str | None = None) -> subprocess.CompletedProcess:
    """``finegym-ray evaluate ARGV`` in a process of its own; ``read_only``: a folder that
    process cannot write. Root writes through chmod, so as root that folder is a
    read-only bind mount in a mount namespace of the process's own; otherwise chmod a-w."""
    command = [sys.executable, "-m", "finegym_ray.cli", "evaluate", *map(str, argv)]
    if read_only is None:
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    if os.geteuid() == 0:
        mount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", read_only, *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    subprocess.run(["chmod", "-R", "a-w", read_only], check=True)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["chmod", "-R", "u+w", read_only], check=True)


def _files(folder: str) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("hostile", ["run", "fuse"])
def test_a_state_that_would_run_code_is_refused_on_the_driver_in_one_line_before_ray(ray_cluster, tiny_store,
                                                                                      tmp_path, hostile):
    data, _ = tiny_store
    names = load_split_labels(data, "subaction_event", "val").class_names
    runs = {name: write_run(tmp_path / name, "tsn", data=data, class_names=names) for name in ("run", "fuse")}
    marker = tmp_path / "marker"
    _make_hostile(runs[hostile], marker)
    before = {name: _files(run) for name, run in runs.items()}
    drivers = _drivers()
    fuse = ["--fuse", runs["fuse"]] if hostile == "fuse" else []
    r = _evaluate_cli("--run", runs["run"], *fuse, "--address", ray_cluster.address)
    said = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2 and len(said) == 1, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert said[0].startswith("finegym-ray: error: ") and f"{runs[hostile]}/epoch_0001/state.pt refused" in said[0]
    # PyTorch's own text advises loading it with weights_only=False: never echoed.
    assert "weights_only" not in said[0] and "trust" not in said[0], said[0]
    assert not marker.exists()
    assert _drivers() == drivers  # no driver joined the cluster: no Ray work at all
    assert {name: _files(run) for name, run in runs.items()} == before  # nothing written, either run


@pytest.mark.e2e
def test_a_read_only_run_is_refused_before_scoring_and_out_takes_the_outputs(ray_cluster, tiny_store, tmp_path,
                                                                            s3_prefix):
    from finegym_ray import storage

    data, _ = tiny_store
    split = load_split_labels(data, "subaction_event", "val")
    run = write_run(tmp_path / "runs", "tsn", data=data, class_names=split.class_names)
    before = _files(run)
    drivers = _drivers()
    r = _evaluate_cli("--run", run, "--address", ray_cluster.address, read_only=run)
    said = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2 and len(said) == 1, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert said[0].startswith(f"finegym-ray: error: {run}/eval: ") and "--out" in said[0], said[0]
    assert _drivers() == drivers  # refused before Ray: nothing scored
    # --out: the outputs go there (here a bucket), the run stays as it was.
    out = f"{s3_prefix}/eval"
    r = _evaluate_cli("--run", run, "--out", out, "--address", ray_cluster.address, read_only=run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"-> {out}" in r.stdout
    metrics = json.loads(storage.read_text(storage.join(out, "metrics.json")))
    assert metrics["clips"] == len(split.labels) == storage.read_parquet(storage.join(out, "scores.parquet")).num_rows
    assert storage.exists(storage.join(out, "confusion.png"))
    assert _files(run) == before


def test_evaluate_help_documents_out(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--out DIR" in text and "instead of RUN/eval/" in text and "s3://" in text, text
