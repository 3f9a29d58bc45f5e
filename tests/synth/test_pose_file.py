"""SynGym's 2-D poses (annotations/gym_2d.pkl): the figure's joints in COCO-17 order,
left and right as on a person, in the frames of each sub-action's clip, with what a pose
estimator does to them (jitter, joints lost in fast motion, a coach)."""

import math
from dataclasses import replace

import av
import numpy as np
import pytest

from finegym_ray.dataset.annotations import parse_annotations
from finegym_ray.dataset.poses import COCO17, read_pose_pickle
from finegym_ray.errors import InputError
from finegym_ray.synth import render
from finegym_ray.synth.config import SynthConfig
from finegym_ray.synth.generate import ANNOTATIONS, POSES, SPLIT_FILES, plan_dataset
from finegym_ray.synth.motion import BODY, TORSO, Pose, standing
from finegym_ray.synth.poses import FOUND_SCORE, MISSED_SCORE, joint_speed, observe, subaction_frames
from finegym_ray.video.decode import WindowDecoder

J = {name: i for i, name in enumerate(COCO17)}
SIDES = [(f"left_{part}", f"right_{part}") for part in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee",
                                                         "ankle")]
TINY = SynthConfig(videos=1, seed=5, width=192, height=108, events_per_video=[2, 2], subactions_per_event=[3, 3],
                   idle_range_s=[1.0, 1.5], mens_event_fraction=0.0, clutter=3, noise=0.0)


def _screen_x(pose: Pose) -> dict[str, float]:
    return {name: xy[0] for name, xy in zip(COCO17, render.coco_joints(pose))}


@pytest.mark.parametrize("facing", [1, -1])
def test_her_right_is_on_the_viewers_left_while_she_faces_the_camera(facing):
    # Frontal (a side salto's view), arms raised sideways and legs apart.
    front = standing(1.0, 0.86, facing, frontal=True, arm=1.5, split=0.8)
    # In profile, a quarter twist turns her front to the camera (render._faces_camera).
    turned = standing(1.0, 0.86, facing, arm=0.3, twist=math.pi / 2)
    for pose in (front, turned):
        assert render._faces_camera(pose) > 0.99
        x = _screen_x(pose)
        for left, right in SIDES:
            if not (pose is turned and left.endswith(("wrist", "knee", "ankle"))):  # limbs drawn on z = 0
                assert x[right] < x[left], (facing, pose.frontal, left)
        # Her back to the camera: her right on the viewer's right.
        x = _screen_x(replace(pose, twist=pose.twist + math.pi))
        assert x["right_shoulder"] > x["left_shoulder"] and x["right_hip"] > x["left_hip"]


def test_coco_joints_sit_on_the_drawn_figure():
    for pose in (standing(1.0, 0.86, 1, split=0.9, arm=2.0), Pose(0.8, 0.5, -1, rotation=2.0, hip=1.0, knee=1.5),
                 standing(0.5, 0.86, -1, frontal=True, split=0.6, arm=1.2)):
        drawn, coco = render._joints(pose), np.array(render.coco_joints(pose))
        wrists, ankles, knees = (sorted(map(tuple, coco[[J[f"left_{p}"], J[f"right_{p}"]]]))
                                 for p in ("wrist", "ankle", "knee"))
        assert wrists == sorted([drawn["hand1"], drawn["hand2"]])
        assert ankles == sorted([drawn["foot1"], drawn["foot2"]]) and knees == sorted([drawn["knee1"], drawn["knee2"]])
        assert np.allclose(coco[[J["left_hip"], J["right_hip"]]].mean(0), drawn["hip"])
        assert np.allclose(coco[[J["left_shoulder"], J["right_shoulder"]]].mean(0), drawn["neck"], atol=0.01 * BODY)
        for side in ("left", "right"):  # elbows half-way along the arm
            assert np.allclose(coco[J[f"{side}_elbow"]], (coco[J[f"{side}_shoulder"]] + coco[J[f"{side}_wrist"]]) / 2)
        head = np.linalg.norm(coco[:5] - np.array(drawn["head"]), axis=1)
        assert head.max() < 0.065 * BODY and np.linalg.norm(coco[0] - np.array(drawn["neck"])) < TORSO


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One tiny video with a coach, and its poses: (plan, path, records)."""
    plan = plan_dataset(TINY)[0]
    path = str(tmp_path_factory.mktemp("posevideo") / "v.mp4")
    return plan, path, render.render_video_poses(plan, replace(TINY, pose_coach=True), path)


def test_each_sub_action_has_the_frames_of_its_clip_inside_the_frame(rendered):
    plan, path, records = rendered
    keys = [s.key for s in subaction_frames(plan)]
    assert [r.key for r in records] == keys and len(keys) == 4
    with WindowDecoder(path) as decoder:
        events = {ev.start_s: ev for ev in plan.events}
        windows = [(ev.start_s + s.stages[0][0], ev.start_s + s.stages[-1][1])
                   for ev in events.values() for s in ev.subactions]
        assert [len(decoder.select(a, b)) for a, b in windows] == [r.total_frames for r in records]
    for r in records:
        assert r.img_shape == (TINY.height, TINY.width) and r.keypoint.shape == (2, r.total_frames, 17, 2)
        x, y = r.keypoint[..., 0], r.keypoint[..., 1]
        assert (x >= 0).all() and (x <= TINY.width - 1).all() and (y >= 0).all() and (y <= TINY.height - 1).all()
        assert (r.score[0] > 0).mean() > 0.9  # the gymnast stays in view (figure_scale 1)


def test_the_coach_stands_still_with_lower_scores_and_is_drawn(rendered, tmp_path):
    plan, path, records = rendered
    for r in records:
        coach, score = r.keypoint[1], r.score[1]
        seen = score > 0
        assert ((score[seen] >= 0.3) & (score[seen] <= 0.6)).all() and seen.mean() > 0.5
        # Still: only the camera's drift and the jitter move the coach's joints.
        assert np.abs(coach - coach.mean(0))[seen].max() < 0.1 * TINY.height
    without = str(tmp_path / "without.mp4")
    render.render_video(plan, TINY, without)
    with av.open(path) as a, av.open(without) as b:
        frames = zip(a.decode(video=0), b.decode(video=0))
        assert any(not np.array_equal(x.to_ndarray(), y.to_ndarray()) for x, y in frames)


def _sweep(frames: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """17 joints moving right at 0 to 16 body lengths per second, 50 px bodies, 25 fps."""
    t = np.arange(frames, dtype=np.float32)[:, None]
    speed = np.arange(17, dtype=np.float32)[None]
    x = 40 + t * speed * 50 / 25
    joints = np.stack([x, np.broadcast_to(50 + 2 * np.arange(17, dtype=np.float32), x.shape)], -1)
    return joints, np.full(frames, 50, np.float32)


def test_without_jitter_or_misses_the_estimator_reports_the_true_joints():
    joints, body = _sweep()
    clean = replace(TINY, pose_jitter=0.0, pose_miss_speed=None, width=2000, height=200)
    keypoint, score = observe(joints, body, fps=25, size=(200, 2000), config=clean, rng=np.random.default_rng(0))
    assert np.allclose(keypoint, joints) and ((score >= FOUND_SCORE[0]) & (score <= FOUND_SCORE[1])).all()


def test_jitter_is_its_std_in_pixels_at_360_rows():
    joints, body = np.full((4000, 17, 2), 100.0, np.float32), np.full(4000, 50.0, np.float32)
    config = replace(TINY, pose_jitter=2.0, pose_miss_speed=None)
    keypoint, _ = observe(joints, body, fps=25, size=(720, 1280), config=config, rng=np.random.default_rng(0))
    assert np.std(keypoint - joints) == pytest.approx(4.0, rel=0.02)


def test_fast_joints_are_missed_along_their_blur():
    joints, body = _sweep()
    config = replace(TINY, pose_jitter=0.0, pose_miss_speed=6.0)
    keypoint, score = observe(joints, body, fps=25, size=(200, 2000), config=config, rng=np.random.default_rng(0))
    velocity, speed = joint_speed(joints, body, 25)
    assert np.allclose(speed, np.arange(17)[None], atol=1e-3)
    fast = speed > 6.0
    assert (score[fast] < MISSED_SCORE[1]).all() and (score[~fast] >= FOUND_SCORE[0]).all()
    behind = (joints - keypoint)[..., 0]  # along the streak swept in one frame
    assert (behind[fast] >= 0).all() and (behind[fast] <= velocity[..., 0][fast] + 1e-4).all()
    assert np.array_equal(keypoint[~fast], joints[~fast])


def test_joints_outside_the_frame_score_0_on_its_edge():
    joints = np.array([[[-5.0, 10.0], [50.0, 120.0]] + [[10.0, 10.0]] * 15], np.float32)
    config = replace(TINY, pose_jitter=0.0)
    keypoint, score = observe(joints, np.full(1, 30.0, np.float32), fps=25, size=(108, 192), config=config,
                              rng=np.random.default_rng(0))
    assert keypoint[0, :2].tolist() == [[0.0, 10.0], [50.0, 107.0]] and score[0, :2].tolist() == [0.0, 0.0]
    assert (score[0, 2:] > 0).all()


@pytest.mark.parametrize("override", [{"pose_jitter": -1.0}, {"pose_miss_speed": 0.0}])
def test_pose_settings_out_of_range_are_refused(override):
    with pytest.raises(InputError, match=next(iter(override))):
        replace(TINY, **override)


def test_generate_writes_the_poses_of_every_sub_action_with_the_split_files_splits(tiny_gym):
    ann = tiny_gym / "annotations"
    records, splits = read_pose_pickle(str(ann / POSES))
    events = parse_annotations((ann / ANNOTATIONS).read_text())
    keys = sorted(s.key for ev in events for s in ev.subactions or ())
    assert sorted(r.key for r in records) == keys
    listed = {split: sorted(line.split()[0] for subset in ("gym288",)
                            for line in (ann / SPLIT_FILES[subset, split]).read_text().splitlines())
              for split in ("train", "val")}
    assert {k: sorted(v) for k, v in splits.items()} == {k: v for k, v in listed.items() if v}
