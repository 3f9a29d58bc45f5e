"""TV-L1 optical flow (Zach, Pock and Bischof 2007) in PyTorch, batched over pairs, on CPU or GPU.

The scheme and its defaults follow OpenCV's ``DualTVL1OpticalFlow`` (the implementation
behind denseflow, which FineGym's flow came from), so that flow made here can stand in
for it:

- images as float32 in [0, 255]; a pyramid made by bilinear resizing with ``scale_step``
  (no pre-smoothing) that stops before a level shorter than 16 pixels;
- per level, coarsest first: ``warps`` times, warp the second image and its centred
  gradients by the current flow (bicubic, zero outside the image), then run the
  primal-dual iterations: up to ``outer_iterations`` rounds, each a ``median_filtering``
  median of the flow followed by up to ``inner_iterations`` steps of the thresholding,
  primal and dual updates; a pair stops iterating for this warp once the squared change
  of its flow summed over the image falls to ``epsilon**2 * pixels``;
- the flow is carried to the next finer level by bilinear resizing and ``1 / scale_step``.

Batching changes nothing about a pair's result: every pair keeps its own stopping test
(a pair that has converged is frozen while the others go on). What differs from OpenCV
is float rounding (the order of sums, bicubic weights computed rather than tabulated).

Flow convention as in ``flow.py``: ``flow[..., y, x] = (dx, dy)`` in pixels moves pixel
(x, y) of the first image to (x + dx, y + dy) in the second.

This module imports torch; ``flow.py`` loads it only when the ``tvl1`` method is built.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .chunk import check_chunk

_CHECK_EVERY = 5  # inner iterations between convergence checks on a GPU (see TVL1._level)
_MIN_LEVEL_SIDE = 16  # pixels: OpenCV's pyramid stops before a level smaller than this


class TVL1:
    """The ``tvl1`` flow method: built once (per actor), called per chunk of frames.

    Options (OpenCV's names in brackets, and its defaults): ``tau`` time step (0.25),
    ``lambda_`` data-term weight [lambda] (0.15), ``theta`` coupling weight (0.3),
    ``scales`` pyramid levels at most [nscales] (5), ``scale_step`` size ratio between
    levels [scaleStep] (0.8), ``warps`` per level (5), ``epsilon`` stopping threshold in
    pixels (0.01), ``inner_iterations`` (30), ``outer_iterations`` (10),
    ``median_filtering`` median window in pixels, 0 or 1 for none [medianFiltering] (5),
    ``gamma`` weight of the illumination term (0: off).
    Runtime options, which change the flow only by float rounding: ``device`` ("auto":
    the GPU if torch sees one, else "cpu"; or any torch device string) and
    ``batch_pairs``, the number of pairs solved together (GPU memory: about 0.5 MB per
    pair per 10,000 pixels), and ``compile``: fuse each iteration's arithmetic into a few
    kernels with ``torch.compile`` (a GPU needs triton, a CPU a C++ compiler; the first
    call of each actor then takes tens of seconds to compile).
    """

    RUNTIME_OPTIONS = ("device", "batch_pairs", "compile")

    def __init__(self, *, tau: float = 0.25, lambda_: float = 0.15, theta: float = 0.3, scales: int = 5,
                 scale_step: float = 0.8, warps: int = 5, epsilon: float = 0.01, inner_iterations: int = 30,
                 outer_iterations: int = 10, median_filtering: int = 5, gamma: float = 0.0,
                 device: str = "auto", batch_pairs: int = 32, compile: bool = False):
        problems = []
        for name, value, ok, what in (
            ("tau", tau, lambda v: 0 < v <= 0.25, "in (0, 0.25] (the scheme converges for tau <= 1/4)"),
            ("lambda_", lambda_, lambda v: v > 0, "> 0"),
            ("theta", theta, lambda v: v > 0, "> 0"),
            ("scales", scales, lambda v: v >= 1, ">= 1"),
            ("scale_step", scale_step, lambda v: 0 < v < 1, "in (0, 1)"),
            ("warps", warps, lambda v: v >= 1, ">= 1"),
            ("epsilon", epsilon, lambda v: v >= 0, ">= 0"),
            ("inner_iterations", inner_iterations, lambda v: v >= 1, ">= 1"),
            ("outer_iterations", outer_iterations, lambda v: v >= 1, ">= 1"),
            ("median_filtering", median_filtering, lambda v: v in (0, 1) or (v >= 3 and v % 2), "0, 1 or odd >= 3"),
            ("gamma", gamma, lambda v: v >= 0, ">= 0"),
            ("batch_pairs", batch_pairs, lambda v: v >= 1, ">= 1"),
        ):
            integer = name in ("scales", "warps", "inner_iterations", "outer_iterations", "median_filtering",
                               "batch_pairs")
            number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and ok(value)):
                problems.append(f"{name} must be {'an integer' if integer else 'a number'} {what}, got {value!r}")
        try:
            resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" \
                else torch.device(device)
        except (RuntimeError, TypeError) as e:
            problems.append(f"device must be 'auto' or a torch device such as 'cpu' or 'cuda:0', got {device!r} ({e})")
        else:
            if resolved.type == "cuda" and not torch.cuda.is_available():
                problems.append(f"device {device!r}: torch sees no CUDA device here")
        if not isinstance(compile, bool):
            problems.append(f"compile must be true or false, got {compile!r}")
        if problems:
            raise InputError("tvl1: " + "; ".join(problems))
        self.tau, self.lambda_, self.theta, self.gamma = float(tau), float(lambda_), float(theta), float(gamma)
        self.scales, self.scale_step, self.warps = scales, float(scale_step), warps
        self.epsilon, self.inner_iterations, self.outer_iterations = float(epsilon), inner_iterations, outer_iterations
        self.median_filtering, self.batch_pairs, self.compile = median_filtering, batch_pairs, compile
        self.torch_device = resolved
        self.device = str(resolved)

    def __call__(self, frames: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """Flow of consecutive frames, the flow-method contract of ``flow.py``.

        frames: (N, H, W) uint8 grey. prev: the (H, W) uint8 frame before ``frames[0]``
        (the previous chunk's last), or None.
        Returns (N', H, W, 2) float32 pixels per frame: prev -> frames[0] when prev is
        given, then frames[0] -> frames[1], ...; N' = N with prev, else max(N - 1, 0).
        """
        frames, prev = check_chunk(frames, prev)
        if prev is not None:
            frames = np.concatenate([prev[None], frames])
        n_pairs = max(len(frames) - 1, 0)
        out = np.empty((n_pairs, *frames.shape[1:], 2), dtype=np.float32)
        if n_pairs == 0:
            return out
        seq = torch.from_numpy(frames).to(self.torch_device)  # uint8: the smallest upload
        for start in range(0, n_pairs, self.batch_pairs):
            stop = min(start + self.batch_pairs, n_pairs)
            out[start:stop] = self.pairs(seq[start:stop], seq[start + 1:stop + 1]).cpu().numpy()
        return out

    @torch.no_grad()
    def pairs(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Flow from each image of ``first`` to the same-index image of ``second``.

        first, second: (B, H, W) grey, uint8 or float in [0, 255], on any device.
        Returns (B, H, W, 2) float32 pixels on this method's device.
        """
        if first.shape != second.shape or first.dim() != 3:
            raise InputError(f"first and second must be two (B, H, W) tensors, got {tuple(first.shape)} and "
                             f"{tuple(second.shape)}")
        i0 = first.to(self.torch_device, torch.float32).unsqueeze(1)  # (B, 1, H, W)
        i1 = second.to(self.torch_device, torch.float32).unsqueeze(1)
        levels = [(i0, i1)]
        for _ in range(1, self.scales):
            h, w = levels[-1][0].shape[-2:]
            size = (round(h * self.scale_step), round(w * self.scale_step))  # OpenCV rounds, torch would floor
            if min(size) < _MIN_LEVEL_SIDE:
                break
            levels.append(tuple(_resize(im, size, self.scale_step) for im in levels[-1]))
        b = i0.shape[0]
        channels = 3 if self.gamma else 2  # u1, u2 and, with the illumination term, u3
        h, w = levels[-1][0].shape[-2:]
        u = torch.zeros(b, channels, h, w, device=self.torch_device)
        for level in range(len(levels) - 1, -1, -1):
            u = self._level(*levels[level], u)
            if level:
                h, w = levels[level - 1][0].shape[-2:]
                # u3 (brightness) is not a displacement: it is resized but not scaled
                u = F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
                u[:, :2] /= self.scale_step
        return u[:, :2].permute(0, 2, 3, 1).contiguous()  # (B, 2, H, W) -> (B, H, W, 2)

    def _level(self, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Refine flow ``u`` (B, C, H, W) between i0 and i1 (B, 1, H, W) at one pyramid level."""
        b, channels, h, w = u.shape
        i1_grads = torch.cat([i1, *_centred_gradient(i1)], dim=1)  # (B, 3, H, W): I1, dI1/dx, dI1/dy
        # Where two images are identical the flow must stay exactly 0 (OpenCV's does). That
        # needs the warp to land exactly on pixels when the flow is 0, which grid_sample's
        # [-1, 1] coordinates do not for most image sizes: a pixel of the border row sampled
        # 1e-5 px off takes a bicubic weight from the zeros beyond the image, and the error
        # grows over the warps to a flow of about a pixel along the border. With the image
        # zero-padded to power-of-two sides, pixel centres are exact binary fractions.
        hp, wp = 1 << (h - 1).bit_length(), 1 << (w - 1).bit_length()
        i1_grads = F.pad(i1_grads, (0, wp - w, 0, hp - h))  # zeros, as beyond the image anyway
        ys, xs = torch.meshgrid(torch.arange(h, device=u.device, dtype=torch.float32),
                                torch.arange(w, device=u.device, dtype=torch.float32), indexing="ij")
        solver = _PrimalDual(u, lambda_=self.lambda_, theta=self.theta, tau=self.tau,
                             eps=self.epsilon ** 2 * h * w,  # squared pixels, summed over the image
                             compiled=self.compile)
        # A host check of "has every pair converged?" syncs with the device: on a GPU it is
        # made every few iterations, and pairs that converge in between are frozen by a mask
        # (which changes the speed, never the result). A single pair on the CPU needs neither.
        check_every = 1 if u.device.type == "cpu" and not self.compile else _CHECK_EVERY
        masked = b > 1 or check_every > 1
        for _ in range(self.warps):
            # pixel x sits at (2x + 1) / wp - 1 in grid_sample's coordinates (align_corners off)
            u = solver.u
            grid = torch.stack([(2 * (xs + u[:, 0]) + 1) / wp - 1, (2 * (ys + u[:, 1]) + 1) / hp - 1],
                               dim=-1)  # (B, H, W, 2)
            warped = F.grid_sample(i1_grads, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
            solver.linearize(i0, *warped.split(1, dim=1), gamma=self.gamma)
            for _outer in range(self.outer_iterations):
                if self.median_filtering > 1:
                    solver.median(self.median_filtering, masked)
                for inner in range(self.inner_iterations):
                    solver.step(masked)
                    if (inner + 1) % check_every == 0 and not solver.any_active():
                        break
                if not solver.any_active():
                    break
        return solver.u


class _PrimalDual:
    """The state of one pyramid level's iterations: flow ``u`` (B, C, H, W), updated in
    place, its dual variables and work buffers, allocated once per level (fresh
    allocations of image-sized tensors at every step cost more than the arithmetic on
    a CPU). C is 2 (dx, dy), or 3 with the illumination term. ``compiled``: steps by
    the torch.compile'd ``_fused_step`` instead (same arithmetic, new tensors each step)."""

    def __init__(self, u: torch.Tensor, *, lambda_: float, theta: float, tau: float, eps: float, compiled: bool):
        self.u = u.clone()
        self.compiled = compiled
        # a tensor, not a float: torch.compile specializes on float arguments, and eps
        # changes with every level's size
        self.eps_tensor = torch.tensor(eps, device=u.device)
        self.l_t, self.theta, self.taut, self.eps = lambda_ * theta, theta, tau / theta, eps
        self.px, self.py = torch.zeros_like(u), torch.zeros_like(u)  # dual variables, x and y parts
        self.gx, self.gy = torch.zeros_like(u), torch.zeros_like(u)  # forward differences: last column / row stay 0
        self.div, self.change, self.norm = torch.empty_like(u), torch.empty_like(u), torch.empty_like(u)
        self.rho = torch.empty_like(u[:, :1])
        self.active = torch.ones(u.shape[0], 1, 1, 1, dtype=torch.bool, device=u.device)

    def linearize(self, i0: torch.Tensor, i1w: torch.Tensor, i1wx: torch.Tensor, i1wy: torch.Tensor, *,
                  gamma: float) -> None:
        """Start a warp: the data term linearized around the current flow, from the warped
        second image and its gradients (each (B, 1, H, W)). Every pair is active again."""
        grad = i1wx * i1wx + i1wy * i1wy  # |grad I1|^2 (OpenCV leaves gamma out of it too)
        self.rho_c = i1w - i1wx * self.u[:, 0:1] - i1wy * self.u[:, 1:2] - i0
        # the thresholding step's -rho/|grad|^2; where the gradient vanishes the clamp in
        # step() gives OpenCV's +-lambda*theta step (times a vanishing gradient)
        self.neg_inv_grad = -1.0 / grad.clamp_min(torch.finfo(torch.float32).tiny)
        parts = [i1wx, i1wy] + ([torch.full_like(i1wx, gamma)] if gamma else [])
        self.img_grad = torch.cat(parts, dim=1)  # (B, C, H, W): what rho gains per unit of each u channel
        self.active.fill_(True)

    def any_active(self) -> bool:
        return bool(self.active.any())

    def median(self, k: int, masked: bool) -> None:
        """k x k median of the flow's dx and dy (not the illumination channel)."""
        if self.compiled:
            self.u = _compiled(_masked_median)(self.u, self.active, k)
            return
        flow = self.u[:, :2]
        filtered = _median(flow, k)
        flow.copy_(torch.where(self.active, filtered, flow) if masked else filtered)

    def step(self, masked: bool) -> None:
        """One thresholding + primal + dual step; with ``masked``, pairs no longer active
        are left as they are."""
        if self.compiled:
            self.u, self.px, self.py, self.active = _compiled(_fused_step)(
                self.u, self.px, self.py, self.img_grad, self.rho_c, self.neg_inv_grad, self.active,
                self.l_t, self.theta, self.taut, self.eps_tensor)
            return
        u, rho, change = self.u, self.rho, self.change
        torch.mul(self.img_grad[:, 0:1], u[:, 0:1], out=rho)
        for c in range(1, u.shape[1]):
            rho.addcmul_(self.img_grad[:, c:c + 1], u[:, c:c + 1])
        rho.add_(self.rho_c)
        step = rho.mul_(self.neg_inv_grad).clamp_(-self.l_t, self.l_t)  # v = u + step * grad I1
        div = torch.add(self.px, self.py, out=self.div)  # divergence of p by backward differences
        div[..., 1:].sub_(self.px[..., :-1])
        div[..., 1:, :].sub_(self.py[..., :-1, :])
        torch.mul(self.img_grad, step, out=change).add_(div, alpha=self.theta)  # u_new - u
        if masked:
            change.mul_(self.active)
        u.add_(change)
        error = torch.linalg.vecdot(change.flatten(1), change.flatten(1))  # (B,) squared pixels
        gx, gy, norm = self.gx, self.gy, self.norm
        torch.sub(u[..., 1:], u[..., :-1], out=gx[..., :-1])
        torch.sub(u[..., 1:, :], u[..., :-1, :], out=gy[..., :-1, :])
        if masked:  # zero gradients leave p as it is: (p + 0) / (1 + 0)
            gx.mul_(self.active)
            gy.mul_(self.active)
        torch.mul(gx, gx, out=norm).addcmul_(gy, gy).sqrt_().mul_(self.taut).add_(1.0)
        self.px.add_(gx, alpha=self.taut).div_(norm)
        self.py.add_(gy, alpha=self.taut).div_(norm)
        # OpenCV tests the error at the head of the next iteration: this step's dual update counts
        self.active &= (error > self.eps).view(-1, 1, 1, 1)


def _fused_step(u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, img_grad: torch.Tensor, rho_c: torch.Tensor,
                neg_inv_grad: torch.Tensor, active: torch.Tensor, l_t: float, theta: float, taut: float,
                eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_PrimalDual.step`` (masked) written without in-place updates, for torch.compile."""
    rho = rho_c + (img_grad * u).sum(dim=1, keepdim=True)
    step = (rho * neg_inv_grad).clamp(-l_t, l_t)
    div = px + py - F.pad(px[..., :-1], (1, 0)) - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    change = (step * img_grad + theta * div) * active
    u = u + change
    error = change.square().sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    gx = F.pad(u[..., 1:] - u[..., :-1], (0, 1)) * active
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)) * active
    norm = 1 + taut * torch.sqrt(gx * gx + gy * gy)
    return u, (px + taut * gx) / norm, (py + taut * gy) / norm, active & (error > eps)


def _masked_median(u: torch.Tensor, active: torch.Tensor, k: int) -> torch.Tensor:
    """``_PrimalDual.median`` (masked) without in-place updates, for torch.compile."""
    flow = torch.where(active, _median(u[:, :2], k, recycle=False), u[:, :2])
    return torch.cat([flow, u[:, 2:]], dim=1)


@functools.cache
def _compiled(fn):
    # dynamic shapes: one compilation serves every pyramid level and batch size
    return torch.compile(fn, dynamic=True)


def _resize(image: torch.Tensor, size: tuple[int, int], scale: float) -> torch.Tensor:
    """OpenCV's ``resize(fx=fy=scale, INTER_LINEAR)``: output ``size`` (rows, cols), source
    position ``(dst + 0.5) / scale - 0.5``, edges replicated. (B, C, H, W) in and out."""
    h, w = image.shape[-2:]
    ys = ((torch.arange(size[0], device=image.device, dtype=torch.float32) + 0.5) / scale) / h * 2 - 1
    xs = ((torch.arange(size[1], device=image.device, dtype=torch.float32) + 0.5) / scale) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)  # (size, 2) as (x, y)
    grid = grid.unsqueeze(0).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _centred_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred differences with replicated edges (one-sided halves at the border), as
    OpenCV's TV-L1 takes them. (B, 1, H, W) -> two (B, 1, H, W)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def _median(u: torch.Tensor, k: int, recycle: bool = True) -> torch.Tensor:
    """k x k median of each channel, edges replicated (OpenCV's ``medianBlur``). (B, C, H, W).

    A selection network of min/max over the k*k shifted copies: on a CPU about 5x faster
    than sorting unfolded windows, which copies k*k values per pixel first. ``recycle``
    reuses buffers (eager mode); torch.compile wants every result a new tensor."""
    r = k // 2
    h, w = u.shape[-2:]
    padded = F.pad(u, (r, r, r, r), mode="replicate")
    wires = [padded[..., dy:dy + h, dx:dx + w].contiguous() for dy in range(k) for dx in range(k)]
    spare = torch.empty_like(u)
    for kind, a, b in _median_network(k * k):
        x, y = wires[a], wires[b]
        if not recycle:
            wires[a], wires[b] = (torch.minimum(x, y) if kind != "max" else x,
                                  torch.maximum(x, y) if kind != "min" else y)
        elif kind == "both":  # wire a takes the min, b the max; buffers are recycled, not allocated
            torch.minimum(x, y, out=spare)
            torch.maximum(x, y, out=y)
            wires[a], spare = spare, x
        elif kind == "min":
            torch.minimum(x, y, out=x)
        else:
            torch.maximum(x, y, out=y)
    return wires[k * k // 2]


_NETWORKS: dict[int, list[tuple[str, int, int]]] = {}  # a plain dict: torch.compile traces through it


def _median_network(n: int) -> list[tuple[str, int, int]]:
    """Comparators ``(kind, a, b)`` that leave the median of n values on wire n // 2:
    Batcher's odd-even merge sort for the next power of two, with the padding wires taken
    as +inf (their comparators resolve before any data is seen) and every comparator that
    cannot reach the median wire removed. ``kind`` says which outputs are still needed:
    "both", "min" (wire a) or "max" (wire b)."""
    if n in _NETWORKS:
        return _NETWORKS[n]
    size = 1 << (n - 1).bit_length()
    comparators = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comparators.append((i + j, i + j + k))
            k //= 2
        p *= 2
    infinite = set(range(n, size))
    live = []
    for a, b in comparators:
        if b in infinite:
            continue  # min(x, inf) = x stays on a, inf stays on b
        if a in infinite:
            raise AssertionError("Batcher's network never compares padding above data")  # a < b always
        live.append((a, b))
    needed, kept = {n // 2}, []
    for a, b in reversed(live):
        if a in needed or b in needed:
            kept.append(("both" if a in needed and b in needed else "min" if a in needed else "max", a, b))
            needed |= {a, b}
    _NETWORKS[n] = kept[::-1]
    return _NETWORKS[n]
