import numpy as np
import pytest

from finegym_ray.dataset.sampling import DenseSampler, SegmentSampler


@pytest.mark.parametrize("n", [1, 3, 8, 45, 301])
@pytest.mark.parametrize("segments,length", [(1, 1), (3, 1), (8, 1), (3, 5)])
def test_segment_training_draws_stay_inside_their_segment(n, segments, length):
    sampler = SegmentSampler(segments, length)
    rng = np.random.default_rng(0)
    span = max(n - length + 1, 1)
    for _ in range(20):
        idx = sampler.train(n, rng)
        assert idx.shape == (segments, length) and idx.min() >= 0 and idx.max() <= n - 1
        starts = idx[:, 0]
        if span >= segments:  # every segment has room: start s lies in [s*span/S, (s+1)*span/S)
            s = np.arange(segments)
            assert (starts >= np.floor(s * span / segments)).all()
            assert (starts < np.floor((s + 1) * span / segments)).all()
            assert (np.diff(idx, axis=1) == 1).all()  # consecutive frames (flow stacks)


def test_segment_training_covers_every_offset():
    seen = {int(SegmentSampler(4).train(40, np.random.default_rng(s))[0, 0]) for s in range(300)}
    assert seen == set(range(10))


def test_segment_test_is_the_centre_and_views_spread():
    s = SegmentSampler(4)
    assert s.test(40).ravel().tolist() == [5, 15, 25, 35]
    assert s.test(40, 0, 2).ravel().tolist() == [2, 12, 22, 32]
    assert s.test(40, 1, 2).ravel().tolist() == [7, 17, 27, 37]
    with pytest.raises(ValueError):
        s.test(40, 2, 2)


def test_short_clips_share_their_frames():
    assert SegmentSampler(8).test(3).ravel().tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert SegmentSampler(2, 5).test(3).tolist() == [[0, 1, 2, 2, 2], [0, 1, 2, 2, 2]]  # a stack repeats its last
    assert DenseSampler(4, 2).test(3).tolist() == [[0, 1, 1, 2]]  # a dense clip shrinks its stride


def test_dense_windows():
    d = DenseSampler(8, 2)
    assert d.span == 15
    assert d.test(35).tolist() == [list(range(10, 26, 2))]
    for seed in range(20):
        idx = d.train(35, np.random.default_rng(seed))
        assert idx.shape == (1, 8) and (np.diff(idx) == 2).all() and idx.max() <= 34
    assert d.test(35, 0, 3)[0, 0] < d.test(35, 1, 3)[0, 0] < d.test(35, 2, 3)[0, 0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        SegmentSampler(0)
    with pytest.raises(ValueError):
        DenseSampler(4, 0)


# ----------------------------------------------------------------------------------
# Dense clips of short sub-actions (issue 18, item 9): the stride shrinks evenly, so
# every frame of a short clip is seen once or more, in order; the test start is
# mmaction2 SampleFrames' (centre: (n - span) // 2; views evenly from 0 to n - span).
# ----------------------------------------------------------------------------------
def _distinct_in_order(idx: np.ndarray, n: int) -> None:
    flat = idx.ravel()
    assert flat[0] == 0 and flat[-1] == n - 1  # the whole sub-action, first to last frame
    assert (np.diff(flat) >= 0).all()  # in time order: no wrap-around, no jump back
    counts = np.bincount(flat, minlength=n)
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1  # every frame, evenly often


def test_dense_clip_of_a_short_subaction_spreads_over_all_its_frames():
    d = DenseSampler(32, 2)  # I3D's 32 frames 2 apart: a 63-frame span
    idx = d.test(20)
    assert idx.shape == (1, 32)
    _distinct_in_order(idx, 20)  # was 11 distinct frames and 22 repeats of the last
    for seed in range(5):  # training draws the same: there is no room for another start
        np.testing.assert_array_equal(d.train(20, np.random.default_rng(seed)), idx)
    for v in range(3):
        np.testing.assert_array_equal(d.test(20, v, 3), idx)
    # Shorter than the frame count: frames repeat evenly; one frame: all zeros.
    _distinct_in_order(d.test(5), 5)
    assert d.test(1).tolist() == [[0] * 32]
    # Between the frame count and the span: a smaller stride (1 or 2), first to last frame.
    for n in (32, 33, 45, 62):
        idx = d.test(n).ravel()
        assert idx[0] == 0 and idx[-1] == n - 1 and set(np.diff(idx)) <= {1, 2}


def test_dense_clip_exactly_the_span_and_longer():
    d = DenseSampler(32, 2)
    assert d.test(63).ravel().tolist() == list(range(0, 63, 2))  # exactly: the stride as asked
    assert d.train(63, np.random.default_rng(0)).ravel().tolist() == list(range(0, 63, 2))
    # Longer: mmaction2's test start, max_offset // 2 for one view ...
    assert d.test(100)[0, 0] == (100 - 63) // 2 == 18
    assert d.test(64)[0, 0] == 0
    # ... and round(v * max_offset / (views - 1)) for several: the first and last windows at the ends.
    assert [int(d.test(100, v, 3)[0, 0]) for v in range(3)] == [0, 18, 37]
    assert [int(d.test(100, v, 2)[0, 0]) for v in range(2)] == [0, 37]
    for n in (64, 100, 301):
        for seed in range(10):
            idx = d.train(n, np.random.default_rng(seed)).ravel()
            assert (np.diff(idx) == 2).all() and 0 <= idx[0] and idx[-1] <= n - 1
