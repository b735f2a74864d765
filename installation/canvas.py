"""The screen: opening the display, and drawing a frame, a fading still over it, and the blackout on top.

    canvas = Canvas(player_cfg, windowed=False, display=0)    # full-screen, borderless, no cursor, no blanking
    still = canvas.still(frame, None, 1.0)                     # what a jump fades away from
    flipped = canvas.show(frame, still, alpha=0.3, black=0.0)  # draw, flip; returns time.perf_counter() after flip

A frame is (data, (w, h), (x, y)): 32-bit RGBX bytes from the decoder, already scaled by ffmpeg, and where it goes.
Blending uses per-surface alpha on display-format surfaces only (the fast path in SDL); the letterbox bars are filled
rather than the whole screen. Nothing is allocated per frame except the zero-copy wrapper around the frame bytes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner in the gallery log
import pygame  # noqa: E402

log = logging.getLogger(__name__)

Frame = tuple  # (data: bytes, size: (w, h), dest: (x, y))


class Still:
    """A picture to fade away from: a display-format surface and where it goes."""

    def __init__(self, surface: pygame.Surface, dest: tuple[int, int]):
        self.surface, self.dest = surface, dest

    @property
    def rect(self) -> pygame.Rect:
        return pygame.Rect(self.dest, self.surface.get_size())


HEADLESS = ("offscreen", "dummy")  # SDL's video drivers that draw on no screen


class Canvas:
    def __init__(self, pcfg: Any, *, windowed: bool, display: int):
        os.environ.setdefault("SDL_VIDEO_ALLOW_SCREENSAVER", "0")
        pygame.display.init()
        driver = pygame.display.get_driver()
        if driver in HEADLESS and os.environ.get("SDL_VIDEODRIVER", "").lower() != driver:
            # SDL found no display and fell back to drawing nowhere: the show would "play", healthy by every check,
            # on no screen. Only when asked for (SDL_VIDEODRIVER=dummy: tests, benches) is that what we want.
            pygame.display.quit()
            raise ValueError(f"no display found (SDL chose its {driver!r} driver): is DISPLAY or WAYLAND_DISPLAY set "
                             "for this session? (SDL_VIDEODRIVER=dummy plays without a screen on purpose)")
        pygame.display.set_allow_screensaver(False)  # no screen blanking while we play
        if windowed:
            size, flags = tuple(pcfg.window_size), 0
        else:
            sizes = pygame.display.get_desktop_sizes()
            if display >= len(sizes):
                raise ValueError(f"player.display: display {display} does not exist ({len(sizes)} found)")
            size, flags = sizes[display], pygame.FULLSCREEN | pygame.NOFRAME
        try:
            self.screen = pygame.display.set_mode(size, flags, display=display, vsync=1)
        except pygame.error:
            log.warning("vsync is not available here; frames may tear")
            self.screen = pygame.display.set_mode(size, flags, display=display)
        pygame.display.set_caption("Uncanny")
        pygame.mouse.set_visible(False)
        self.size = self.screen.get_size()
        self.black = pygame.Surface(self.size).convert()
        self.black.fill((0, 0, 0))
        # two full-screen stills, used in turn; made now so memory does not grow at the first fade
        self._buffers = [pygame.Surface(self.size).convert() for _ in range(2)]

    def allow_sleep(self, allowed: bool) -> None:
        """Let the display blank and power down (a scheduled closing in black), or keep it awake (playing)."""
        pygame.display.set_allow_screensaver(allowed)

    def _bars(self, dst: pygame.Surface, rect: pygame.Rect) -> None:
        """Fill the screen around `rect` with black."""
        w, h = dst.get_size()
        for bar in ((0, 0, w, rect.top), (0, rect.bottom, w, h - rect.bottom),
                    (0, rect.top, rect.left, rect.height), (rect.right, rect.top, w - rect.right, rect.height)):
            if bar[2] > 0 and bar[3] > 0:
                dst.fill((0, 0, 0), bar)

    def _widen(self, still: Still) -> None:
        """Make `still` full-screen (black around it), for a fade between frames placed differently."""
        buf = self._buffer(avoid=still.surface)
        buf.fill((0, 0, 0))
        still.surface.set_alpha(None)
        buf.blit(still.surface, still.dest)
        still.surface, still.dest = buf, (0, 0)

    def _buffer(self, avoid: pygame.Surface | None) -> pygame.Surface:
        return self._buffers[1] if self._buffers[0] is avoid else self._buffers[0]

    def compose(self, dst: pygame.Surface, frame: Frame | None, still: Still | None, alpha: float,
                widen: bool = True) -> None:
        """`frame` with `still` on top at opacity 1 - alpha (alpha is the crossfade's progress)."""
        if frame is None:
            dst.fill((0, 0, 0))
            if still is not None:
                still.surface.set_alpha(None)
                dst.blit(still.surface, still.dest)
            return
        data, size, dest = frame
        rect = pygame.Rect(dest, size)
        self._bars(dst, rect)
        dst.blit(pygame.image.frombuffer(data, size, "RGBX"), dest)
        if still is not None and alpha < 1:
            if widen and still.rect != rect and still.rect.size != self.size:
                self._widen(still)
            still.surface.set_alpha(round(255 * (1 - alpha)))
            dst.blit(still.surface, still.dest)

    def still(self, frame: Frame | None, old: Still | None, alpha: float) -> Still:
        """The picture on screen now (without blackout), kept to fade away from."""
        if frame is not None and (old is None or alpha >= 1):  # just the frame: convert it, no full-screen work
            data, size, dest = frame
            return Still(pygame.image.frombuffer(data, size, "RGBX").convert(), dest)
        buf = self._buffer(avoid=old.surface if old is not None else None)
        self.compose(buf, frame, old, alpha, widen=False)
        return Still(buf, (0, 0))

    def snapshot(self, old: Still | None) -> Still:
        """The screen as last drawn, copied into a spare full-screen buffer: one plain blit, where `still` would
        compose the picture again (a fill, a blit and a full-screen alpha blit). Only valid while the last draw had
        no blackout on it."""
        buf = self._buffer(avoid=old.surface if old is not None else None)
        buf.blit(self.screen, (0, 0))
        return Still(buf, (0, 0))

    def show(self, frame: Frame | None, still: Still | None, alpha: float, black: float) -> float:
        """Draw and flip; `black` is the blackout level 0..1. Returns the time just after the flip."""
        if black >= 1.0:
            self.screen.fill((0, 0, 0))
        else:
            self.compose(self.screen, frame, still, alpha)
            if black > 0:
                self.black.set_alpha(round(255 * black))
                self.screen.blit(self.black, (0, 0))
        pygame.display.flip()
        return time.perf_counter()

    def pixels(self) -> Any:
        """The screen as an [H,W,3] uint8 array (a copy), for tests and benches."""
        return pygame.surfarray.array3d(self.screen).swapaxes(0, 1)

    def close(self) -> None:
        pygame.display.quit()
