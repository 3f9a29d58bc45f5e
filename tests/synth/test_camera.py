"""SynGym's framing options: routines drawn from chosen events, and a camera that follows
the gymnast at ``figure_scale`` times the wide shot's size."""

from dataclasses import replace

import av
import numpy as np
import pytest

from finegym_ray.synth.config import SynthConfig
from finegym_ray.synth.generate import plan_dataset
from finegym_ray.synth.render import render_video

# One UB routine's worth of video, no clutter or noise, so that the athlete's colours
# stand out: her skin (BGR 150, 180, 225; the officials' is 150, 170, 200) is counted.
UB = SynthConfig(videos=1, width=192, height=108, events=[4], events_per_video=[1, 1], subactions_per_event=[3, 3],
                 idle_range_s=[0.5, 0.5], mens_event_fraction=0.0, clutter=0, noise=0.0, camera_jitter=0.0, zoom=0.0)


def _skin_pixels(path: str) -> float:
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="bgr24") for f in c.decode(video=0)]).astype(int)
    skin = (np.abs(frames - np.array([150, 180, 225])) <= 12).all(-1)
    return float(skin.sum(axis=(1, 2)).mean())


def test_events_choose_the_routines():
    plans = plan_dataset(replace(UB, videos=3, events_per_video=[3, 3]))
    assert {e.label for p in plans for e in p.events} == {4}


def test_figure_scale_enlarges_the_gymnast(tmp_path):
    (plan,) = plan_dataset(UB)
    wide = _skin_pixels(render_video(plan, UB, str(tmp_path / "wide.mp4")))
    close = _skin_pixels(render_video(plan, replace(UB, figure_scale=2.0), str(tmp_path / "close.mp4")))
    assert wide > 0 and close > 2.5 * wide  # area grows with the square of the scale (4x, less the edges)


@pytest.mark.parametrize("bad,msg", [({"figure_scale": 0.5}, "figure_scale"), ({"figure_scale": 5.0}, "figure_scale"),
                                     ({"events": []}, "events"), ({"events": [5]}, "events")])
def test_bad_framing_is_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        replace(UB, **bad)
