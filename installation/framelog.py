"""An opt-in record of every frame put on screen (`[player] frame_log`), to measure players in step (bench/sync.py).

    flog = FrameLog(path)                    # appends; a header line first
    flog.shown(flipped, stream, "demo")      # after each flip: one line when the stream shows a new frame
    flog.close()

One tab-separated line per new frame: `flip` (just after the flip that showed it), `due` (when the frame clock wanted
it on screen), the sequence, the video file and the frame's index in it. Both times are the player's clock,
time.perf_counter, which is CLOCK_MONOTONIC on Linux: one clock for every process on a machine, never stepped, so the
logs of several players compare directly, and flip - due is how late the main loop woke (scheduling, not sync).
Lines are buffered and written once a second, so a player killed outright loses at most its last second; a write that
fails is logged once and the log stops, the show goes on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_EVERY = 1.0  # seconds of lines kept in memory before they are written
HEADER = "# flip\tdue\tsequence\tvideo\tframe\n"


class FrameLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # OSError: the player's start-up says so
        self._lines = [HEADER]
        self._last: tuple[int, int] | None = None  # (id of the stream, position of its frame) last written
        self._written = -math.inf

    def shown(self, flipped: float, stream: Any, sequence: str) -> None:
        """After a flip: a line if `stream` (installation/stream.py) shows a frame not written yet."""
        if self._file is None or stream is None or stream.shown is None:
            return
        frame = stream.shown
        key = (id(stream), frame.pos)
        if key == self._last:
            return
        self._last = key
        clock = stream.clock
        due = clock.time_at(frame.pos) if clock.started and not stream.from_poster else math.inf
        due = due if math.isfinite(due) else flipped  # a poster, or paused: due when shown
        self._lines.append(f"{flipped:.6f}\t{due:.6f}\t{sequence}\t{stream.path.name}\t{frame.index}\n")
        if flipped - self._written >= FLUSH_EVERY:
            self.flush(flipped)

    def flush(self, now: float = 0.0) -> None:
        self._written = now
        if self._file is None or not self._lines:
            return
        try:
            self._file.write("".join(self._lines))
            self._file.flush()
        except OSError as e:
            log.error("frame log %s: %s; no more frames are logged", self.path, e)
            self._file = None
        self._lines.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
