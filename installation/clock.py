"""Clock arithmetic for players in step: the offset to a leader's clock from round trips, and pacing corrections.

Pure functions and one small class fed with timestamps, so tests drive them with a simulated skew and jitter.

    est = OffsetEstimator()
    est.add(t1, t2, t3, t4)          # follower sent at t1, leader received at t2 and replied at t3, follower got it at t4
    est.offset                       # leader clock - follower clock, seconds (the best recent round trip's)
    leader_now = local_now + est.offset
    trim = pacing_trim(error)        # error: seconds of video the follower is behind (+) or ahead (-) of the leader

As NTP does, every round trip gives an offset whose error is at most half its round-trip delay (queueing on the way
out and back is rarely the same); the sample with the smallest delay among the recent ones is the most trustworthy,
so the estimate is that sample's offset. A follower corrects what is left by running its frame clock a little faster
or slower (`pacing_trim`), never by seeking; only an error beyond JUMP_AFTER seconds makes it jump, once.
"""

from __future__ import annotations

import collections
import math

WINDOW = 32  # recent round trips kept; the one with the least delay gives the offset
MAX_AGE = 30.0  # seconds a round trip stays usable: clocks drift apart slowly (crystals differ by ~1e-5)
MAX_TRIM = 0.05  # most a follower speeds up or slows down its frames to catch up (5 %: not visible in a face morph)
TRIM_GAIN = 1.0  # trim per second of error: an error halves in ~0.7 s of video, within the bound above
DEADBAND = 0.0005  # seconds of error left alone: well under a millisecond is beyond what a display shows
JUMP_AFTER = 1.0  # seconds of error beyond which a follower jumps (with a crossfade) instead of catching up


def round_trip(t1: float, t2: float, t3: float, t4: float) -> tuple[float, float]:
    """(offset, delay) of one NTP-style exchange: t1 sent and t4 received on our clock, t2 received and t3 replied on
    the other. offset = other clock - ours; its error is at most delay / 2."""
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    return offset, delay


class OffsetEstimator:
    """The offset to another clock: the minimum-delay sample among the last WINDOW round trips of MAX_AGE seconds."""

    def __init__(self, window: int = WINDOW, max_age: float = MAX_AGE):
        self.samples: collections.deque = collections.deque(maxlen=window)  # (t4, offset, delay)
        self.max_age = max_age
        self.refused = 0  # round trips that made no sense (negative delay, times not finite)

    def add(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        """Take one round trip; False (and counted) when its times cannot be right."""
        if not all(math.isfinite(t) for t in (t1, t2, t3, t4)) or t4 < t1 or t3 < t2:
            self.refused += 1
            return False
        offset, delay = round_trip(t1, t2, t3, t4)
        if delay < 0:  # the other side took longer than the whole trip: bad clock readings
            self.refused += 1
            return False
        self.samples.append((t4, offset, delay))
        return True

    def _best(self, now: float | None = None) -> tuple[float, float, float] | None:
        newest = self.samples[-1][0] if self.samples else None
        now = newest if now is None else now
        fresh = [s for s in self.samples if now - s[0] <= self.max_age]
        return min(fresh, key=lambda s: s[2]) if fresh else None

    @property
    def ready(self) -> bool:
        return self._best() is not None

    @property
    def offset(self) -> float:
        """Other clock - ours, seconds (0 before the first round trip)."""
        best = self._best()
        return best[1] if best else 0.0

    @property
    def delay(self) -> float:
        """Round-trip delay of the sample the offset comes from (inf before the first)."""
        best = self._best()
        return best[2] if best else math.inf

    def reset(self) -> None:
        self.samples.clear()


def loop_error(leader: float, ours: float, frames: int) -> float:
    """Frames `ours` is behind `leader` (negative: ahead) in a loop of `frames`: the short way round the loop point."""
    if frames <= 0:
        return leader - ours
    return (leader - ours + frames / 2) % frames - frames / 2


def pacing_trim(error: float, gain: float = TRIM_GAIN, limit: float = MAX_TRIM) -> float:
    """The frame clock's rate factor that closes `error` (seconds of video behind the leader; negative: ahead): a
    little faster when behind, slower when ahead, at most `limit` either way, 1 within DEADBAND."""
    if not math.isfinite(error) or abs(error) <= DEADBAND:
        return 1.0
    return 1.0 + max(-limit, min(limit, error * gain))
