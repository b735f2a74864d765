"""A Stream is one video on its way to the screen: a Decoder, the FrameClock that paces it and the frame shown now.

    s = Stream(path, fps=24, start=120, loop=True, src_size=(512, 512), placement=p, buffer_frames=24)
    changed = s.update(now)    # takes the frame that is due from the decoder, never waits
    s.shown                    # Frame on screen (or the poster until the first decoded frame arrives)

The clock starts when the first decoded frame is there, so a slow ffmpeg start-up holds the first frame (or its
poster) a little longer rather than counting drops. After that, a frame that is not decoded by the time the next one
is due is skipped and counted in `dropped` (beyond the frames a speed factor above 1 skips by design).
"""

from __future__ import annotations

import collections
from pathlib import Path

from installation.decoder import Decoder, End, Failed, Frame
from installation.timing import FrameClock, Placement, allowed_skip


class Stream:
    def __init__(self, path: Path, *, fps: float, start: int, loop: bool, src_size: tuple[int, int],
                 placement: Placement, buffer_frames: int, speed: float = 1.0, expected_frames: int = 0,
                 poster: bytes | None = None, playing: bool = True, label: str = "", start_now: bool = True,
                 tag: object = None):
        self.path = Path(path)
        self.tag = tag  # the caller's version of the render this stream was opened from (poster cache key)
        self.loop = loop
        self.label = label  # for log lines
        self.placement = placement
        self.decoder = Decoder(path, fps=fps, start=start, loop=loop, src_size=src_size, scale=placement.scale,
                               crop=placement.crop, buffer_frames=buffer_frames, expected_frames=expected_frames,
                               start_now=start_now)
        self.size = self.decoder.out_size
        self.clock = FrameClock(fps, speed)
        if not playing:
            self.clock.playing = False
        self.shown: Frame | None = Frame(0, start, poster) if poster is not None else None
        self.from_poster = poster is not None
        self.ended = False
        self.failed: str | None = None
        self.dropped = 0
        self.wraps = 0
        self.seen: list[Frame] = []  # frames taken from the decoder since the caller last cleared it (posters)
        self.start_at: float | None = None  # a synced jump: the clock starts at this time, however late the frame

    @property
    def ready(self) -> bool:
        """Something to show (a decoded frame or the poster)."""
        return self.shown is not None

    @property
    def primed(self) -> bool:
        return self.clock.started

    def _take(self) -> Frame | End | Failed | None:
        item = self.decoder.get()
        if isinstance(item, Frame):
            self.seen.append(item)
            if len(self.seen) > 64:  # nobody is collecting; stay bounded
                del self.seen[:32]
        return item

    def update(self, now: float) -> bool:
        """Advance to the frame due at `now`; True when the frame on screen changed."""
        if self.ended or self.failed:
            return False
        if not self.clock.started:
            item = self._take()
            if item is None:
                return False
            if not isinstance(item, Frame):
                self._finish(item)
                return False
            self.clock.start(now if self.start_at is None else min(now, self.start_at))
            changed = not (self.from_poster and self.shown is not None and self.shown.index == item.index)
            self.shown, self.from_poster = item, False
            return changed
        due = self.clock.due(now)
        newest = None
        while self.shown.pos < due and (newest is None or newest.pos < due):
            item = self._take()
            if item is None:
                break
            if not isinstance(item, Frame):
                self._finish(item)
                break
            newest = item
        if newest is None:
            return False
        self.dropped += max(0, newest.pos - self.shown.pos - allowed_skip(self.clock.speed))
        if newest.index < self.shown.index:
            self.wraps += 1
        self.shown = newest
        return True

    def _finish(self, item: End | Failed) -> None:
        if isinstance(item, End):
            self.ended = True
        else:
            self.failed = item.reason

    def pause(self, now: float, hold: bool = True) -> None:
        """Freeze on the frame on screen (even if the decoder was behind and later frames were already due); with
        `hold` False on the frame due at `now` (a synced pause: every player stops on the same frame)."""
        self.clock.pause(now)
        if hold and self.clock.started and self.shown is not None:
            self.clock.hold(self.shown.pos + 0.999)  # within the frame on screen

    def resume(self, now: float) -> None:
        self.clock.resume(now)

    def next_due_time(self, now: float) -> float:
        return self.clock.next_due_time(now)

    def video_position(self, now: float, frames: int) -> float | None:
        """Where in the video the clock is at `now`, in frames (fractional; wrapped into the `frames` of a loop), or
        None before the first frame: what a follower compares with its leader's."""
        if not self.clock.started or self.shown is None:
            return None
        pos = self.shown.index - self.shown.pos + self.clock.position(now)
        return pos % frames if self.loop and frames > 0 else pos

    def close(self) -> None:
        self.decoder.close()


class PosterCache:
    """First frames of subjects, as decoded on the way past, so a jump shows its target at once. Bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()

    @staticmethod
    def key(path: Path, index: int, placement: Placement, stamp: object) -> tuple:
        """Where a poster is filed: the video, the frame index in it, its placement on screen, and the render version
        (a re-render must not show old posters)."""
        return str(path), index, placement, stamp

    def get(self, key: tuple) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: tuple, data: bytes) -> None:
        if key in self._items or len(data) > self.max_bytes:
            return
        self._items[key] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old)
