"""Test videos, written once per session (~0.1 s each)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.video.media import write_audio_only, write_video


@dataclass(frozen=True)
class Clip:
    """A generated video and the exact times its frames were written at."""

    path: Path
    times: list[Fraction]  # seconds, frame i at times[i]
    duration: Fraction  # seconds, end of the last frame
    fps: Fraction


CFR_RATES = {"25": Fraction(25), "29.97": Fraction(30000, 1001), "30": Fraction(30)}


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def cfr_clips(video_dir) -> dict[str, Clip]:
    """4 s constant-rate clips at 25, 29.97 and 30 frames/s, GOP 25 frames."""
    clips = {}
    for name, rate in CFR_RATES.items():
        n = int(4 * rate)
        path = write_video(video_dir / f"cfr_{name}.mp4", rate=rate, num_frames=n)
        clips[name] = Clip(path, [Fraction(i) / rate for i in range(n)], Fraction(n) / rate, rate)
    return clips


@pytest.fixture(scope="session", params=list(CFR_RATES))
def cfr_clip(request, cfr_clips) -> Clip:
    return cfr_clips[request.param]


@pytest.fixture(scope="session")
def vfr_clip(video_dir) -> Clip:
    """Irregular frame times on a 1/90000 s clock: 30 frames/s with dropped frames and
    1.5-frame gaps, as phone and screen recordings have."""
    rng = np.random.default_rng(7)
    gaps = rng.choice([3000, 3000, 3000, 3000, 4500, 6000, 9000], size=119)
    pts = [0, *np.cumsum(gaps).tolist()]
    tb = Fraction(1, 90000)
    path = write_video(video_dir / "vfr.mp4", rate=30, pts=pts, time_base=tb)
    times = [p * tb for p in pts]
    # The muxer gives the last frame the stream's nominal duration, 1/30 s.
    return Clip(path, times, times[-1] + Fraction(1, 30), Fraction(30))


@pytest.fixture(scope="session")
def broken_files(video_dir) -> dict[str, Path]:
    """Files that must raise VideoError, by what is wrong with them."""
    files = {"missing": video_dir / "does_not_exist.mp4"}
    for name, faststart in (("truncated_index_at_end", False), ("truncated_index_at_start", True)):
        whole = write_video(video_dir / f"whole_{name}.mp4", rate=25, num_frames=100, faststart=faststart)
        data = whole.read_bytes()
        files[name] = video_dir / f"{name}.mp4"
        files[name].write_bytes(data[: len(data) // 2])
    files["garbage"] = video_dir / "garbage.mp4"
    files["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["text"] = video_dir / "notes.mp4"
    files["text"].write_text("not a video\n" * 50)
    files["empty"] = video_dir / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["audio_only"] = write_audio_only(video_dir / "audio.wav")
    files["directory"] = video_dir
    return files
