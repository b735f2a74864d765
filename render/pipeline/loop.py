"""Loop closure and the seam metric. Pure functions on arrays and latents.

A loop is seamless when going from its last frame back to its first looks like any other step of the video. We
measure that with the *seam ratio*: the mean absolute pixel difference between the last and first frame, divided by
the median difference between consecutive frames inside the loop (1.0 = the seam is a typical step). We close a loop
by appending latents that walk from the last latent back to the first, as many as it takes for each step to be no
larger than the loop's median step (measured on the frames), with smoothstep easing so the walk leaves and arrives
without a jolt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from render.latent.morph import smoothstep


def frame_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, in 0..255 units."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def seam_ratio(frames: Iterable[np.ndarray]) -> float:
    """Mean |last - first| / median |frame[i+1] - frame[i]|; at most 1.5 counts as seamless."""
    meter = SeamMeter()
    for frame in frames:
        meter.add(frame)
    return meter.ratio()


class SeamMeter:
    """seam_ratio of frames seen one at a time, keeping only the first and the latest frame: measure a loop while it
    streams to the encoder, without holding the whole video.

        meter = SeamMeter()
        write_video(path, (meter.add(f) for f in frames), fps)
        ratio = meter.ratio()
    """

    def __init__(self):
        self.first: np.ndarray | None = None
        self.last: np.ndarray | None = None
        self.steps: list[float] = []

    def add(self, frame: np.ndarray) -> np.ndarray:
        """Count `frame` in and hand it back."""
        if self.last is None:
            self.first = frame
        else:
            self.steps.append(frame_diff(self.last, frame))
        self.last = frame
        return frame

    def ratio(self) -> float:
        if len(self.steps) < 2:
            raise ValueError("a loop needs at least 3 frames to measure its seam")
        return frame_diff(self.last, self.first) / max(float(np.median(self.steps)), 1e-6)


def closure_latents(last: torch.Tensor, first: torch.Tensor, count: int) -> torch.Tensor:
    """`count` latents [count, D] strictly between `last` and `first` ([D] each), eased, excluding both ends."""
    if count <= 0:
        return last.new_zeros((0, last.shape[-1]))
    t = torch.arange(1, count + 1, dtype=last.dtype) / (count + 1)  # (0, 1)
    t = smoothstep(t)[:, None]
    return last[None] * (1 - t) + first[None] * t


def closure_count(seam: float, median_step: float, *, ease_factor: float = 1.5, limit: int = 240) -> int:
    """How many in-between frames make a seam of size `seam` no bigger than a typical step.

    Smoothstep's steepest step is 1.5x the average one, hence `ease_factor`. Always at least one frame, so even a
    tiny seam is eased rather than cut.
    """
    if median_step <= 1e-6:
        return 1 if seam > 0 else 0
    n = math.ceil(seam * ease_factor / median_step) - 1
    return int(min(max(n, 1), limit))


def close_loop(last: torch.Tensor, first: torch.Tensor, last_frame: np.ndarray, first_frame: np.ndarray,
               median_step: float, synthesize, *, limit: int = 240) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The in-between latents [n, D] (and their frames, from `synthesize(latents) -> frames`) that walk from `last`
    back to `first` with no step larger than `median_step`, checked on the frames: a generator does not change its
    picture evenly along a straight line between two latents, so closure_count's first guess can leave a step (the
    seam) well above the median. The count grows until every step fits, or up to `limit` frames."""
    n = closure_count(frame_diff(last_frame, first_frame), median_step, limit=limit)
    while True:
        extra = closure_latents(last, first, n)
        frames = list(synthesize(extra)) if len(extra) else []
        walk = [last_frame, *frames, first_frame]
        worst = max(frame_diff(a, b) for a, b in zip(walk, walk[1:]))
        if worst <= median_step or n >= limit or median_step <= 1e-6:
            return extra, frames
        n = min(limit, max(n + 1, math.ceil((n + 1) * worst / median_step) - 1))


def even_pacing(latents: torch.Tensor, diffs: Sequence[float], ease_in: int = 0) -> torch.Tensor:
    """Re-time a trajectory so that every frame changes the picture by about the same amount.

    A projection moves fast in its first steps and then refines slowly, so frames kept every N steps pop at the start
    of a subject and then barely move. Given K latents [K, D] and the K-1 pixel differences between their frames,
    return K latents spaced evenly along the path's cumulative difference, interpolating linearly between kept
    latents. The first and last latents are kept exactly (chaining and loops depend on them). `ease_in` > 0: the
    first `ease_in` steps accelerate from rest to the even speed (constant acceleration), so a trajectory that
    starts where a picture came to rest (a face graph segment, after the eased walk into the previous home) leaves
    it without a jolt; the first step is then about 1 / (2 ease_in) of the others.
    """
    k = len(latents)
    if k < 3:
        return latents
    c = np.concatenate([[0.0], np.cumsum(np.asarray(diffs, dtype=np.float64))])  # [K] arc length
    if c[-1] <= 0:
        return latents
    t = np.linspace(0.0, 1.0, k)
    t0 = min(ease_in, (k - 1) // 2) / (k - 1)
    if t0 > 0:  # speed ramps linearly from 0 to its steady value over [0, t0], then holds: position p(t), p(1) = 1
        a = 1.0 / (2 * t0 - t0 * t0)
        t = np.where(t < t0, a * t * t, a * t0 * t0 + 2 * a * t0 * (t - t0))
    targets = c[-1] * t
    j = np.clip(np.searchsorted(c, targets, side="right") - 1, 0, k - 2)
    span = c[j + 1] - c[j]
    w = np.where(span > 0, (targets - c[j]) / np.where(span > 0, span, 1.0), 0.0).clip(0.0, 1.0)
    w_t = torch.from_numpy(w).to(latents.dtype)[:, None]
    out = latents[j] * (1 - w_t) + latents[j + 1] * w_t
    out[0], out[-1] = latents[0], latents[-1]
    return out
