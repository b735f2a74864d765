"""Pure pieces of playback: the frame clock, fades, screen placement and frame-to-subject lookup.

Nothing here touches pygame, threads or files, so tests drive it with made-up times.

    clock = FrameClock(fps=24.0)
    clock.start(now=10.0)
    clock.position(10.5)    # 12.0 frames since start
    clock.set_speed(11.0, 2.0); clock.pause(12.0); clock.resume(20.0)
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

EPS = 1e-6  # frames; absorbs float error so a frame due at exactly t counts as due at t


class FrameClock:
    """Which frame of a stream is due at time `now` (seconds, time.perf_counter), from the clock, never by counting.

    The position is frames since start as a float; pausing freezes it and a speed change re-anchors it, so the
    playback never drifts however long it runs.
    """

    def __init__(self, fps: float, speed: float = 1.0):
        if not (0 < fps < math.inf and 0 < speed < math.inf):  # NaN fails every comparison
            raise ValueError(f"fps and speed must be positive, got fps={fps} speed={speed}")
        self.fps = float(fps)
        self.speed = float(speed)
        self.trim = 1.0  # a follower's pacing correction (installation/sync.py): near 1, never a seek
        self.started = False
        self.playing = True
        self._t0 = 0.0  # time at which the position was _p0
        self._p0 = 0.0

    def start(self, now: float, position: float = 0.0) -> None:
        self._t0, self._p0, self.started = now, float(position), True

    def position(self, now: float) -> float:
        """Frames since start (float); 0 before start."""
        if not self.started:
            return 0.0
        if not self.playing:
            return self._p0
        return self._p0 + max(0.0, now - self._t0) * self.fps * self.speed * self.trim

    def due(self, now: float) -> int:
        """Index (since start) of the frame that should be on screen at `now`."""
        return math.floor(self.position(now) + EPS)

    def next_due_time(self, now: float) -> float:
        """When the frame after the one due now becomes due (inf while paused or not started)."""
        if not self.started or not self.playing:
            return math.inf
        nxt = self.due(now) + 1
        return self._t0 + (nxt - self._p0) / (self.fps * self.speed * self.trim)

    def time_at(self, position: float) -> float:
        """When the position is (or was) `position`, at the present rate: the time a frame was due, or when a
        transition clip's last frame ends (inf while paused or not started)."""
        if not self.started or not self.playing:
            return math.inf
        return self._t0 + (position - self._p0) / (self.fps * self.speed * self.trim)

    def pause(self, now: float) -> None:
        if self.playing:
            self._p0, self._t0, self.playing = self.position(now), now, False

    def hold(self, position: float) -> None:
        """While paused: move the frozen position back to `position` (the frame actually on screen, if the stream
        was running late), so resuming goes on from what the audience saw."""
        if not self.playing:
            self._p0 = min(self._p0, float(position))

    def hold_at(self, position: float) -> None:
        """While paused: freeze at `position` (a synced pause: the frame the leader named)."""
        if not self.playing:
            self._p0 = float(position)

    def resume(self, now: float) -> None:
        if not self.playing:
            self._t0, self.playing = now, True

    def set_speed(self, now: float, speed: float) -> None:
        if not 0 < speed < math.inf:
            raise ValueError(f"speed must be positive, got {speed}")
        self._p0, self._t0, self.speed = self.position(now), now, float(speed)

    def set_trim(self, now: float, trim: float) -> None:
        """Run a little faster (trim > 1) or slower from `now` on, without a jump in position: how a follower
        catches up with its leader's clock."""
        if not 0 < trim < math.inf:
            raise ValueError(f"trim must be positive, got {trim}")
        self._p0, self._t0, self.trim = self.position(now), now, float(trim)


def allowed_skip(speed: float) -> int:
    """Frames a speed factor skips by design per step; skips beyond this are dropped frames."""
    return max(1, math.ceil(speed - EPS))


def loop_index(start: int, pos: int, frames: int) -> int:
    """Frame index in a loop of `frames` frames, `pos` frames after `start`: wraps exactly at the loop point."""
    return (start + pos) % frames


def fade_alpha(now: float, start: float, seconds: float) -> float:
    """Progress of a fade, 0 at `start` rising linearly to 1 after `seconds` (instant when seconds is 0)."""
    if seconds <= 0:
        return 1.0
    return min(1.0, max(0.0, (now - start) / seconds))


def approach(level: float, target: float, dt: float, seconds: float) -> float:
    """Move `level` toward `target` (both 0..1) at a rate that covers 0..1 in `seconds`."""
    if seconds <= 0:
        return target
    step = dt / seconds
    return min(target, level + step) if target > level else max(target, level - step)


@dataclass(frozen=True)
class Placement:
    scale: tuple[int, int]  # size the video frame is scaled to
    crop: tuple[int, int, int, int]  # x, y, w, h of the scaled frame that is shown
    dest: tuple[int, int]  # where the cropped frame goes on screen


FULL = (0.0, 0.0, 1.0, 1.0)  # region: the whole frame


def place(video: tuple[int, int], screen: tuple[int, int], mode: str,
          region: Sequence[float] = FULL) -> Placement:
    """Scale a `video` (w, h) onto `screen` (w, h) keeping aspect: "fit" letterboxes, "fill" covers and crops.
    `region` (normalised x, y, w, h) is the part of the video shown, fitted as if it were the whole: one screen of a
    video wall."""
    (vw, vh), (sw, sh) = video, screen
    rx, ry, rw, rh = region
    if min(vw, vh, sw, sh) <= 0 or min(rw, rh) <= 0:
        raise ValueError(f"sizes must be positive: video {video}, screen {screen}, region {tuple(region)}")
    pw, ph = vw * rw, vh * rh  # the part shown, in video pixels
    ratio = min(sw / pw, sh / ph) if mode == "fit" else max(sw / pw, sh / ph)
    w, h = max(2, round(vw * ratio / 2) * 2), max(2, round(vh * ratio / 2) * 2)  # even sizes suit every scaler
    px, py = min(round(rx * w), w - 1), min(round(ry * h), h - 1)  # the part, in scaled pixels
    pw, ph = max(1, min(round(rw * w), w - px)), max(1, min(round(rh * h), h - py))
    cw, ch = min(pw, sw), min(ph, sh)
    cx, cy = px + (pw - cw) // 2, py + (ph - ch) // 2
    return Placement((w, h), (cx, cy, cw, ch), ((sw - cw) // 2, (sh - ch) // 2))


def subject_at(first_frames: Sequence[int], index: int) -> int:
    """Position in the subject list whose segment holds loop frame `index` (subjects sorted by first frame)."""
    return max(0, bisect.bisect_right(first_frames, index) - 1)
