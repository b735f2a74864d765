"""Opening hours: whether the installation is open at a given local time, from `[schedule]` in config.toml.

    schedule = Schedule.from_config(cfg.schedule)     # None when the schedule is off
    schedule.is_open(datetime.now())                   # by weekday and minute
    schedule.next_change(datetime.now())               # the next opening or closing, for the log

Pure: the player asks every turn with the wall clock, so a change applies at the exact minute, and a start-up (after
a power cut, or a boundary crossed while the player was off) begins in the state the hours give for now.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sequences.config import parse_hours

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")  # datetime.weekday() order


@dataclass(frozen=True)
class Schedule:
    hours: tuple[tuple[tuple[int, int], ...], ...]  # per weekday, Monday first: (start, end) minutes after midnight
    outside: str = "blackout"  # blackout | sequence
    outside_sequence: str = ""
    sleep: bool = True

    @classmethod
    def from_config(cls, sc: Any) -> Schedule | None:
        """The `[schedule]` section as a Schedule; None when `enabled = false`."""
        if not sc.enabled:
            return None
        return cls(tuple(parse_hours(getattr(sc, day)) for day in DAYS), sc.outside, sc.outside_sequence, sc.sleep)

    def is_open(self, when: dt.datetime) -> bool:
        minute = when.hour * 60 + when.minute
        return any(a <= minute < b for a, b in self.hours[when.weekday()])

    def next_change(self, when: dt.datetime) -> dt.datetime | None:
        """The first minute after `when` (within a week) at which `is_open` differs; None if it never does."""
        state = self.is_open(when)
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        for day in range(8):
            base = midnight + dt.timedelta(days=day)
            edges = sorted({m for rng in self.hours[base.weekday()] for m in rng} | {0})
            for m in edges:
                t = base + dt.timedelta(minutes=m)
                if t > when and self.is_open(t) != state:
                    return t
        return None
