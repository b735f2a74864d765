"""The gallery player: plays the playlist full-screen, forever, under OSC and keyboard control.

    player = Player(cfg, sources=[Path("media")])   # cfg: sequences.config.Config
    player.open()                                    # display, OSC socket, media scanner
    player.run()                                     # events -> commands -> update -> draw -> flip -> wait
    player.close()

Only the main loop changes state. The OSC thread and the keyboard hand it validated Commands through a queue;
decoders and the media scanner hand it frames and scans through bounded queues; it never waits on any of them.
A jump (subject, sequence, next, prev) crossfades from a still of the current picture to the target's first frame;
within a sequence, a transition clip from the manifest (from the current subject to the target) plays first when there
is one, and the loop then continues where the clip ends: the frame of the target's finished face (final_frame).
Faults in a video or a command are logged and the show goes on.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from installation.commands import Command, RateLimitedLog, key_command
from installation.decoder import BYTES_PER_PIXEL, Decoder, Frame, release_big_blocks
from installation.playlist import Playlist, PlaylistEntry, Scanner
from installation.stream import PosterCache, Stream
from installation.timing import approach, fade_alpha, place, subject_at

log = logging.getLogger(__name__)

JUMPS = {"subject", "sequence"}  # choose the picture outright, whatever was on screen
STEPS = {"next": ("next", 1), "prev": ("next", -1), "next_sequence": ("next_sequence", 1),
         "prev_sequence": ("next_sequence", -1)}  # relative moves, and how they add up
MOVES = JUMPS | set(STEPS)  # each starts a new stream
PICTURE_COMMANDS = MOVES | {"blackout"}  # timed from arrival to the flip that shows them
IDLE_POLL = 0.02  # seconds between looks at the keyboard when nothing is due
FADE_STEP = 1 / 30  # redraw interval while a fade runs on a still picture


def coalesced(batch: list[Command]) -> list[Command]:
    """The commands of one turn with at most one jump and one step of each kind left, meaning the same: moves before
    the last /subject or /sequence are overridden by it, and the steps after it add up (/subject 2 then two /next is
    subject 4). Each move costs a still of the screen and a decoder start (~4 ms at 1080p), so a flood applied one by
    one froze the picture; now it costs at most three moves per frame. Other commands keep their order."""
    last = max((i for i, c in enumerate(batch) if c.name in JUMPS), default=-1)
    out, steps = [], {"next_sequence": 0, "next": 0}  # sequence steps first: subject steps then count within it
    for i, c in enumerate(batch):
        if c.name in MOVES and i < last:
            continue
        if c.name in STEPS:
            kind, sign = STEPS[c.name]
            steps[kind] += sign
        else:
            out.append(c)
    for kind, n in steps.items():
        if n:
            out.append(Command(kind if n > 0 else "prev" + kind.removeprefix("next"), abs(n)))
    return out


class Player:
    def __init__(self, cfg: Any, sources: list[Path], *, windowed: bool | None = None, display: int | None = None,
                 osc_port: int | None = None, clock: Callable[[], float] = time.perf_counter,
                 time_scale: float = 1.0):
        self.cfg, self.pcfg = cfg, cfg.player
        self.sources = [Path(s) for s in sources]
        self.windowed = self.pcfg.windowed if windowed is None else windowed
        self.display_index = self.pcfg.display if display is None else display
        self.osc_port = cfg.osc.port if osc_port is None else osc_port
        self.clock, self.time_scale = clock, time_scale  # tests and the soak bench run time faster
        self.commands: queue.Queue = queue.Queue(maxsize=1000)
        self.wake = threading.Event()
        self.playlist = Playlist()
        self.posters = PosterCache(self.pcfg.poster_cache_mb * 1024 * 1024)
        self._prefetch: tuple[tuple, Decoder] | None = None  # (poster key, its own one-frame decoder)
        self._prefetch_tried: set[tuple] = set()
        self.seq: PlaylistEntry | None = None  # sequence of the main stream
        self.main: Stream | None = None  # the stream on screen
        self.after_clip: Stream | None = None  # loop stream to continue with when a transition clip ends
        self.clip_subject = None  # target SubjectEntry while a transition clip plays
        self.jump_subject = None  # target SubjectEntry of the last jump (reported until its first frame shows)
        self.fade_from = None  # canvas.Still: the picture a jump fades away from
        self.fade_start, self.fade_seconds = 0.0, 0.0
        self.blackout, self.black_level = False, 0.0
        self.playing, self.speed, self.crossfade = True, 1.0, self.pcfg.crossfade
        self.passes = 0  # loop passes of the current sequence (for advance_after)
        self.running = False
        self.dropped_closed = 0  # drops of streams already gone
        self.frames_shown = 0  # new video frames put on screen
        self.shown_times: collections.deque = collections.deque(maxlen=256)
        self.command_flips: collections.deque = collections.deque(maxlen=4096)  # (received, flipped) per command
        self._awaiting: collections.deque = collections.deque(maxlen=256)  # picture commands not yet on screen
        self.problems = RateLimitedLog(log)  # a flood of bad commands must not flood the log
        self._faults: set[str] = set()
        self.screen = self.canvas = self.osc = self.scanner = None
        self._retired: list[Stream] = []  # streams to close once the next frame is on screen
        self.started = self.last_input = self.last_draw = 0.0
        self.drawn = False  # something has been drawn: the screen holds the last picture (see _still)
        self.attracted = True

    # ----- set-up -------------------------------------------------------------------------------------------------

    def open(self) -> None:
        from installation.canvas import Canvas  # pygame: imported when a display is wanted
        from installation.osc import OscServer

        release_big_blocks()
        self.canvas = Canvas(self.pcfg, windowed=self.windowed, display=self.display_index)
        self.screen = self.canvas.screen
        if self.cfg.osc.enabled:
            self.osc = OscServer(self._osc_config(), submit=self.submit)
            log.info("OSC listening on %s:%d", self.cfg.osc.host, self.osc.port)
        self.scanner = Scanner(self.sources, self.pcfg.rescan_every)
        self.started = self.last_input = self.clock()
        first = self._wait_first_scan(timeout=5.0)
        if first is not None:
            self._take_scan(first, self.started)
        if not self.playlist.sequences:
            log.warning("no renders found under %s; waiting for some", ", ".join(map(str, self.sources)))

    def _osc_config(self) -> Any:
        return dataclasses.replace(self.cfg.osc, port=self.osc_port)

    def _wait_first_scan(self, timeout: float):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            scan = self.scanner.poll()
            if scan is not None:
                return scan
            time.sleep(0.005)
        return None

    def close(self) -> None:
        for s in (self.main, self.after_clip):
            if s is not None:
                s.close()
        self.main = self.after_clip = None
        if self._prefetch is not None:
            self._prefetch[1].close()
            self._prefetch = None
        if self.osc is not None:
            self.osc.close()
        if self.scanner is not None:
            self.scanner.close()
        self._after_flip()
        if self.canvas is not None:
            self.canvas.close()

    def submit(self, cmd: Command) -> None:
        """Called from other threads: queue a validated command and wake the main loop."""
        try:
            self.commands.put_nowait(cmd)
        except queue.Full:
            self.problems.warning("command queue full; %s dropped", cmd.name)
        self.wake.set()

    # ----- main loop ----------------------------------------------------------------------------------------------

    def run(self, seconds: float | None = None) -> None:
        self.running = True
        end = math.inf if seconds is None else self.clock() + seconds
        while self.running and self.clock() < end:
            self.step()

    def step(self) -> None:
        """One turn of the main loop: events -> commands -> update -> draw -> flip -> wait."""
        now = self.clock()
        try:
            self._events()
            self._commands(now)
            dirty = self._update(now)
            if dirty:
                self._draw(now)
            self._after_flip()
        except Exception as e:  # a fault in one video or command must not end the show
            self._fault(e, "error in the main loop")
            time.sleep(0.05)
        try:
            self._wait(now)
        except Exception as e:
            self._fault(e, "error while waiting for the next frame")
            time.sleep(IDLE_POLL)

    def _fault(self, e: Exception, what: str) -> None:
        """Log an unexpected error and carry on: the traceback once per kind of fault, then one rate-limited line."""
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{type(e).__name__} {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else type(e).__name__
        if where not in self._faults:
            self._faults.add(where)
            log.error("%s; carrying on", what, exc_info=e)
        else:
            self.problems.warning("%s again (%s: %.200s); carrying on", what, type(e).__name__, e)

    def _events(self) -> None:
        import pygame

        for event in pygame.event.get():
            if event.type == pygame.QUIT and self.pcfg.allow_quit_key:
                self.running = False
            elif event.type == pygame.KEYDOWN:
                cmd = key_command(event.key, quit_allowed=self.pcfg.allow_quit_key)
                if cmd is not None:
                    self.submit(cmd)

    def _wait(self, now: float) -> None:
        deadline = now + IDLE_POLL
        if self.main is not None:
            deadline = min(deadline, self.main.next_due_time(now))
            if not self.main.primed:
                deadline = min(deadline, now + 0.005)
        if self._fading(now):
            deadline = min(deadline, self.last_draw + FADE_STEP)
        timeout = (deadline - self.clock()) / self.time_scale
        # never longer than a keyboard poll, and never NaN, whatever a stream's timing says
        self.wake.wait(min(max(0.002, timeout), IDLE_POLL) if math.isfinite(timeout) else IDLE_POLL)
        self.wake.clear()

    def _fading(self, now: float) -> bool:
        crossfading = self.fade_from is not None and fade_alpha(now, self.fade_start, self.fade_seconds) < 1
        return crossfading or self.black_level != (1.0 if self.blackout else 0.0)

    # ----- commands -----------------------------------------------------------------------------------------------

    def _commands(self, now: float) -> None:
        batch = []
        for _ in range(100):  # at most this many a turn, so a flood cannot stall the picture
            try:
                batch.append(self.commands.get_nowait())
            except queue.Empty:
                break
        for cmd in coalesced(batch):
            if cmd.name not in ("ping", "status"):
                self.last_input, self.attracted = now, False
            try:
                self.apply(cmd, now)
            except Exception as e:
                self._fault(e, f"command {cmd.name} {cmd.value!r:.60} failed; ignored")
        self._awaiting.extend(c for c in batch if c.name in PICTURE_COMMANDS and c.received)

    def apply(self, cmd: Command, now: float) -> None:
        name, value = cmd.name, cmd.value
        if name in ("play", "pause", "toggle"):
            self._set_playing(not self.playing if name == "toggle" else name == "play", now)
        elif name in ("next", "prev"):  # value: how many (several arriving in one turn, see coalesced)
            self._step_subject((1 if name == "next" else -1) * (value or 1), now)
        elif name in ("next_sequence", "prev_sequence"):
            seq, target = self.seq, None
            for _ in range(min(value or 1, len(self.playlist.sequences))):
                seq = self.playlist.step(seq.name if seq else None, 1 if name == "next_sequence" else -1)
                if seq is None:
                    break
                target = seq
            if target is not None:  # a lone sequence steps onto itself: it starts again, as one step always did
                self.jump(target, None, now)
        elif name == "subject":
            if self.seq is None:
                self.problems.warning("/subject %.60r: nothing is playing; ignored", value)
                return
            entry = self._find_subject(self.seq, value)
            if entry is None:
                self.problems.warning("/subject %.60r: no such subject in sequence %r; ignored", value,
                                      self.seq.name)
                return
            self.jump(self.seq, entry, now)
        elif name == "sequence":
            seq = self.playlist.find(value)
            if seq is None:
                self.problems.warning("/sequence %.60r: no such sequence (%d in the playlist); ignored", value,
                                      len(self.playlist.sequences))
                return
            self.jump(seq, None, now)
        elif name == "blackout":
            self.blackout = (not self.blackout) if value is None else value
        elif name == "fade":
            self.crossfade = value
        elif name == "speed":
            self.speed = value
            for s in (self.main, self.after_clip):
                if s is not None:
                    s.clock.set_speed(now, value)
        elif name == "reload":
            self.scanner.trigger()
        elif name == "ping":
            self._reply(cmd, "/pong")
        elif name == "status":
            self._reply(cmd, "/status", json.dumps(self.status(now)))
        elif name == "quit":
            self.running = False

    def _reply(self, cmd: Command, address: str, *args: Any) -> None:
        if self.osc is not None:
            self.osc.reply(cmd.reply_to, address, *args)

    def _set_playing(self, playing: bool, now: float) -> None:
        self.playing = playing
        for s in (self.main, self.after_clip):
            if s is not None:
                (s.resume if playing else s.pause)(now)

    @staticmethod
    def _find_subject(seq: PlaylistEntry, key: int | str):
        m = seq.manifest
        entry = m.subject(key)
        if entry is None and isinstance(key, str) and key.isascii() and key.isdigit():  # not "²": int() refuses it
            entry = m.subject(int(key))
        return entry

    def _step_subject(self, delta: int, now: float) -> None:
        if self.seq is None:
            return
        subjects = sorted(self.seq.manifest.subjects, key=lambda s: s.first_frame)
        cur = self.current_subject()
        i = subjects.index(cur) + delta if cur in subjects else 0
        if 0 <= i < len(subjects):
            self.jump(self.seq, subjects[i], now)
            return
        seq = self.playlist.step(self.seq.name, 1 if delta > 0 else -1)  # past either end: the neighbouring sequence
        if seq is not None:
            subs = sorted(seq.manifest.subjects, key=lambda s: s.first_frame)
            self.jump(seq, (subs[0] if delta > 0 else subs[-1]) if subs else None, now)

    def current_subject(self):
        """The SubjectEntry on screen (the target while a transition clip plays), or None."""
        if self.clip_subject is not None:
            return self.clip_subject
        if self.seq is None or self.main is None or not self.seq.manifest.subjects:
            return None
        if self.main.shown is None:  # a jump is on its way: report where it goes
            return self.jump_subject
        subjects = sorted(self.seq.manifest.subjects, key=lambda s: s.first_frame)
        return subjects[subject_at([s.first_frame for s in subjects], self.main.shown.index)]

    # ----- jumps --------------------------------------------------------------------------------------------------

    def _placement(self, seq: PlaylistEntry):
        return place(seq.manifest.size, self.screen.get_size(), self.pcfg.fit)

    def _loop_stream(self, seq: PlaylistEntry, start: int) -> Stream:
        m = seq.manifest
        p = self._placement(seq)
        return Stream(m.loop, fps=m.fps, start=start, loop=True, src_size=m.size, placement=p,
                      buffer_frames=self.pcfg.buffer_frames, speed=self.speed, expected_frames=m.loop_frames,
                      poster=self.posters.get(PosterCache.key(m.loop, start, p, seq.stamp)), playing=self.playing,
                      label=seq.name, start_now=False, tag=seq.stamp)

    def jump(self, seq: PlaylistEntry, entry, now: float) -> None:
        """Crossfade to `entry` (a SubjectEntry of `seq`; None = the start of the loop), through a transition clip
        when the manifest has one from the subject on screen."""
        current = self.current_subject() if seq is self.seq else None
        start = entry.first_frame if entry is not None else 0
        clip = None
        if current is not None and entry is not None and current.name != entry.name:
            clip = seq.manifest.transition(current.name, entry.name)
        # the new streams first (their decoders start after the flip): if that fails, the old picture plays on
        if clip is not None and clip.file.is_file():
            m = seq.manifest
            p = self._placement(seq)
            main = Stream(clip.file, fps=m.fps, start=0, loop=False, src_size=m.size, placement=p,
                          buffer_frames=self.pcfg.buffer_frames, speed=self.speed,
                          poster=self.posters.get(PosterCache.key(clip.file, 0, p, seq.stamp)), playing=self.playing,
                          label=f"{seq.name} {clip.source}->{clip.target}", start_now=False, tag=seq.stamp)
            # the clip ends on the target's finished face, which the loop shows at final_frame: carry on from there
            after_clip, clip_subject = self._loop_stream(seq, entry.final_frame), entry
            seconds = min(self.crossfade, self.pcfg.transition_fade)
        else:
            main, after_clip, clip_subject = self._loop_stream(seq, start), None, None
            seconds = self.crossfade
        still = self._still(now)
        self._drop_streams()
        self.main, self.after_clip, self.clip_subject = main, after_clip, clip_subject
        if seq is not self.seq:
            self.passes = 0
        if entry is None and seq.manifest.subjects:
            entry = min(seq.manifest.subjects, key=lambda e: e.first_frame)
        self.seq, self.jump_subject = seq, entry
        self._begin_fade(still, now, seconds)

    def _begin_fade(self, still, now: float, seconds: float) -> None:
        self.fade_from = still
        # start one refresh early so the very first frame after the command already shows the target
        self.fade_start, self.fade_seconds = now - 1 / 60, seconds

    def _frame(self):
        """The main stream's frame for the canvas: (data, size, dest), or None."""
        s = self.main
        if s is None or s.shown is None:
            return None
        return s.shown.data, s.size, s.placement.dest

    def _still(self, now: float):
        """The picture on screen now (without blackout), to fade away from. While no blackout is drawn that is the
        screen itself, so a jump copies it (~1.5 ms at 1080p) instead of composing it again (~5 ms), which is most of
        a jump's cost in the main loop."""
        if self.drawn and self.black_level == 0.0:
            return self.canvas.snapshot(self.fade_from)
        alpha = fade_alpha(now, self.fade_start, self.fade_seconds) if self.fade_from is not None else 1.0
        return self.canvas.still(self._frame(), self.fade_from, alpha)

    def _retire(self, s: Stream | None) -> None:
        if s is not None:
            self.dropped_closed += s.dropped
            s.dropped = 0
            self._retired.append(s)

    def _prefetch_posters(self) -> None:
        """Decode, one at a time and only while no other stream is starting, the first frame of every subject of the
        sequence on screen that the poster cache lacks, so any jump can show its target on the very next frame
        instead of waiting for ffmpeg to start and seek. Stops once the cache holds them all or would overflow."""
        if self._prefetch is not None:
            key, dec = self._prefetch
            item = dec.get()
            if item is None and (dec.alive or not dec.begun):
                return
            if isinstance(item, Frame):
                self.posters.put(key, item.data)
            dec.close()
            self._prefetch = None
            return
        seq, main = self.seq, self.main
        if seq is None or main is None or not main.primed or self.after_clip:  # not while a new stream starts
            return
        m, p = seq.manifest, self._placement(seq)
        frame_bytes = p.crop[2] * p.crop[3] * BYTES_PER_PIXEL
        for e in m.subjects:
            key = PosterCache.key(m.loop, e.first_frame, p, seq.stamp)
            if key in self._prefetch_tried or self.posters.get(key) is not None:
                continue
            if self.posters.bytes + frame_bytes > self.posters.max_bytes:
                return  # no room: prefetching would only evict other posters
            if len(self._prefetch_tried) > 10_000:
                self._prefetch_tried.clear()
            self._prefetch_tried.add(key)
            self._prefetch = key, Decoder(m.loop, fps=m.fps, start=e.first_frame, loop=False, src_size=m.size,
                                          scale=p.scale, crop=p.crop, buffer_frames=1, start_now=False)
            return

    def _after_flip(self) -> None:
        """Work that may wait a frame: closing old decoders, starting new ones (thread start-up waits)."""
        for s in self._retired:
            s.close()
        self._retired.clear()
        if self._prefetch is not None:
            self._prefetch[1].begin()
        for s in (self.main, self.after_clip):
            if s is not None:
                s.decoder.begin()

    def _drop_streams(self) -> None:
        self._retire(self.main)
        self._retire(self.after_clip)
        self.main = self.after_clip = self.clip_subject = None

    # ----- update -------------------------------------------------------------------------------------------------

    def _update(self, now: float) -> bool:
        dirty = self._take_scan(self.scanner.poll(), now) if self.scanner else False
        self._attract(now)
        if self.main is None and self.seq is None and self.playlist.sequences:
            seq = self._default_sequence()
            if seq is not None:
                self.jump(seq, None, now)
        dirty |= self._update_main(now)
        self._prefetch_posters()
        if self.fade_from is not None:
            if fade_alpha(now, self.fade_start, self.fade_seconds) >= 1 and self.main is not None and self.main.ready:
                self.fade_from = None
            dirty = True
        target = 1.0 if self.blackout else 0.0
        if self.black_level != target:
            self.black_level = approach(self.black_level, target, max(0.0, now - self.last_draw),
                                        self.pcfg.blackout_fade)
            dirty = True
        return dirty

    def _update_main(self, now: float) -> bool:
        s = self.main
        if s is None:
            return False
        changed = s.update(now)
        self._collect_posters(s)
        if s.failed:
            self._stream_failed(s, now)
            return True
        if s.ended:  # transition clip done: cut to the loop at the target subject, on the clock
            nxt, self.after_clip = self.after_clip, None
            self._retire(s)
            self.main, self.clip_subject = nxt, None
            return self._update_main(now) or True
        if changed and s.loop and s.wraps > self.passes:
            self.passes = s.wraps
            if self.pcfg.advance_after and self.passes >= self.pcfg.advance_after:
                nxt = self.playlist.step(self.seq.name, 1)
                if nxt is not None and nxt is not self.seq:
                    self.jump(nxt, None, now)
        if changed:
            self.shown_times.append(now)
            self.frames_shown += 1
        return changed

    def _collect_posters(self, s: Stream) -> None:
        if not s.seen:
            return
        stamp = s.tag
        if s.loop and self.seq is not None:
            firsts = {e.first_frame for e in self.seq.manifest.subjects} | {0}
            for f in s.seen:
                if f.index in firsts:
                    self.posters.put(PosterCache.key(s.path, f.index, s.placement, stamp), f.data)
        elif s.seen[0].pos == 0:
            self.posters.put(PosterCache.key(s.path, 0, s.placement, stamp), s.seen[0].data)
        s.seen.clear()

    def _stream_failed(self, s: Stream, now: float) -> None:
        log.warning("skipping %s: %s", s.label or s.path, s.failed)
        if s is self.main and self.after_clip is not None:  # a broken transition clip: go straight to the loop
            nxt, self.after_clip = self.after_clip, None
            self._retire(s)
            self.main, self.clip_subject = nxt, None
            self._begin_fade(self._still(now), now, self.crossfade)
            return
        name = self.seq.name if self.seq else None
        self.playlist.mark_failed(name)
        nxt = self.playlist.step(name, 1)
        if nxt is None:
            log.warning("nothing playable; showing black until a render appears")
            still = self._still(now)
            self._drop_streams()
            self.seq = None
            self._begin_fade(still, now, self.crossfade)
        else:
            self.jump(nxt, None, now)

    def _take_scan(self, scan, now: float) -> bool:
        if scan is None:
            return False
        added, removed, changed = self.playlist.update(scan.sequences)
        for n in added:
            log.info("sequence %r: found", n)
        for n in removed:
            log.info("sequence %r: gone from the media folders", n)
        for n in changed:
            log.info("sequence %r: updated; takes effect at its next jump or loop point", n)
        if self.seq is not None and self.seq.name in changed:
            self.seq = self.playlist.get(self.seq.name)
        return False

    def _default_sequence(self) -> PlaylistEntry | None:
        name = self.pcfg.default_sequence
        seq = self.playlist.get(name) if name else None
        if seq is not None and self.playlist.playable(seq.name):
            return seq
        return self.playlist.step(None, 1)

    def _attract(self, now: float) -> None:
        after = self.pcfg.attract_after
        if after <= 0 or self.attracted or now - self.last_input < after:
            return
        self.attracted = True
        seq = self._default_sequence()
        log.info("no input for %.0f s: attract mode, back to %r", after, seq.name if seq else None)
        if not self.playing:
            self._set_playing(True, now)
        if self.speed != 1.0:
            self.apply(Command("speed", 1.0), now)
        if seq is not None and seq is not self.seq:
            self.jump(seq, None, now)

    # ----- draw ---------------------------------------------------------------------------------------------------

    def _draw(self, now: float) -> None:
        alpha = fade_alpha(now, self.fade_start, self.fade_seconds) if self.fade_from is not None else 1.0
        flipped = self.canvas.show(self._frame(), self.fade_from, alpha, self.black_level)
        self.last_draw, self.drawn = now, True
        if self._awaiting and (self.main is None or self.main.ready or self.blackout):
            for cmd in self._awaiting:
                self.command_flips.append((cmd.name, cmd.received, flipped))
            self._awaiting.clear()

    # ----- status -------------------------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self.dropped_closed + sum(s.dropped for s in (self.main, self.after_clip) if s is not None)

    def status(self, now: float) -> dict:
        recent = [t for t in self.shown_times if now - t <= 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 and recent[-1] > recent[0] else 0.0
        entry = self.current_subject()
        shown = self.main.shown if self.main is not None else None
        return {
            "sequence": self.seq.name if self.seq else None,
            "sequence_index": self.playlist.position(self.seq.name) if self.seq else -1,
            "subject": entry.index if entry else None,
            "subject_name": entry.name if entry else None,
            "frame": shown.index if shown else None,
            "transition": self.clip_subject is not None,
            "playing": self.playing,
            "fps": round(fps, 2),
            "video_fps": self.seq.manifest.fps if self.seq else None,
            "speed": self.speed,
            "crossfade": self.crossfade,
            "blackout": self.blackout,
            "dropped": self.dropped,
            "uptime_s": round(now - self.started, 3),
            "sequences": [s.name for s in self.playlist.sequences],
        }
