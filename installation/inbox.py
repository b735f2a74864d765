"""The player's inbox: commands from the OSC thread and the keyboard, taken by the main loop within a budget per turn.

    inbox = Inbox(wake)                      # wake: the Event the main loop waits on
    inbox.submit(cmd)                        # any thread; a full inbox refuses (and counts) the command
    rest, moves, held = inbox.take(ready)    # main loop: this turn's commands, the moves to make now, and whether
                                             # they waited (a flood: the player pre-rolls them)
    inbox.received, inbox.coalesced, inbox.refused

A flood of valid commands must never stop the picture. So the main loop spends at most COMMAND_BUDGET seconds a turn
on taking commands, wakes once per turn however many arrive, and makes moves (subject, sequence, next, prev) only as
fast as the picture can follow: moves that arrive before `ready` (the player's move_interval since the last jump)
wait here, merged into at most one jump and one step of each kind with the same meaning (`coalesced`). Each move
costs a still of the screen and a decoder start (bench/RESULTS.md), so applied one by one a flood froze the picture;
a move that waited is pre-rolled by the player (its decoder starts while the picture plays on).
Repeated /ping and /status from one sender in one turn get one reply.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from installation.commands import Command, RateLimitedLog

log = logging.getLogger(__name__)

JUMPS = {"subject", "sequence"}  # choose the picture outright, whatever was on screen
STEPS = {"next": ("next", 1), "prev": ("next", -1), "next_sequence": ("next_sequence", 1),
         "prev_sequence": ("next_sequence", -1)}  # relative moves, and how they add up
MOVES = JUMPS | set(STEPS)  # each starts a new stream
REPLIES = {"ping", "status"}
CAPACITY = 10_000  # commands waiting; beyond, they are refused (about 1 MB)
COMMAND_BUDGET = 0.004  # seconds a turn may spend taking commands (a tenth of a frame at 24 fps)


def coalesced(batch: list[Command]) -> list[Command]:
    """`batch` with at most one jump and one step of each kind left, meaning the same: moves before the last /subject
    or /sequence are overridden by it, and the steps after it add up (/subject 2 then two /next is subject 4; a step
    may carry a count as its value). Other commands keep their order, before the steps."""
    last = max((i for i, c in enumerate(batch) if c.name in JUMPS), default=-1)
    out, steps = [], {"next_sequence": 0, "next": 0}  # sequence steps first: subject steps then count within it
    received = {"next_sequence": 0.0, "next": 0.0}
    for i, c in enumerate(batch):
        if c.name in MOVES and i < last:
            continue
        if c.name in STEPS:
            kind, sign = STEPS[c.name]
            steps[kind] += sign * (c.value or 1)
            received[kind] = received[kind] or c.received  # latency counts from the first step merged
        else:
            out.append(c)
    for kind, n in steps.items():
        if n:
            out.append(Command(kind if n > 0 else "prev" + kind.removeprefix("next"), abs(n), received=received[kind]))
    return out


class Inbox:
    def __init__(self, wake: threading.Event, capacity: int = CAPACITY):
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.wake = wake
        self.pending: list[Command] = []  # moves waiting for the picture (already merged)
        self.received = self.coalesced = self.refused = 0
        self.problems = RateLimitedLog(log)

    def submit(self, cmd: Command) -> None:
        """From any thread: queue a validated command; wake the main loop if it may be waiting for one."""
        was_empty = self.queue.empty()
        try:
            self.queue.put_nowait(cmd)
        except queue.Full:
            self.refused += 1
            self.problems.warning("command queue full (%d waiting); %s refused", self.queue.maxsize, cmd.name)
            return
        if was_empty:
            self.wake.set()

    def empty(self) -> bool:
        return self.queue.empty() and not self.pending

    def defer(self, moves: list[Command]) -> None:
        """Moves taken this turn that must wait after all (for a media scan): first in line at the next take."""
        self.pending = list(moves) + self.pending

    def take(self, ready: bool, budget: float = COMMAND_BUDGET) -> tuple[list[Command], list[Command], bool]:
        """This turn's commands: (the rest, in order; the merged moves to make now, empty unless `ready`; whether
        those moves waited here from an earlier turn, as in a flood)."""
        batch, end = [], time.perf_counter() + budget
        while True:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
            if len(batch) % 64 == 0 and time.perf_counter() > end:
                break
        self.received += len(batch)
        rest, seen = [], set()
        moves, held = self.pending, bool(self.pending)
        for c in batch:
            if c.name in MOVES:
                moves.append(c)
            elif c.name in REPLIES and (c.name, c.reply_to) in seen:
                self.coalesced += 1
            else:
                seen.add((c.name, c.reply_to))
                rest.append(c)
        if len(moves) > 1:
            merged = coalesced(moves)
            self.coalesced += len(moves) - len(merged)
            moves = merged
        if ready:
            self.pending = []
            return rest, moves, held
        self.pending = moves
        return rest, [], False
