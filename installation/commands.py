"""Player commands: what OSC messages and keys may ask for, validated without touching any state.

    cmd = parse_command("/subject", [2])          # Command(name="subject", value=2)
    cmd = parse_command("/speed", ["fast"])       # raises CommandError("/speed: ...")
    cmd = key_command(pygame.K_SPACE, quit_allowed=True)

Both the OSC thread and the keyboard go through these functions; the player's main loop is the only place that
acts on a Command. Range checks that need the playlist (is there a subject 7?) happen in the main loop, which logs and
ignores a value out of range. No command carries a path: the player only plays what its scan of the media folders found.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

MAX_FADE = 60.0  # seconds; longest crossfade /fade accepts
SPEED_RANGE = (0.05, 8.0)  # /speed factors; the decoder has to keep up with fps * speed
MAX_NAME = 200  # longest subject or sequence name accepted


class CommandError(ValueError):
    """A message the player refuses: unknown address, wrong argument count or type, value out of range."""


@dataclass(frozen=True)
class Command:
    name: str  # play pause toggle next prev next_sequence prev_sequence subject sequence blackout fade speed
    #            reload ping status quit
    value: Any = None  # int | str for subject/sequence, bool for blackout (None = toggle), float for fade/speed
    reply_to: tuple[str, int] | None = None  # sender address for /ping and /status replies
    received: float = 0.0  # time.perf_counter() when it arrived; for latency figures


class RateLimitedLog:
    """At most `per_second` warnings a second; the rest are counted and summarised in the next line that gets out."""

    def __init__(self, logger: logging.Logger, per_second: int = 5):
        self.logger, self.per_second = logger, per_second
        self._window, self._count, self._suppressed = 0.0, 0, 0
        self.total = 0  # problems seen, logged or not

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        self.total += 1
        if now - self._window >= 1.0:
            if self._suppressed:
                self.logger.warning("(%d more problems like these not logged)", self._suppressed)
            self._window, self._count, self._suppressed = now, 0, 0
        if self._count < self.per_second:
            self._count += 1
            self.logger.warning(msg, *args)
        else:
            self._suppressed += 1


def _shown(value: Any) -> str:
    """An argument as it goes into a log line: a megabyte of blob is cut to its first characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}... ({len(text)} characters)"


def _number(address: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CommandError(f"{address}: expected a number, got {_shown(value)}")
    return float(value)


def _key(address: str, value: Any) -> int | str:
    """An index (int, or a float holding a whole number) or a name."""
    if isinstance(value, bool):
        raise CommandError(f"{address}: expected an index or a name, got {_shown(value)}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise CommandError(f"{address}: index must be 0 or more, got {value}")
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME:
        return value
    raise CommandError(f"{address}: expected an index or a name, got {_shown(value)}")


def _flag(address: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise CommandError(f"{address}: expected 0 or 1, got {_shown(value)}")


# address -> (command name, number of arguments accepted, converter of the single argument or None)
_ADDRESSES: dict[str, tuple[str, tuple[int, ...], Any]] = {
    "/play": ("play", (0,), None),
    "/pause": ("pause", (0,), None),
    "/next": ("next", (0,), None),
    "/prev": ("prev", (0,), None),
    "/subject": ("subject", (1,), _key),
    "/sequence": ("sequence", (1,), _key),
    "/blackout": ("blackout", (0, 1), _flag),
    "/fade": ("fade", (1,), None),
    "/speed": ("speed", (1,), None),
    "/reload": ("reload", (0,), None),
    "/ping": ("ping", (0,), None),
    "/status": ("status", (0,), None),
}
ADDRESSES = tuple(_ADDRESSES)


def parse_command(address: Any, args: list | tuple, *, reply_to: tuple[str, int] | None = None,
                  received: float = 0.0) -> Command:
    """Validate one OSC message (address and argument list) into a Command; CommandError names what is wrong."""
    if not isinstance(address, str) or address not in _ADDRESSES:
        raise CommandError(f"unknown address {str(address)[:80]!r}")
    name, counts, convert = _ADDRESSES[address]
    if len(args) not in counts:
        want = " or ".join(map(str, counts))
        raise CommandError(f"{address}: expected {want} argument(s), got {len(args)}")
    value = None
    if args:
        if name == "fade":
            value = _number(address, args[0]) + 0.0  # -0.0 is 0.0 (logged and in /status as "0")
            if not 0.0 <= value <= MAX_FADE:
                raise CommandError(f"{address}: seconds must be within 0..{MAX_FADE:g}, got {value:g}")
        elif name == "speed":
            value = _number(address, args[0])
            if not SPEED_RANGE[0] <= value <= SPEED_RANGE[1]:
                raise CommandError(f"{address}: factor must be within {SPEED_RANGE[0]:g}..{SPEED_RANGE[1]:g}, "
                                   f"got {value:g}")
        else:
            value = convert(address, args[0])
    return Command(name, value, reply_to, received)


def key_command(key: int, *, quit_allowed: bool) -> Command | None:
    """The command for a pygame key code, or None. Digits jump to that subject index (as /subject)."""
    import pygame  # only the key constants; the caller has pygame initialised already

    if pygame.K_0 <= key <= pygame.K_9:
        return Command("subject", key - pygame.K_0)
    if pygame.K_KP0 <= key <= pygame.K_KP9:
        return Command("subject", key - pygame.K_KP0)
    table = {
        pygame.K_SPACE: "toggle",
        pygame.K_RIGHT: "next",
        pygame.K_LEFT: "prev",
        pygame.K_DOWN: "next_sequence",
        pygame.K_UP: "prev_sequence",
        pygame.K_b: "blackout",
    }
    if key in table:
        return Command(table[key])
    if key in (pygame.K_ESCAPE, pygame.K_q) and quit_allowed:
        return Command("quit")
    return None
