"""Image pairs with known optical flow, for measuring flow methods against ground truth.

A case is a scene of smooth random texture (blurred noise at three scales) seen twice.
Both images are rendered the same way from the same continuous scene: each pixel is
the mean of SUPERSAMPLE x SUPERSAMPLE point samples over its area, each sample read
(``cv2.remap``, cubic) from a texture stored at SUPERSAMPLE times the image resolution
and smooth at that grid's scale. So neither image is an interpolated copy of the
other, and interpolation errors are far below a grey level (rendering straight from a
1-px grid with cubic interpolation left ~0.7 grey-level errors that biased every
method's flow by up to 0.07 px). The motion is known exactly:

- ``translation``: the scene moves by a sub-pixel (dx, dy), each in [-3, 3] px.
- ``rotation``: the scene turns by 0.5-2.5 degrees about a point in the middle half.
- ``zoom``: the scene is scaled by 1 +- (0.01-0.04) about a point in the middle half.
- ``piecewise``: the background moves by up to 2 px while an elliptic textured
  foreground moves by up to 4 px (at least 1.5 px differently) and turns up to 2 degrees.
- ``border_occlusion``: a pan of 3-8 px carries content out of the frame on one side and
  brings new content in on the other, and an elliptic object centred on a border moves
  3-6 px across it (into or out of the frame).

Displacements of rotation and zoom grow with the distance to their centre (up to
~14 px at 340x256, ~5 px at 128x96). Units: pixels of the images; angles in degrees.

Flow convention (as ``finegym_ray.video.flow``): ``flow[y, x] = (dx, dy)`` moves pixel
(x, y) of ``first`` to (x + dx, y + dy) in ``second``. ``valid`` marks the pixels whose
ground truth is meaningful: visible in both images, i.e. the target lies inside the
frame (pixel centres 0..W-1, 0..H-1) and, where there is a foreground object, the pixel
is more than EDGE px from the object's edge in the first image and (background pixels)
where it lands in the second: this drops the occluded pixels and the mixed pixels of
the object's outline.

numpy and OpenCV only (no torch, no ray). Deterministic from (family, size, seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError

FAMILIES = ("translation", "rotation", "zoom", "piecewise", "border_occlusion")

TEXTURE_SIGMAS = (1.5, 4.0, 12.0)  # px: blur of the noise at each scale of detail
TEXTURE_WEIGHTS = (0.35, 0.4, 0.25)  # share of each scale in the texture's contrast
TEXTURE_STD = 45.0  # grey levels, around a mean of 128
SUPERSAMPLE = 4  # point samples per pixel along x and y; the texture grid is 1/4 px
PAD = 8  # px of texture beyond the outermost sampled coordinate (cubic support)
EDGE = 1.0  # px: pixels this close to a foreground edge have no valid ground truth


@dataclass(frozen=True, eq=False)
class FlowPair:
    """One case. ``first``, ``second``: (H, W) uint8 grey; ``flow``: (H, W, 2) float32
    px, (dx, dy) last; ``valid``: (H, W) bool."""

    family: str
    seed: int
    first: np.ndarray
    second: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


def _affine(angle_deg: float = 0.0, scale: float = 1.0, centre=(0.0, 0.0), shift=(0.0, 0.0)) -> np.ndarray:
    """3x3 matrix on (x, y, 1): rotate by ``angle_deg`` and scale about ``centre``, then shift."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    cx, cy = centre
    return np.array([[c, -s, cx - c * cx + s * cy + shift[0]],
                     [s, c, cy - s * cx - c * cy + shift[1]],
                     [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height * S, width * S) float32 grey levels on a grid of 1/S px (S = SUPERSAMPLE):
    noise blurred at each of TEXTURE_SIGMAS px, each scale normalised to unit deviation,
    mixed by TEXTURE_WEIGHTS. Scales of 3 px and more are made on the 1-px grid and
    resized (cubic: exact enough for so smooth a layer); finer ones on the fine grid."""
    s = SUPERSAMPLE
    out = np.zeros((height * s, width * s), np.float32)
    for sigma, weight in zip(TEXTURE_SIGMAS, TEXTURE_WEIGHTS):
        step = 1 if sigma >= 3.0 else s  # grid points per px for this layer
        noise = rng.standard_normal((height * step, width * step)).astype(np.float32)
        layer = cv2.GaussianBlur(noise, (0, 0), sigma * step)
        if step != s:
            layer = cv2.resize(layer, (width * s, height * s), interpolation=cv2.INTER_CUBIC)
        out += np.float32(weight) * layer / max(float(layer.std()), 1e-6)
    out *= np.float32(TEXTURE_STD / max(float(out.std()), 1e-6))
    return out + np.float32(128.0)


def _sampler(coords: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator):
    """A texture covering every (x, y) map (px) in ``coords``, placed at a random
    sub-pixel offset, and the function that reads it at such a map."""
    x0 = min(float(cx.min()) for cx, _ in coords)
    y0 = min(float(cy.min()) for _, cy in coords)
    x1 = max(float(cx.max()) for cx, _ in coords)
    y1 = max(float(cy.max()) for _, cy in coords)
    ox, oy = PAD - math.floor(x0) + rng.random(), PAD - math.floor(y0) + rng.random()
    texture = _texture(int(math.ceil(y1 + oy)) + PAD, int(math.ceil(x1 + ox)) + PAD, rng)
    s = SUPERSAMPLE

    def sample(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Texture index i holds the point (i + 0.5) / s - 0.5 px (cv2.resize's alignment).
        return cv2.remap(texture, ((x + ox + 0.5) * s - 0.5).astype(np.float32),
                         ((y + oy + 0.5) * s - 0.5).astype(np.float32), cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REFLECT101)
    return sample


def _ellipse_distance(x: np.ndarray, y: np.ndarray, axes: tuple[float, float]) -> np.ndarray:
    """Signed distance in px (first order: exact in sign, close near the edge) from the
    edge of the ellipse centred at 0 with semi-axes ``axes`` along x and y; < 0 inside."""
    a, b = axes
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    grad = np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2) / np.maximum(r, 1e-9)
    return (r - 1.0) / np.maximum(grad, 1e-9)


def _motions(family: str, height: int, width: int, rng: np.random.Generator):
    """(background motion, foreground or None). A motion is a 3x3 matrix taking a pixel
    of the first image to the second; the foreground is (pose, motion, semi-axes): pose
    takes object coordinates (centred, px) to the first image."""
    def central_point():
        return rng.uniform(0.25, 0.75) * (width - 1), rng.uniform(0.25, 0.75) * (height - 1)

    def magnitude(lo, hi):
        return rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])

    short = min(height, width)
    if family == "translation":
        return _affine(shift=rng.uniform(-3.0, 3.0, 2)), None
    if family == "rotation":
        return _affine(angle_deg=magnitude(0.5, 2.5), centre=central_point()), None
    if family == "zoom":
        return _affine(scale=1.0 + magnitude(0.01, 0.04), centre=central_point()), None
    if family == "piecewise":
        background = rng.uniform(-2.0, 2.0, 2)
        while True:
            shift = rng.uniform(-4.0, 4.0, 2)
            if np.hypot(*(shift - background)) >= 1.5:
                break
        axes = tuple(rng.uniform(0.15, 0.3, 2) * short)
        reach = max(axes) + 6.0
        centre = (rng.uniform(reach, width - 1 - reach), rng.uniform(reach, height - 1 - reach))
        pose = _affine(angle_deg=rng.uniform(0, 180), centre=(0, 0), shift=centre)
        motion = _affine(angle_deg=rng.uniform(-2.0, 2.0), centre=centre, shift=shift)
        return _affine(shift=background), (pose, motion, axes)
    if family == "border_occlusion":
        angle = rng.uniform(0, 2 * math.pi)
        pan = rng.uniform(3.0, 8.0) * np.array([math.cos(angle), math.sin(angle)])
        axes = tuple(rng.uniform(0.12, 0.25, 2) * short)
        side = int(rng.integers(4))  # the border the object sits on: left, right, top, bottom
        along = rng.uniform(0.3, 0.7)
        centre = [(0.0, along * (height - 1)), (width - 1.0, along * (height - 1)),
                  (along * (width - 1), 0.0), (along * (width - 1), height - 1.0)][side]
        normal = np.array([(1, 0), (-1, 0), (0, 1), (0, -1)][side], float)  # into the frame
        shift = normal * magnitude(3.0, 6.0) + rng.uniform(-1.0, 1.0, 2)
        pose = _affine(angle_deg=rng.uniform(0, 180), centre=(0, 0), shift=centre)
        return _affine(shift=pan), (pose, _affine(centre=centre, shift=shift), axes)
    raise InputError(f"unknown flow family {family!r}; choose one of {FAMILIES}")


def make_pair(family: str, height: int = 256, width: int = 340, seed: int = 0) -> FlowPair:
    """One case of ``family`` (see the module docstring) at (height, width) pixels."""
    if family not in FAMILIES:
        raise InputError(f"unknown flow family {family!r}; choose one of {FAMILIES}")
    if min(height, width) < 32:
        raise InputError(f"flow pairs need at least 32x32 pixels, got {width}x{height}")
    rng = np.random.default_rng([seed, FAMILIES.index(family), height, width])
    background, foreground = _motions(family, height, width, rng)
    s = SUPERSAMPLE
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)  # pixel centres
    # The point samples of each pixel, on a (H * s, W * s) grid: centre +- up to 0.5 px.
    sy, sx = (np.mgrid[0:height * s, 0:width * s].astype(np.float64) + 0.5) / s - 0.5

    def pixels(samples: np.ndarray) -> np.ndarray:  # (H * s, W * s) -> (H, W) means
        return samples.reshape(height, s, width, s).mean(axis=(1, 3))

    # Background: the first image sees the scene point (x, y); the second sees the point
    # that moved there, background^-1 (x, y).
    bg_coords = [(sx, sy), _apply(np.linalg.inv(background), sx, sy)]
    bg = _sampler(bg_coords, rng)
    first, second = (bg(*c) for c in bg_coords)
    bx, by = _apply(background, x, y)  # where each pixel of the first image lands
    flow = np.stack([bx - x, by - y], axis=-1)
    valid = (bx >= 0) & (bx <= width - 1) & (by >= 0) & (by <= height - 1)

    if foreground is not None:
        pose, motion, axes = foreground
        to_object = [np.linalg.inv(pose), np.linalg.inv(motion @ pose)]  # image k -> object coords
        reach = max(axes) + 1.0  # the texture need only cover the object
        fg_coords = [tuple(np.clip(c, -reach, reach) for c in _apply(m, sx, sy)) for m in to_object]
        fg = _sampler(fg_coords, rng)
        first = np.where(_ellipse_distance(*fg_coords[0], axes) < 0, fg(*fg_coords[0]), first)
        second = np.where(_ellipse_distance(*fg_coords[1], axes) < 0, fg(*fg_coords[1]), second)
        fx, fy = _apply(motion, x, y)
        distance = _ellipse_distance(*_apply(to_object[0], x, y), axes)  # in the first image
        landing = _ellipse_distance(*_apply(to_object[1], bx, by), axes)  # in the second
        inside = distance < -EDGE
        flow = np.where(inside[..., None], np.stack([fx - x, fy - y], axis=-1), flow)
        in_frame = (fx >= 0) & (fx <= width - 1) & (fy >= 0) & (fy <= height - 1)
        valid = np.where(inside, in_frame, valid & (distance > EDGE) & (landing > EDGE))

    def to_u8(samples):
        return np.clip(np.rint(pixels(samples)), 0, 255).astype(np.uint8)
    return FlowPair(family, seed, to_u8(first), to_u8(second), flow.astype(np.float32), valid)


def make_pairs(family: str, count: int, height: int = 256, width: int = 340, seed: int = 0) -> list[FlowPair]:
    """``count`` cases of ``family`` with seeds seed, seed + 1, ..."""
    return [make_pair(family, height, width, seed + i) for i in range(count)]


def endpoint_error(flow: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Average endpoint error in px, ``mean |flow - truth|`` over ``valid`` pixels
    (all pixels when None)."""
    error = np.hypot(*np.moveaxis(np.asarray(flow, np.float64) - truth, -1, 0))
    return float(error[valid].mean() if valid is not None else error.mean())
