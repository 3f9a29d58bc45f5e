"""The interval of a detector's mAP: a bootstrap over the validation videos, a video's
routines drawn together."""

from finegym_ray.localize.evaluate import bootstrap_map, format_results
from finegym_ray.localize.metric import detection_map


def _routines():
    """10 routines of two videos: those of video a found exactly, those of b missed."""
    gt, det = {}, {}
    for video in ("a", "b"):
        for r in range(5):
            key = f"{video}_E_{r:06d}_{r + 1:06d}"
            gt[key] = [("jump", 1.0, 2.0)]
            det[key] = [("jump", 1.0, 2.0, 0.9)] if video == "a" else [("jump", 5.0, 6.0, 0.9)]
    return gt, det


def test_routines_of_one_video_are_drawn_together():
    gt, det = _routines()
    by_video = {k: k.split("_E_")[0] for k in gt}
    grouped = bootstrap_map(gt, det, groups=by_video, samples=400)["average_map"]
    alone = bootstrap_map(gt, det, samples=400)["average_map"]
    # Two videos: a draw holds both, or one of them twice (mAP 1 or 0) half the time.
    assert grouped[0] == 0.0 and grouped[1] == 1.0
    # Ten routines drawn one by one: nearly every draw mixes both videos.
    assert 0.0 < alone[0] < 0.5 < alone[1] < 1.0


def test_the_table_says_over_how_many_videos_and_sequences():
    gt, det = _routines()
    result = detection_map(gt, det)
    line = format_results({"result": result, "level": "subaction", "run": "r", "outputs": {},
                           "intervals": {"average_map": [0.0, 1.0]},
                           "metrics": {"videos": 10, "val_videos": 2}}).splitlines()[-1]
    assert line.endswith("(bootstrap over the 2 val videos, 10 sequences)")
