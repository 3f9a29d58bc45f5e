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


def test_short_clips_repeat_their_last_frame():
    assert SegmentSampler(8).test(3).ravel().tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert SegmentSampler(2, 5).test(3).tolist() == [[0, 1, 2, 2, 2], [0, 1, 2, 2, 2]]
    assert DenseSampler(4, 2).test(3).tolist() == [[0, 2, 2, 2]]


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
