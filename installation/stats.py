"""The player's statistics: frames shown, frames dropped, command-to-screen latencies, and the rate /status reports.

    stats = Stats()
    stats.started = now                        # uptime counts from here
    stats.frame_shown(now)                     # a new video frame went on screen
    stats.retired(stream)                      # keep its drops and decoder restarts when a stream is closed
    stats.await_screen(commands)               # picture commands just applied...
    stats.on_screen(flipped)                   # ...are on screen since the flip at `flipped`

Kept apart from the player so that what is counted, and how, reads in one place; the main loop only reports events.
Nothing here acts on playback, and every record is bounded, so counting costs no memory over weeks of running.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from installation.commands import Command
from installation.stream import Stream

FPS_WINDOW = 2.0  # seconds of shown frames that the reported rate averages over


class Stats:
    def __init__(self) -> None:
        self.started = 0.0  # clock time the player opened
        self.frames_shown = 0  # new video frames put on screen
        self.dropped_closed = 0  # drops of streams already retired
        self.restarts_closed = 0  # decoder restarts of streams already retired
        self.shown_times: collections.deque = collections.deque(maxlen=256)  # when recent frames went on screen
        # (name, received, flipped) per picture command: from arrival to the flip that first showed it (bench/player.py)
        self.command_flips: collections.deque = collections.deque(maxlen=4096)
        self.awaiting: collections.deque = collections.deque(maxlen=256)  # picture commands not yet on screen
        self.longest_gap = 0.0  # most seconds between two new frames shown (since reset_gap; bench/faults.py)

    def frame_shown(self, now: float) -> None:
        if self.shown_times:
            self.longest_gap = max(self.longest_gap, now - self.shown_times[-1])
        self.shown_times.append(now)
        self.frames_shown += 1

    def reset_gap(self) -> None:
        """Measure the longest gap afresh from the next frame shown (the recent frames, and the rate, are forgotten)."""
        self.longest_gap = 0.0
        self.shown_times.clear()

    def retired(self, stream: Stream) -> None:
        """Take over the drops and decoder restarts of a stream that is going away, so /status keeps counting them."""
        self.dropped_closed += stream.dropped
        self.restarts_closed += stream.decoder.restarts
        stream.dropped = stream.decoder.restarts = 0

    def dropped(self, live: Iterable[Stream]) -> int:
        """Frames skipped since start: those of retired streams and of the `live` ones."""
        return self.dropped_closed + sum(s.dropped for s in live)

    def decoder_restarts(self, live: Iterable[Stream]) -> int:
        """Decoders restarted after dying mid-file, since start."""
        return self.restarts_closed + sum(s.decoder.restarts for s in live)

    def fps(self, now: float) -> float:
        """New frames shown per second over the last FPS_WINDOW seconds; 0 when too few to tell."""
        recent = [t for t in self.shown_times if now - t <= FPS_WINDOW]
        if len(recent) > 2 and recent[-1] > recent[0]:
            return (len(recent) - 1) / (recent[-1] - recent[0])
        return 0.0

    def uptime(self, now: float) -> float:
        return now - self.started

    def await_screen(self, commands: Iterable[Command]) -> None:
        """Picture commands applied this turn, timed until their picture is on screen."""
        self.awaiting.extend(commands)

    def on_screen(self, flipped: float) -> None:
        """The flip at `flipped` shows what every awaiting command asked for."""
        for cmd in self.awaiting:
            self.command_flips.append((cmd.name, cmd.received, flipped))
        self.awaiting.clear()
