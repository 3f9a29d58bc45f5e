"""SynGym's settings: one dataclass, loaded from YAML and ``--set key=value`` overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..config import check_range
from ..errors import InputError

FPS_CHOICES = (25.0, 29.97, 30.0)
# The renderer's version, recorded with every dataset (syngym.yaml, and so the demo's
# and the studies' store records): data drawn by another version are not reused as this
# one's. 1: the first renderer; 2: side saltos (set 23) turn sideways, back saltos (set 25)
# backward, frontal figures twist.
RENDERER_VERSION = 2
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Times are seconds, sizes pixels."""

    videos: int = 4
    seed: int = 0
    # None: each video draws one of FPS_CHOICES; else every video has this rate.
    fps: float | None = None
    width: int = 640
    height: int = 360
    # Routines per video and sub-actions per routine (inclusive ranges). Vault
    # routines hold one 3-stage vault, as in FineGym.
    events_per_video: list[int] = field(default_factory=lambda: [3, 5])
    subactions_per_event: list[int] = field(default_factory=lambda: [4, 8])
    # Share of routines that are men's events (annotated without sub-actions).
    mens_event_fraction: float = 0.15
    # The women's events routines are drawn from (1 VT, 2 FX, 3 BB, 4 UB), uniformly;
    # None: all four. One event makes a within-event task (UB-S1) dense in clips.
    events: list[int] | None = None
    # Sub-action durations: log-normal with this median, clipped to the range
    # (FineGym: mostly 0.5-3 s).
    subaction_median_s: float = 1.3
    subaction_range_s: list[float] = field(default_factory=lambda: [0.5, 3.5])
    transition_range_s: list[float] = field(default_factory=lambda: [0.4, 2.0])
    # Idle footage before, between and after routines.
    idle_range_s: list[float] = field(default_factory=lambda: [2.0, 8.0])
    # Long tail: element j of a set is drawn with weight (j + 1) ** -imbalance.
    imbalance: float = 1.0
    # Share of labelled sub-actions put in the val split (per class, at least one
    # for classes with two or more instances).
    val_fraction: float = 0.25
    # None: the val split is val_fraction of each class's instances in the same videos
    # as train (FineGym's way: train and val share videos, even routines). A seed: the
    # val split is videos of its own, planned and rendered from this seed (other
    # athletes, backdrops and routines): the last round(val_fraction * videos) of the
    # videos (at least 1, at most videos - 1), all their sub-actions in val and none of
    # the other videos' (which are the first videos of the dataset without the option).
    val_videos_seed: int | None = None
    # Realism knobs: camera shake (pixels at 360 rows), slow zoom (relative
    # amplitude), background clutter (shapes), sensor noise (grey levels, std).
    camera_jitter: float = 3.0
    zoom: float = 0.08
    # The gymnast's on-screen size, in multiples of the wide shot's (where a figure is
    # 0.2 frame heights tall): above 1 the camera follows the gymnast's hips at this
    # magnification, as broadcast cameras do, so that small frames still show the pose.
    figure_scale: float = 1.0
    clutter: int = 30
    noise: float = 2.0
    # H.264 encoding: keyframe interval and x264 preset/quality. ultrafast encodes
    # ~2x faster than veryfast here but writes no B-frames; the competition preset
    # uses veryfast for files closer to YouTube's.
    gop_s: float = 5.0
    x264_preset: str = "ultrafast"
    crf: int = 23
    # 2-D poses (annotations/gym_2d.pkl: every sub-action, COCO-17 joints in pixels), as
    # a pose estimator reports them: each coordinate off by pose_jitter (std, pixels at
    # 360 rows, scaled with the height as camera_jitter); a joint moving faster than
    # pose_miss_speed body lengths per second lost in its motion blur (score below 0.2,
    # placed along the blur; null: never lost; ~8 % of joints in elements at 6: the
    # fastest of saltos reach 10, of bar circles 20, a walk's 1);
    # pose_coach: a coach stands beside the apparatus in every routine, drawn in the
    # video and a second person in the poses, with lower scores (0.3-0.6).
    pose_jitter: float = 1.0
    pose_miss_speed: float | None = 6.0
    pose_coach: bool = False
    # Recorded, not chosen: this code draws RENDERER_VERSION only.
    renderer: int = RENDERER_VERSION

    def __post_init__(self) -> None:
        # Checked on construction, like the other configs, so that a config loaded from
        # YAML or overrides is in range before anything uses it.
        self.validate()

    def validate(self) -> SynthConfig:
        """Return self, or raise ValueError naming the first bad field."""
        def pair(name: str, lo: float = 0.0) -> None:
            v = getattr(self, name)
            if (len(v) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                    or not lo <= v[0] <= v[1]):
                raise InputError(f"synth config: {name} must be [min, max] with {lo} <= min <= max, got {v}")
        if self.videos < 1:
            raise InputError(f"synth config: videos must be >= 1, got {self.videos}")
        if self.fps is not None and self.fps not in FPS_CHOICES:
            raise InputError(f"synth config: fps must be one of {FPS_CHOICES} or null, got {self.fps}")
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise InputError(f"synth config: width and height must be even and >= 64, got {self.width}x{self.height}")
        pair("events_per_video", 1)
        pair("subactions_per_event", 1)
        pair("subaction_range_s", 0.1)
        pair("transition_range_s", 0.2)
        pair("idle_range_s", 0.5)
        if not 0 <= self.mens_event_fraction <= 1 or not 0 <= self.val_fraction < 1:
            raise InputError("synth config: mens_event_fraction must be in [0, 1] and val_fraction in [0, 1)")
        if self.events is not None and (not self.events or not set(self.events) <= {1, 2, 3, 4}):
            raise InputError(f"synth config: events must be null or a non-empty list of 1-4, got {self.events}")
        if self.x264_preset not in X264_PRESETS:
            raise InputError(f"synth config: x264_preset must be one of {', '.join(X264_PRESETS)}, "
                             f"got {self.x264_preset!r}")
        problems: list[str] = []
        check_range(problems, "seed", self.seed, ge=0)
        check_range(problems, "subaction_median_s", self.subaction_median_s, gt=0)
        check_range(problems, "imbalance", self.imbalance, ge=0)
        check_range(problems, "camera_jitter", self.camera_jitter, ge=0)
        check_range(problems, "zoom", self.zoom, ge=0, le=1)
        # Beyond 4 the view (0.25 frame heights) no longer holds a stretched figure.
        check_range(problems, "figure_scale", self.figure_scale, ge=1, le=4)
        check_range(problems, "clutter", self.clutter, ge=0)
        check_range(problems, "noise", self.noise, ge=0)
        check_range(problems, "gop_s", self.gop_s, gt=0)
        check_range(problems, "crf", self.crf, ge=0, le=51)  # x264's 8-bit range
        check_range(problems, "val_videos_seed", self.val_videos_seed, ge=0, optional=True)
        check_range(problems, "pose_jitter", self.pose_jitter, ge=0)
        check_range(problems, "pose_miss_speed", self.pose_miss_speed, gt=0, optional=True)
        if self.val_videos_seed is not None:
            if self.val_videos_seed == self.seed:
                problems.append(f"val_videos_seed must differ from seed ({self.seed})")
            if self.videos < 2 or not self.val_fraction > 0:
                problems.append("val_videos_seed needs videos >= 2 and val_fraction > 0 (val videos and "
                                "training videos, both)")
        if self.renderer != RENDERER_VERSION:
            problems.append(f"renderer must be {RENDERER_VERSION} (this code's renderer), got {self.renderer!r}")
        if problems:
            raise InputError("synth config: " + "; ".join(problems))
        return self

    @property
    def val_videos(self) -> int:
        """How many of the videos are the val split's own (0 without val_videos_seed)."""
        if self.val_videos_seed is None:
            return 0
        return min(self.videos - 1, max(1, round(self.val_fraction * self.videos)))


PRESETS = {
    # The demo and the tests: a few minutes of video, generated in seconds.
    "small": SynthConfig(),
    # The demo's training set: ~540 sub-actions in ~33 min of 320x180 video (~45 s to
    # make on 2 cores), routines back to back so that most of the footage is labelled.
    "demo": SynthConfig(videos=16, width=320, height=180, events_per_video=[5, 7], subactions_per_event=[6, 10],
                        idle_range_s=[1.0, 3.0], mens_event_fraction=0.0, camera_jitter=1.5, clutter=15),
    # The localization demo's videos: the demo's kind of footage, 4x as many (a quarter,
    # 16 videos and ~90 routines, to validate on) and another seed, so that the backbone
    # the demo trained never saw them.
    "localize": SynthConfig(videos=64, seed=1, width=320, height=180, events_per_video=[5, 7],
                            subactions_per_event=[6, 10], idle_range_s=[1.0, 3.0], mens_event_fraction=0.0,
                            camera_jitter=1.5, clutter=15),
    # Enough instances of the head classes to train on: ~1 h of 640x360 video.
    "medium": SynthConfig(videos=24, events_per_video=[8, 12], subactions_per_event=[6, 12]),
    # Competition-like records for benchmarks: 720p, ~20 min each, routines spread out.
    "competition": SynthConfig(videos=2, width=1280, height=720, events_per_video=[10, 12],
                               subactions_per_event=[6, 10], idle_range_s=[60.0, 120.0],
                               x264_preset="veryfast"),
}


def preset(name: str) -> SynthConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name])
