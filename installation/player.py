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

The Player keeps the main loop, the commands, the fades and the blackout, and wires the parts: what plays
(installation/playback.py), the posters (installation/prefetch.py), the statistics (installation/stats.py), the
commands waiting (installation/inbox.py), the opening hours (installation/schedule.py), and signals, the systemd
watchdog, the heartbeat and the run record (installation/service.py). Signals only name a request (`request`); the
main loop acts on it at its next turn: stop, reload config.toml and rescan, or log the status.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

from installation.commands import Command, RateLimitedLog, key_command
from installation.decoder import release_big_blocks
from installation.follow import Sync
from installation.framelog import FrameLog
from installation.inbox import MOVES, Inbox
from installation.playback import BLACK, FADE, RESCAN, Playback, TakeOver, find_subject, same_sequence
from installation.playlist import Playlist, PlaylistEntry, Scanner
from installation.prefetch import PosterPrefetcher
from installation.schedule import Schedule
from installation.service import Heartbeat, RunRecord, Watchdog
from installation.stats import Stats
from installation.stream import PosterCache
from installation.timing import approach, fade_alpha

log = logging.getLogger(__name__)

IDLE_POLL = 0.02  # seconds between looks at the keyboard when nothing is due
FADE_STEP = 1 / 30  # redraw interval while a fade runs on a still picture
CLOSE_WAIT = 0.5  # seconds close() waits for decoder threads to reap their ffmpeg: no child outlives the player
RELOAD_HOLD = 3.0  # seconds moves wait after a /reload for the media scan it asked for (a new render's subjects)
# settings a running player cannot take on (SIGHUP says so): they need a new window, socket or log
RESTART_KEYS = {"general": ("media_dir",), "osc": ("enabled", "host", "port"),
                "player": ("display", "windowed", "window_size", "log_file", "log_max_bytes", "log_backups",
                           "state_file", "poster_cache_mb", "frame_log"),
                "sync": ("role", "leader", "host", "port", "group")}
SYNC_LIVE_KEYS = ("lead_time", "send_every", "lost_after")  # [sync] settings a SIGHUP applies at once


def status_json(status: dict) -> str:
    """`status` as strict JSON: a figure that is not finite (a sync offset from a leader's odd clock) is null, which
    every JSON reader takes, where NaN and Infinity break most of them."""
    def finite(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v
    return json.dumps(finite(status), allow_nan=False)


class Player:
    """The main loop and the parts it wires together: the playlist and its scanner, what plays (Playback), the
    posters (PosterPrefetcher), the statistics (Stats), the canvas with its fades and blackout, and the OSC server."""

    def __init__(self, cfg: Any, sources: list[Path], *, windowed: bool | None = None, display: int | None = None,
                 osc_port: int | None = None, clock: Callable[[], float] = time.perf_counter,
                 time_scale: float = 1.0, config_path: Path | None = None, state_path: Path | None = None,
                 wall: Callable[[], dt.datetime] = dt.datetime.now, overrides: dict | None = None):
        self.cfg, self.pcfg = cfg, cfg.player
        self.sources = [Path(s) for s in sources]
        self.windowed = self.pcfg.windowed if windowed is None else windowed
        self.display_index = self.pcfg.display if display is None else display
        self.osc_port = cfg.osc.port if osc_port is None else osc_port
        self.clock, self.time_scale = clock, time_scale  # tests and the soak bench run time faster
        self.wall = wall  # local time, for the opening hours
        self.config_path = config_path  # re-read on SIGHUP; None: only the media are rescanned
        self.overrides = overrides  # the command line's settings (--sync, --region), applied again on each re-read
        self.wake = threading.Event()
        self.inbox = Inbox(self.wake)
        self.requests: collections.deque = collections.deque(maxlen=16)  # (what, why) from signal handlers
        self.playlist = Playlist()
        self.prefetcher = PosterPrefetcher(PosterCache(self.pcfg.poster_cache_mb * 1024 * 1024))
        self.stats = Stats()
        self.playback = Playback(self.pcfg, self.playlist, self.prefetcher, self.stats)
        self.fade_from = None  # canvas.Still: the picture a jump fades away from
        self.fade_start, self.fade_seconds = 0.0, 0.0
        self.blackout, self.black_level = False, 0.0
        self.crossfade = self.pcfg.crossfade
        self.running = False
        self.stop_reason = "end of run"
        self.last_move = -math.inf  # clock time of the last jump: moves wait move_interval after it
        self.awaited_scan: tuple[int, float] | None = None  # a /reload's scan (its number, when): moves wait for it
        self.schedule = Schedule.from_config(cfg.schedule)
        self.schedule_open: bool | None = None  # as last applied; None: not yet
        self.schedule_changed = False  # new opening hours by SIGHUP: a closing is applied again (black or a sequence)
        self.missing_default: str | None = None  # a default_sequence not found, warned of once
        self.pause_when_black = False  # closed in blackout: pause once the screen is black, resume at opening
        self.record = RunRecord(state_path)
        self.watchdog = Watchdog.from_env()
        self.heartbeat = self._heartbeat(cfg.osc)
        self.problems = RateLimitedLog(log)  # a flood of bad commands must not flood the log
        self._faults: set[str] = set()
        self.canvas = self.osc = self.scanner = None
        self.last_input = self.last_draw = 0.0
        self.drawn = False  # something has been drawn: the screen holds the last picture (see _still)
        self.attracted = True
        self.sync = Sync(cfg.sync, clock) if cfg.sync.role != "none" else None  # players in step (follow.py)
        self.frame_log: FrameLog | None = None  # [player] frame_log: every frame shown, for bench/sync.py

    # ----- set-up -------------------------------------------------------------------------------------------------

    def open(self) -> None:
        from installation.canvas import Canvas  # pygame: imported when a display is wanted
        from installation.osc import OscServer

        release_big_blocks()
        self.canvas = Canvas(self.pcfg, windowed=self.windowed, display=self.display_index)
        self.playback.screen_size = self.canvas.screen.get_size()
        if self.cfg.osc.enabled:
            self.osc = OscServer(self._osc_config(), submit=self.submit)
            log.info("OSC listening on %s:%d", self.cfg.osc.host, self.osc.port)
        if self.sync is not None:
            self.sync.open(self.wake)
        if self.pcfg.frame_log:
            self.frame_log = FrameLog(Path(self.cfg.general.media_dir) / self.pcfg.frame_log)
            log.info("logging every frame shown to %s", self.frame_log.path)
        self.scanner = Scanner(self.sources, self.pcfg.rescan_every)
        self.stats.started = self.last_input = self.clock()
        reason = self.record.begin(time.monotonic())
        log.info("started; %s", reason)
        first = self._wait_first_scan(timeout=5.0)
        if first is not None:
            self._take_scan(first, self.stats.started)
        if not self.playlist.sequences:
            log.warning("no renders found under %s; waiting for some", ", ".join(map(str, self.sources)))
        self._schedule(self.stats.started)  # closed now (perhaps since long before the start): black from the start
        if self.watchdog is not None:
            self.watchdog.notify("READY=1")

    def _heartbeat(self, osc: Any) -> Heartbeat | None:
        return Heartbeat(osc.heartbeat_host, osc.heartbeat_port, osc.heartbeat_every) if osc.heartbeat_host else None

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
        """Stop everything: decoders (each ffmpeg killed and reaped), OSC, scanner, display; record a clean stop."""
        if self.watchdog is not None:
            self.watchdog.notify("STOPPING=1")
        pb = self.playback
        incoming = [s for s in (pb.incoming.main, pb.incoming.after_clip) if s] if pb.incoming is not None else []
        decoders = [s.decoder for s in pb.streams + pb.retired + incoming]
        if self.prefetcher.pending is not None:
            decoders.append(self.prefetcher.pending[1])
        self.playback.close()
        self.prefetcher.close()
        if self.osc is not None:
            self.osc.close()
        if self.sync is not None:
            self.sync.close()
        if self.scanner is not None:
            self.scanner.close()
        self._after_flip()
        end = time.perf_counter() + CLOSE_WAIT
        for d in decoders:  # killed above; their threads reap ffmpeg at once
            d.join(max(0.0, end - time.perf_counter()))
        if self.canvas is not None:
            self.canvas.close()
        if self.frame_log is not None:
            self.frame_log.close()
        if self.heartbeat is not None:
            self.heartbeat.close()
        self.record.end(self.stop_reason)
        log.info("stopped (%s)", self.stop_reason)

    def submit(self, cmd: Command) -> None:
        """Called from other threads: queue a validated command and wake the main loop."""
        self.inbox.submit(cmd)

    def request(self, what: str, why: str) -> None:
        """From a signal handler: "stop", "reload" or "status", acted on at the main loop's next turn (within
        IDLE_POLL). Only appends: a handler may interrupt the main loop anywhere."""
        self.requests.append((what, why))

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
            self._requests(now)
            self._events()
            self._schedule(now)
            self._commands(now)
            if self.sync is not None:
                self.sync.tick(self, now)
            dirty = self._update(now)
            if dirty:
                self._draw(now)
            self._after_flip()
            self._service(now)
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
        main = self.playback.main
        if main is not None:
            deadline = min(deadline, main.next_due_time(now))
            if not main.primed:
                deadline = min(deadline, now + 0.005)
        if self._fading(now):
            deadline = min(deadline, self.last_draw + FADE_STEP)
        if self.playback.incoming_at is not None and self.playback.incoming is not None:
            deadline = min(deadline, self.playback.incoming_at)  # a synced jump cuts on time
        if self.sync is not None:
            deadline = min(deadline, self.sync.next_due())
        timeout = (deadline - self.clock()) / self.time_scale
        # never longer than a keyboard poll, and never NaN, whatever a stream's timing says
        self.wake.wait(min(max(0.002, timeout), IDLE_POLL) if math.isfinite(timeout) else IDLE_POLL)
        self.wake.clear()

    def _fading(self, now: float) -> bool:
        crossfading = self.fade_from is not None and fade_alpha(now, self.fade_start, self.fade_seconds) < 1
        return crossfading or self.black_level != (1.0 if self.blackout else 0.0)

    # ----- commands -----------------------------------------------------------------------------------------------

    def _commands(self, now: float) -> None:
        """This turn's commands (within the inbox's time budget), then the waiting moves once the last jump is
        move_interval old: a flood of moves becomes one jump per move_interval, and the picture plays between."""
        rest, moves, held = self.inbox.take(ready=now - self.last_move >= self.pcfg.move_interval)
        for cmd in rest:
            self._apply_safely(cmd, now)
        if moves and self._awaiting_scan(now):  # after a /reload, this turn's or earlier ("/reload, /subject 5")
            self.inbox.defer(moves)
            moves = []
        for cmd in moves:
            self._apply_safely(cmd, now, preroll=held)
        self.stats.await_screen(c for c in rest + moves if c.received and (c in moves or c.name == "blackout"))

    def _apply_safely(self, cmd: Command, now: float, preroll: bool = False) -> None:
        if cmd.name not in ("ping", "status"):
            self.last_input, self.attracted = now, False
        try:
            self.apply(cmd, now, preroll=preroll)
        except Exception as e:
            self._fault(e, f"command {cmd.name} {cmd.value!r:.60} failed; ignored")

    def _rescan(self, now: float) -> None:
        """Scan the media now; moves wait for that scan (up to RELOAD_HOLD), so that a command sent right after a
        /reload finds what the scan finds. The hold runs from the first /reload still awaited: a stream of them
        (each asking for a scan later than the last) holds moves no longer than one."""
        since = now if self.awaited_scan is None else self.awaited_scan[1]
        self.awaited_scan = (self.scanner.trigger(), since)

    def _awaiting_scan(self, now: float) -> bool:
        if self.awaited_scan is None:
            return False
        number, since = self.awaited_scan
        if self.scanner.covered >= number or now - since >= RELOAD_HOLD:
            self.awaited_scan = None
            return False
        return True

    def apply(self, cmd: Command, now: float, preroll: bool = False) -> None:
        """Act on one command. `preroll`: a move that waited (a flood): its decoder starts first, and the picture
        plays on until the target's first frame is decoded (see jump)."""
        if self.sync is not None and self.sync.intercept(self, cmd, now):
            return  # a leader makes it with every follower at now + lead_time; a follower refuses it
        name, value, pb = cmd.name, cmd.value, self.playback
        if name in MOVES:
            pb.left_behind = None  # what plays was chosen: a re-rendered sequence does not take the screen back
        if name in ("play", "pause", "toggle"):
            pb.set_playing(not pb.playing if name == "toggle" else name == "play", now)
        elif name in ("next", "prev"):  # value: how many (several arriving in one turn, see coalesced)
            target = pb.subject_step((1 if name == "next" else -1) * (value or 1))
            if target is not None:
                self.jump(*target, now, preroll)
        elif name in ("next_sequence", "prev_sequence"):
            seq = pb.sequence_step(value or 1, 1 if name == "next_sequence" else -1)
            if seq is not None:  # a lone sequence steps onto itself: it starts again, as one step always did
                self.jump(seq, None, now, preroll)
        elif name == "subject":
            if pb.seq is None:
                self.problems.warning("/subject %.60r: nothing is playing; ignored", value)
                return
            entry = find_subject(pb.seq, value)
            if entry is None:
                self.problems.warning("/subject %.60r: no such subject in sequence %r; ignored", value, pb.seq.name)
                return
            self.jump(pb.seq, entry, now, preroll)
        elif name == "sequence":
            seq = self.playlist.find(value)
            if seq is None:
                self.problems.warning("/sequence %.60r: no such sequence (%d in the playlist); ignored", value,
                                      len(self.playlist.sequences))
                return
            self.jump(seq, None, now, preroll)
        elif name == "blackout":
            self.blackout = (not self.blackout) if value is None else value
        elif name == "fade":
            self.crossfade = value
        elif name == "speed":
            pb.set_speed(value, now)
        elif name == "reload":
            self._rescan(now)
        elif name == "ping":
            self._reply(cmd, "/pong")
        elif name == "status":
            self._reply(cmd, "/status", status_json(self.status(now)))
        elif name == "quit":
            self.running = False

    def _reply(self, cmd: Command, address: str, *args: Any) -> None:
        if self.osc is not None:
            self.osc.reply(cmd.reply_to, address, *args)

    # ----- jumps and fades ----------------------------------------------------------------------------------------

    def jump(self, seq: PlaylistEntry, entry, now: float, preroll: bool = False) -> None:
        """Crossfade to `entry` (a SubjectEntry of `seq`; None = the start of the loop), through a transition clip
        when the manifest has one from the subject on screen. At once (the target's poster shows on the next frame),
        or with `preroll` once the target's first frame is decoded, the picture playing on meanwhile: a flood's
        moves then never stop the frames."""
        if self.sync is not None and self.sync.takes_jump(self, seq, entry, now):
            self.last_move = now  # a leader's jump, scheduled for everyone; or a follower's own, not made
            return
        # the new streams first (their decoders start after the flip): if that fails, the old picture plays on
        move = self.playback.plan(seq, entry)
        self.last_move = now
        if preroll:
            self.playback.preroll(move, now)
        else:
            self._cut(move, now)

    def _cut(self, move, now: float) -> None:
        seconds = self.crossfade if move.clip_subject is None else min(self.crossfade, self.pcfg.transition_fade)
        still = self._still(now)
        self.playback.cut(move, now)
        at = move.main.start_at  # a synced jump: the fade runs on the same clock on every player
        self._begin_fade(still, now if at is None else at, seconds)

    def _begin_fade(self, still, now: float, seconds: float) -> None:
        self.fade_from = still
        # start one refresh early so the very first frame after the command already shows the target
        self.fade_start, self.fade_seconds = now - 1 / 60, seconds

    def _frame(self):
        """The main stream's frame for the canvas: (data, size, dest), or None."""
        s = self.playback.main
        if s is None or s.shown is None:
            return None
        return s.shown.data, s.size, s.placement.dest

    def _still(self, now: float):
        """The picture on screen now (without blackout), to fade away from. While no blackout is drawn that is the
        screen itself, so a jump copies it instead of composing it again, which is most of a jump's cost in the
        main loop (bench/RESULTS.md)."""
        if self.drawn and self.black_level == 0.0:
            return self.canvas.snapshot(self.fade_from)
        alpha = fade_alpha(now, self.fade_start, self.fade_seconds) if self.fade_from is not None else 1.0
        return self.canvas.still(self._frame(), self.fade_from, alpha)

    def _after_flip(self) -> None:
        """Work that may wait a frame: closing old decoders, starting new ones (thread start-up waits)."""
        self.playback.close_retired()
        self.prefetcher.begin()
        self.playback.begin()

    # ----- update -------------------------------------------------------------------------------------------------

    def _update(self, now: float) -> bool:
        pb = self.playback
        move = pb.incoming_ready(now)
        if move is not None:  # a pre-rolled jump has its first frame: cut to it now
            self._cut(move, now)
        dirty = self._take_scan(self.scanner.poll(), now) if self.scanner else False
        self._attract(now)
        if pb.main is None and pb.seq is None and pb.incoming is None and self.playlist.sequences:
            seq = pb.default_sequence()
            if seq is not None:
                self.jump(seq, None, now)
        changed, then = pb.update(now)
        self._follow(then, now)
        dirty |= changed
        self.prefetcher.update(pb.seq if pb.settled else None, pb.placement)
        if self.fade_from is not None:
            if fade_alpha(now, self.fade_start, self.fade_seconds) >= 1 and pb.main is not None and pb.main.ready:
                self.fade_from = None
            dirty = True
        target = 1.0 if self.blackout else 0.0
        if self.black_level != target:
            self.black_level = approach(self.black_level, target, max(0.0, now - self.last_draw),
                                        self.pcfg.blackout_fade)
            dirty = True
        if self.pause_when_black and self.black_level == 1.0 and self.blackout:
            self.pause_when_black = False
            pb.set_playing(False, now)  # nothing to see until opening: no decoding all night
        return dirty

    def _follow(self, then, now: float) -> None:
        """Do what Playback asked for: FADE (a broken clip: the loop is on, fade in from the screen), BLACK (nothing
        playable: fade to black), RESCAN (a media scan now), a TakeOver, or a sequence to jump to."""
        pb = self.playback
        if isinstance(then, TakeOver):
            self.take_over(then.seq, now)
        elif then == RESCAN:
            if self.scanner is not None:
                self.scanner.trigger()
        elif then == FADE:
            self._begin_fade(self._still(now), now, self.crossfade)
        elif then == BLACK:
            still = self._still(now)
            pb.stop()
            self._begin_fade(still, now, self.crossfade)
        elif then is not None:
            self.jump(then, None, now)

    def take_over(self, seq, now: float) -> None:
        """The render on screen was rewritten or moved: its new loop goes on, from its start (this is its loop point,
        or the end of the old video). Players in step go on at the frame the loop will have reached (Sync.take_over),
        so none steps back."""
        log.info("sequence %r: its new render takes over", seq.name)
        if self.sync is not None and (self.sync.role == "leader" or self.sync.following):
            self.sync.take_over(self, seq, now)
        else:
            self.jump(seq, None, now)

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
        name = self.pcfg.default_sequence
        if name and self.playlist.get(name) is None and self.missing_default != name:
            self.missing_default = name  # once, until it is found or the setting changes
            log.warning("player.default_sequence %r is not among the renders found (%s); the first one stands in",
                        name, ", ".join(s.name for s in self.playlist.sequences) or "none yet")
        elif name and self.playlist.get(name) is not None:
            self.missing_default = None
        self._follow(self.playback.rescanned(changed), now)
        return False

    def _attract(self, now: float) -> None:
        after = self.pcfg.attract_after
        if self.sync is not None and self.sync.role == "follower":
            return  # the leader's attract mode moves the followers too
        if after <= 0 or self.attracted or now - self.last_input < after or self.schedule_open is False:
            return  # closed by the schedule: what it shows stays
        self.attracted = True
        pb = self.playback
        seq = pb.default_sequence()
        log.info("no input for %.0f s: attract mode, back to %r", after, seq.name if seq else None)
        if not pb.playing:
            pb.set_playing(True, now)
        if pb.speed != 1.0:
            self.apply(Command("speed", 1.0), now)
        if seq is not None and not same_sequence(seq, pb.seq):
            pb.left_behind = None  # attract mode chose what plays
            self.jump(seq, None, now)

    # ----- unattended: signals, opening hours, watchdog, heartbeat ------------------------------------------------

    def _requests(self, now: float) -> None:
        while self.requests:
            what, why = self.requests.popleft()
            if what == "stop":
                log.info("%s: stopping", why)
                self.running, self.stop_reason = False, why
            elif what == "reload":
                self.reload(why)
            elif what == "status":
                log.info("%s: status %s", why, status_json(self.status(now)))

    def reload(self, why: str) -> None:
        """Re-read config.toml (keeping the old settings if it is broken) and rescan the media; the picture plays on."""
        if self.config_path is not None:
            from sequences.config import ConfigError, load_config

            try:
                if self.config_path.is_file() and self.config_path.stat().st_size == 0:  # an editor mid-save
                    raise ConfigError(f"{self.config_path}: empty (all defaults would replace the show's settings)")
                self._reconfigure(load_config(self.config_path, self.overrides))
                log.info("%s: %s reloaded; rescanning media", why, self.config_path)
            except (ConfigError, ValueError, OSError) as e:  # ValueError: [osc] allow that is no address
                log.error("%s: settings not reloaded, the old ones stay: %s", why, e)
        else:
            log.info("%s: rescanning media", why)
        self._rescan(self.clock())

    def _reconfigure(self, cfg: Any) -> None:
        from installation.osc import parse_allow

        networks = parse_allow(cfg.osc.allow)  # ValueError, OSC on or off: nothing has changed yet
        old = self.cfg
        later = [f"{sec}.{key}" for sec, keys in RESTART_KEYS.items() for key in keys
                 if getattr(getattr(old, sec), key) != getattr(getattr(cfg, sec), key)]
        if later:
            log.warning("changed settings that take effect after a restart: %s", ", ".join(later))
        if self.osc is not None:
            self.osc.networks = networks
            self.osc.reply_host, self.osc.reply_port = cfg.osc.reply_host, cfg.osc.reply_port
        self.cfg, self.pcfg = cfg, cfg.player
        self.playback.pcfg = cfg.player
        if self.sync is not None:  # its timings are read as they are needed; its socket's settings wait (RESTART_KEYS)
            self.sync.cfg = dataclasses.replace(self.sync.cfg, **{k: getattr(cfg.sync, k) for k in SYNC_LIVE_KEYS})
        if cfg.player.crossfade != old.player.crossfade:
            self.crossfade = cfg.player.crossfade
        self.scanner.every = cfg.player.rescan_every
        if cfg.osc != old.osc:
            if self.heartbeat is not None:
                self.heartbeat.close()
            self.heartbeat = self._heartbeat(cfg.osc)
        if cfg.schedule != old.schedule:
            self.schedule = Schedule.from_config(cfg.schedule)
            self.schedule_changed = True  # applied from the state in force, not as at start-up (that cuts to black)

    def _schedule(self, now: float) -> None:
        """Apply the opening hours when they change (and at start-up). Off: a closing still in force opens."""
        sched = self.schedule
        is_open = True if sched is None else sched.is_open(self.wall())
        changed, self.schedule_changed = self.schedule_changed, False
        if is_open == self.schedule_open and not (changed and is_open is False):  # closed still: black, or a sequence?
            return
        if sched is None and self.schedule_open is None:
            return
        starting, self.schedule_open = self.schedule_open is None, is_open
        nxt = sched.next_change(self.wall()) if sched is not None else None
        until = f" until {nxt:%a %H:%M}" if nxt is not None else ""
        pb = self.playback
        pb.left_behind = None  # the opening hours choose what plays now: a re-render finishing later does not
        if is_open:
            log.info("schedule: open%s", until)
            if starting:
                return
            self.blackout, self.pause_when_black = False, False
            self.canvas.allow_sleep(False)
            pb.set_playing(True, now)
            seq = pb.default_sequence()
            if seq is not None and not same_sequence(seq, pb.seq):
                self.jump(seq, None, now)
            return
        outside = self.playlist.get(sched.outside_sequence) if sched.outside == "sequence" else None
        if outside is not None:
            log.info("schedule: closed%s; playing %r", until, outside.name)
            if changed and self.blackout:  # the black of the closing in force gives way to the sequence
                self.blackout, self.pause_when_black = False, False
                self.canvas.allow_sleep(False)
                pb.set_playing(True, now)
            if not same_sequence(outside, pb.seq):
                self.jump(outside, None, now)
            return
        if sched.outside == "sequence":
            log.warning("schedule: outside_sequence %r is not on the playlist; black instead", sched.outside_sequence)
        log.info("schedule: closed%s; black%s", until, ", the display may sleep" if sched.sleep else "")
        self.blackout, self.pause_when_black = True, True
        if starting:
            self.black_level = 1.0  # closed at start-up: no picture first
        self.canvas.allow_sleep(sched.sleep)

    def _service(self, now: float) -> None:
        """Once a turn: the systemd watchdog (pinged while frames advance, or none are due), the heartbeat, and the
        run record's "still alive"."""
        mono, pb = time.monotonic(), self.playback
        if self.watchdog is not None:
            expecting = pb.seq is not None and pb.playing
            clock = pb.main.clock if pb.main is not None else None
            period = 1.0 / (clock.fps * clock.speed * clock.trim) if clock is not None else 0.0
            self.watchdog.tick(mono, self.stats.frames_shown, expecting, period)
        if self.heartbeat is not None:
            self.heartbeat.tick(mono, lambda: (round(self.stats.uptime(now), 3), self.stats.frames_shown,
                                               self.stats.dropped(pb.streams), pb.seq.name if pb.seq else ""))
        self.record.alive(mono)

    # ----- draw ---------------------------------------------------------------------------------------------------

    def _draw(self, now: float) -> None:
        alpha = fade_alpha(now, self.fade_start, self.fade_seconds) if self.fade_from is not None else 1.0
        flipped = self.canvas.show(self._frame(), self.fade_from, alpha, self.black_level)
        self.last_draw, self.drawn = now, True
        main = self.playback.main
        if main is None or main.ready or self.blackout:
            self.stats.on_screen(flipped)
        if self.frame_log is not None and self.black_level < 1.0:
            self.frame_log.shown(flipped, main, self.playback.seq.name if self.playback.seq else "")

    # ----- status -------------------------------------------------------------------------------------------------

    def status(self, now: float) -> dict:
        """What /status replies (README.md, OSC dictionary)."""
        pb = self.playback
        seq, entry = pb.seq, pb.current_subject()
        shown = pb.main.shown if pb.main is not None else None
        return {
            "sequence": seq.name if seq else None,
            "sequence_index": self.playlist.position(seq.name) if seq else -1,
            "subject": entry.index if entry else None,
            "subject_name": entry.name if entry else None,
            "frame": shown.index if shown else None,
            "transition": pb.clip_subject is not None,
            "playing": pb.playing,
            "fps": round(self.stats.fps(now), 2),
            "video_fps": seq.manifest.fps if seq else None,
            "speed": pb.speed,
            "crossfade": self.crossfade,
            "blackout": self.blackout,
            "dropped": self.stats.dropped(pb.streams),
            "frames_shown": self.stats.frames_shown,
            "decoder_restarts": self.stats.decoder_restarts(pb.streams),
            "uptime_s": round(self.stats.uptime(now), 3),
            "restart_reason": self.record.previous,
            "on_playlist": seq is not None and not pb.delisted,
            "schedule": None if self.schedule is None else ("open" if self.schedule_open else "closed"),
            "commands_received": self.inbox.received,
            "commands_coalesced": self.inbox.coalesced,
            "commands_refused": self.inbox.refused + (self.osc.refused if self.osc is not None else 0)
                                + (self.sync.refused if self.sync is not None else 0),
            "sequences": [s.name for s in self.playlist.sequences],
            "sync": self.sync.status() if self.sync is not None else {"role": "none"},
        }
