"""What plays: the sequence on screen, its stream, the transition clip and the loop it continues into.

    playback = Playback(player_cfg, playlist, prefetcher, stats)
    move = playback.plan(seq, entry)        # the streams of a jump (may raise: then nothing changed)
    playback.cut(move, now)                 # they replace what played; the old streams close after the next flip
    changed, then = playback.update(now)    # the frame due now; `then` is what the player must do next

A jump plays the transition clip from the subject on screen to the target when the render has one, and then the loop
from the frame where the clip ends (the target's finished face, final_frame), on the clock, with no cut; otherwise it
goes straight to the target's first frame in the loop. A loop wraps without a gap (the decoder's job) and counts its
passes, so that `advance_after` can move on to the next sequence. A broken video is reported and skipped.

This is the state machine the player's main loop drives; it never touches the screen. When a change needs the
picture (a crossfade from what was on screen), `update` says so and the player takes the still and fades: the player
owns the canvas and the fades, this module owns which video is playing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from installation.playlist import Playlist, PlaylistEntry
from installation.prefetch import PosterPrefetcher
from installation.stats import Stats
from installation.stream import PosterCache, Stream
from installation.timing import Placement, place, subject_at

log = logging.getLogger(__name__)

PREROLL_FRAMES = 6  # decoded frames a pre-rolled jump waits for (a quarter second at 24 fps): no gap after the cut
PREROLL_WAIT = 2.0  # seconds a pre-rolled jump waits for them before it is cut to anyway
FADE = "fade"  # update(): the clip broke and the loop is on instead; crossfade to it from the still on screen
BLACK = "black"  # update(): nothing is playable; take the still, stop(), and fade to black
RESCAN = "rescan"  # update(): the loop's video is gone (moved, re-rendered?): scan the media now; the picture holds
RESCAN_WAIT = 5.0  # seconds the picture holds for that scan before the video counts as broken


@dataclass(frozen=True)
class TakeOver:
    """update(): the render on screen was rewritten or moved (its loop video is another now): its new loop goes on
    (Player.take_over)."""

    seq: PlaylistEntry


def find_subject(seq: PlaylistEntry, key: int | str):
    """The SubjectEntry of `seq` by manifest index or name; a string of digits that is not a name is an index."""
    m = seq.manifest
    entry = m.subject(key)
    if entry is None and isinstance(key, str) and key.isascii() and key.isdigit():  # not "²": int() refuses it
        entry = m.subject(int(key))
    return entry


def same_sequence(a: PlaylistEntry | None, b: PlaylistEntry | None) -> bool:
    """By name: every media rescan makes new playlist entries, so the one on screen is rarely the playlist's object
    (and `rescanned` keeps it the newest entry of its name)."""
    return a is not None and b is not None and a.name == b.name


def _exists(path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def by_first_frame(seq: PlaylistEntry) -> list:
    """The subjects of `seq` in the order they play."""
    return sorted(seq.manifest.subjects, key=lambda s: s.first_frame)


@dataclass(frozen=True)
class Move:
    """The streams of a jump, made before anything changes, so that a jump that cannot start keeps the picture."""

    seq: PlaylistEntry
    entry: Any  # target SubjectEntry, or None for the start of the loop
    main: Stream  # the transition clip, or the loop at the target
    after_clip: Stream | None  # the loop to continue with when the clip ends
    clip_subject: Any  # the target SubjectEntry while a clip plays, else None


class Playback:
    def __init__(self, pcfg: Any, playlist: Playlist, prefetcher: PosterPrefetcher, stats: Stats):
        self.pcfg, self.playlist, self.prefetcher, self.stats = pcfg, playlist, prefetcher, stats
        self.screen_size: tuple[int, int] | None = None  # (w, h), set by the player once the display is open
        self.seq: PlaylistEntry | None = None  # sequence of the main stream: its newest playlist entry
        self.screen_seq: PlaylistEntry | None = None  # the entry (version of that render) the video on screen is from
        self.main: Stream | None = None  # the stream on screen
        self.after_clip: Stream | None = None  # loop stream to continue with when a transition clip ends
        self.clip_subject = None  # target SubjectEntry while a transition clip plays
        self.jump_subject = None  # target SubjectEntry of the last jump (reported until its first frame shows)
        self.passes = 0  # loop passes of the current sequence (for advance_after)
        self.wraps_seen = 0  # of them, those made by the loop stream on screen (a jump within a sequence restarts it)
        self.superseded: Stream | None = None  # a loop stream that failed and whose TakeOver is asked for
        self.vanished: tuple[Stream, float] | None = None  # a loop stream whose video went, and when (RESCAN)
        self.delisted = False  # the sequence on screen left the playlist: it goes at its next loop point
        # a sequence that left the screen only because it left the playlist (a render running again in place): it
        # comes back when a scan lists it again, unless a command has chosen what plays since
        self.left_behind: str | None = None
        self.playing, self.speed = True, 1.0
        self.retired: list[Stream] = []  # streams to close once the next frame is on screen
        self.incoming: Move | None = None  # a pre-rolled jump: its decoders run, the picture plays on until ready
        self.incoming_since = 0.0
        self.incoming_at: float | None = None  # a synced jump: cut at exactly this time (installation/sync.py)

    @property
    def streams(self) -> list[Stream]:
        """The open streams: the one on screen and the loop waiting for a clip to end."""
        return [s for s in (self.main, self.after_clip) if s is not None]

    @property
    def settled(self) -> bool:
        """One stream playing and no other starting: the time for background work (poster prefetch)."""
        return self.seq is not None and self.main is not None and self.main.primed and self.after_clip is None

    # ----- where we are -------------------------------------------------------------------------------------------

    def current_subject(self):
        """The SubjectEntry on screen (the target while a transition clip plays), or None."""
        if self.clip_subject is not None:
            return self.clip_subject
        if self.seq is None or self.main is None or not self.seq.manifest.subjects:
            return None
        if self.main.shown is None:  # a jump is on its way: report where it goes
            return self.jump_subject
        # the frame on screen is of the video playing, which until its new render takes over (`update`) is the one
        # an older manifest describes
        shown = self.screen_seq if same_sequence(self.screen_seq, self.seq) else self.seq
        subjects = by_first_frame(shown)
        if not subjects:
            return None
        return subjects[subject_at([s.first_frame for s in subjects], self.main.shown.index)]

    def subject_step(self, delta: int) -> tuple[PlaylistEntry, Any] | None:
        """(sequence, subject) `delta` subjects away from the one on screen; past either end of the sequence, the first
        (or last) subject of the neighbouring sequence. None when there is nowhere to go."""
        if self.seq is None:
            return None
        subjects = by_first_frame(self.seq)
        cur = self.current_subject()
        names = [s.name for s in subjects]  # by name: `cur` may be from an older version of the render
        i = names.index(cur.name) + delta if cur is not None and cur.name in names else 0
        if 0 <= i < len(subjects):
            return self.seq, subjects[i]
        seq = self.playlist.step(self.seq.name, 1 if delta > 0 else -1)
        if seq is None:
            return None
        subs = by_first_frame(seq)
        return seq, (subs[0] if delta > 0 else subs[-1]) if subs else None

    def sequence_step(self, count: int, sign: int) -> PlaylistEntry | None:
        """The playable sequence `count` steps in direction `sign` (+1/-1) from the one on screen; a lone sequence
        steps onto itself."""
        seq, target = self.seq, None
        for _ in range(min(count, len(self.playlist.sequences))):
            seq = self.playlist.step(seq.name if seq else None, sign)
            if seq is None:
                break
            target = seq
        return target

    def default_sequence(self) -> PlaylistEntry | None:
        """`default_sequence` when it is playable, else the first playable one."""
        name = self.pcfg.default_sequence
        seq = self.playlist.get(name) if name else None
        if seq is not None and self.playlist.playable(seq.name):
            return seq
        return self.playlist.step(None, 1)

    def rescanned(self, changed: list[str]) -> PlaylistEntry | str | None:
        """After a media scan: a rewritten sequence on screen takes effect at its next jump or loop (`update`); one
        that left the playlist (bad manifest, folder gone) plays to its next loop point, or goes now if its loop video
        is gone. Returns what the player must do now (as `update`)."""
        if self.seq is None:
            return None
        back = self._returning()
        if back is not None:
            return back
        listed = self.playlist.get(self.seq.name)
        if listed is not None:
            if self.delisted:
                log.info("sequence %r: back on the playlist; it plays on", self.seq.name)
            self.delisted = False
            # the newest entry of its name, also when it comes back rewritten (a render deletes the manifest first,
            # so a scan in between saw it leave, and `changed` does not list it)
            if listed.stamp != self.seq.stamp:
                self.seq = listed
                s = self.main if self.after_clip is None else self.after_clip
                if s is not None and s.loop and s.tag != listed.stamp and not _exists(s.path) and self.incoming is None:
                    # its video was deleted (a visitor forgotten, a folder renamed): the new render goes on now,
                    # not at the loop point
                    return TakeOver(listed)
            return None
        if not self.delisted:
            self.delisted = True
            if not _exists(self.seq.manifest.loop):
                log.warning("sequence %r: off the playlist and its video is gone; leaving it now", self.seq.name)
                return self._leave()
            log.info("sequence %r: off the playlist; it leaves the screen at its next loop point", self.seq.name)
        return None

    def _leave(self) -> PlaylistEntry | str:
        """Where to go from a sequence that left the playlist: the default sequence, else black. It is remembered,
        to come back to (`_returning`)."""
        self.left_behind = self.seq.name if self.seq is not None else None
        nxt = self.default_sequence()
        return nxt if nxt is not None else BLACK

    def _returning(self) -> PlaylistEntry | None:
        """The sequence left behind (`_leave`), once it is playable again and something else is on screen."""
        seq = self.playlist.get(self.left_behind) if self.left_behind is not None else None
        if seq is None or not self.playlist.playable(seq.name):
            return None
        self.left_behind = None
        if same_sequence(seq, self.seq):
            return None
        log.info("sequence %r: back on the playlist; it returns to the screen", seq.name)
        return seq

    # ----- jumps --------------------------------------------------------------------------------------------------

    def placement(self, seq: PlaylistEntry) -> Placement:
        return place(seq.manifest.size, self.screen_size, self.pcfg.fit, self.pcfg.region)

    def _stream(self, seq: PlaylistEntry, path, start: int, loop: bool, label: str, expected_frames: int = 0):
        m, p = seq.manifest, self.placement(seq)
        return Stream(path, fps=m.fps, start=start, loop=loop, src_size=m.size, placement=p,
                      buffer_frames=self.pcfg.buffer_frames, speed=self.speed, expected_frames=expected_frames,
                      poster=self.prefetcher.cache.get(PosterCache.key(path, start, p, seq.stamp)),
                      playing=self.playing, label=label, start_now=False, tag=seq.stamp)

    def _loop_stream(self, seq: PlaylistEntry, start: int) -> Stream:
        return self._stream(seq, seq.manifest.loop, start, True, seq.name, seq.manifest.loop_frames)

    def plan(self, seq: PlaylistEntry, entry) -> Move:
        """The streams for a jump to `entry` (a SubjectEntry of `seq`; None = the start of the loop), through a
        transition clip when the manifest has one from the subject on screen. Changes nothing; may raise."""
        current = self.current_subject() if same_sequence(seq, self.seq) else None
        clip = None
        if current is not None and entry is not None and current.name != entry.name:
            clip = seq.manifest.transition(current.name, entry.name)
        if clip is not None and clip.file.is_file():
            main = self._stream(seq, clip.file, 0, False, f"{seq.name} {clip.source}->{clip.target}", clip.frames)
            # the clip ends on the target's finished face, which the loop shows at final_frame: carry on from there
            return Move(seq, entry, main, self._loop_stream(seq, entry.final_frame), entry)
        start = entry.first_frame if entry is not None else 0
        return Move(seq, entry, self._loop_stream(seq, start), None, None)

    def plan_exact(self, seq: PlaylistEntry, entry, frame: int, clip_from: str = "") -> Move:
        """A jump described by a sync leader: the loop of `seq` at `frame`, or (`clip_from` a subject name) the
        transition clip from it to `entry` and then the loop at `frame`. A clip that is missing here is left out."""
        clip = seq.manifest.transition(clip_from, entry.name) if clip_from and entry is not None else None
        if clip is not None and clip.file.is_file():
            main = self._stream(seq, clip.file, 0, False, f"{seq.name} {clip.source}->{clip.target}", clip.frames)
            return Move(seq, entry, main, self._loop_stream(seq, frame), entry)
        return Move(seq, entry, self._loop_stream(seq, frame % max(1, seq.manifest.loop_frames)), None, None)

    def preroll(self, move: Move, now: float, at: float | None = None) -> None:
        """Start `move`'s decoders (after the next flip) while the picture plays on; `incoming_ready` says when to
        cut to it (at `at` exactly when given: a synced jump). A pre-roll still waiting is replaced."""
        if self.incoming is not None and self.incoming is not move:
            self._retire_move(self.incoming)
        self.incoming, self.incoming_since, self.incoming_at = move, now, at

    def incoming_ready(self, now: float) -> Move | None:
        """The pre-rolled move, once PREROLL_FRAMES are decoded (a new decoder then keeps ahead of the screen from
        its first frame), or it ended or failed, or after PREROLL_WAIT; else None."""
        m = self.incoming
        if m is None:
            return None
        if self.incoming_at is not None:  # synced: every player cuts at the same moment, decoded or not
            if now < self.incoming_at:
                return None
            self.incoming = None
            m.main.start_at = self.incoming_at
            return m
        dec = m.main.decoder
        full = min(PREROLL_FRAMES, dec.queue.maxsize)
        if dec.queue.qsize() >= full or (dec.begun and not dec.alive) or now - self.incoming_since >= PREROLL_WAIT:
            self.incoming = None
            return m
        return None

    def _retire_move(self, move: Move) -> None:
        self._retire(move.main)
        self._retire(move.after_clip)

    def cut(self, move: Move, now: float) -> None:
        """Put the streams of `move` on; the old ones are retired (closed after the next flip). A target shown from
        its poster is a new frame on screen now (its decoded twin will not count again)."""
        if self.incoming is not None and self.incoming is not move:  # a jump overrides a pre-roll still waiting
            self._retire_move(self.incoming)
            self.incoming = None
        self._drop()
        self.delisted = False
        self.main, self.after_clip, self.clip_subject = move.main, move.after_clip, move.clip_subject
        self.wraps_seen = 0
        if not same_sequence(move.seq, self.seq):
            self.passes = 0
        entry = move.entry
        if entry is None and move.seq.manifest.subjects:
            entry = min(move.seq.manifest.subjects, key=lambda e: e.first_frame)
        self.seq, self.screen_seq, self.jump_subject = move.seq, move.seq, entry
        if move.main.shown is not None:
            self.stats.frame_shown(now)

    def stop(self) -> None:
        """Nothing plays: every stream is retired and no sequence is on screen (until the next jump)."""
        self._drop()
        self.seq, self.screen_seq, self.delisted = None, None, False

    def _drop(self) -> None:
        self._retire(self.main)
        self._retire(self.after_clip)
        self.main = self.after_clip = self.clip_subject = None

    def _retire(self, s: Stream | None) -> None:
        if s is not None:
            self.stats.retired(s)
            self.retired.append(s)

    def _clip_done(self) -> None:
        """Cut from the transition clip to the loop it leads into."""
        clip = self.main
        self.main, self.after_clip, self.clip_subject = self.after_clip, None, None
        self.wraps_seen = 0
        self._retire(clip)

    # ----- playing ------------------------------------------------------------------------------------------------

    def set_playing(self, playing: bool, now: float, hold: bool = True) -> None:
        self.playing = playing
        incoming = [self.incoming.main, self.incoming.after_clip] if self.incoming is not None else []
        for s in self.streams + [s for s in incoming if s is not None]:
            s.resume(now) if playing else s.pause(now, hold)

    def set_speed(self, speed: float, now: float) -> None:
        self.speed = speed
        for s in self.streams:
            s.clock.set_speed(now, speed)

    def update(self, now: float) -> tuple[bool, PlaylistEntry | str | None]:
        """Take the frame due at `now`. Returns (whether the picture changed, what the player must do next): None; a
        PlaylistEntry to jump to (advance_after, or the next sequence after a broken one); FADE, BLACK, RESCAN or a
        TakeOver."""
        ended = False
        while (s := self.main) is not None:
            changed = s.update(now)
            self.prefetcher.collect(s, self.seq)
            if s.failed:
                if s.loop and self.seq is not None:
                    return self._loop_failed(s, now)
                return True, self._failed(s)
            if s.ended:  # transition clip done: cut to the loop at the target subject, on the clock
                self._clip_done()
                if self.main is not None and not self.main.primed:
                    # the loop starts when the clip's last frame ends on the clip's clock, not when this turn
                    # noticed: players in step (installation/follow.py) change over on the same frame
                    end = s.clock.time_at(s.shown.pos + 1) if s.shown is not None else math.inf
                    self.main.start_at = end if math.isfinite(end) else None
                ended = True
                continue
            then = None
            if changed and s.loop and s.wraps > self.wraps_seen:
                self.passes += s.wraps - self.wraps_seen
                self.wraps_seen = s.wraps
                if self.delisted:
                    log.info("sequence %r: at its loop point, off the playlist: leaving it", self.seq.name)
                    then = self._leave()
                elif self.pcfg.advance_after and self.passes >= self.pcfg.advance_after:
                    nxt = self.playlist.step(self.seq.name, 1)
                    if nxt is not None and not same_sequence(nxt, self.seq):
                        then = nxt
                if then is None and s.tag != self.seq.stamp and self.incoming is None:
                    then = TakeOver(self.seq)  # re-rendered, renamed, a live show's new loop (a jump under way: it)
            if changed:
                self.stats.frame_shown(now)
            return changed or ended, then
        return ended, None

    def _loop_failed(self, s: Stream, now: float) -> tuple[bool, PlaylistEntry | TakeOver | str | None]:
        """A loop stream that failed. Its render may have moved or been rewritten under it (a folder renamed, a
        render run again): then its new loop takes over, once a media scan has seen it; the picture holds meanwhile.
        Otherwise the video is broken (`_failed`)."""
        if self.incoming is not None:
            return False, None  # a jump under way replaces it
        if s.tag != self.seq.stamp and _exists(self.seq.manifest.loop):
            if self.superseded is s:
                return False, None  # asked for already (a synced jump takes a moment)
            self.superseded = s
            log.info("sequence %r: %s", self.seq.name, s.failed)
            return True, TakeOver(self.seq)
        if not _exists(s.path):
            if self.vanished is None or self.vanished[0] is not s:
                self.vanished = (s, now)
                log.info("sequence %r: %s is gone; looking for it in the media folders", self.seq.name, s.path)
                return False, RESCAN
            if now - self.vanished[1] < RESCAN_WAIT:
                return False, None
        return True, self._failed(s)

    def _failed(self, s: Stream) -> PlaylistEntry | str | None:
        log.warning("skipping %s: %s", s.label or s.path, s.failed)
        if self.after_clip is not None:  # a broken transition clip: go straight to the loop
            self._clip_done()
            return FADE
        name = self.seq.name if self.seq else None
        self.playlist.mark_failed(name)
        nxt = self.playlist.step(name, 1)
        if nxt is None:
            log.warning("nothing playable; showing black until a render appears")
            return BLACK
        return nxt

    # ----- around the flip ----------------------------------------------------------------------------------------

    def close_retired(self) -> None:
        for s in self.retired:
            s.close()
        self.retired.clear()

    def begin(self) -> None:
        """Start the decoders of new streams (after a flip: a thread start waits)."""
        incoming = [self.incoming.main, self.incoming.after_clip] if self.incoming is not None else []
        for s in self.streams + [s for s in incoming if s is not None]:
            s.decoder.begin()

    def close(self) -> None:
        if self.incoming is not None:
            self._retire_move(self.incoming)
            self.incoming = None
        for s in self.streams:
            s.close()
        self.main = self.after_clip = None
