"""Players in step, on the main loop's side: a leader schedules every command ahead and says where it is; a follower
locks its clock to the leader's and paces its frames by it.

    sync = Sync(cfg.sync, clock)          # in the Player; sync.open(wake) binds the socket (installation/sync.py)
    sync.intercept(player, cmd, now)      # True when the command is the sync's business (scheduled, or refused)
    sync.takes_jump(player, seq, entry, now)  # leader: schedule the jump for everyone; follower: ignore local jumps
    sync.tick(player, now)                # once a turn: messages, pings, state, corrections, commands now due

Leader: a jump, pause, play, blackout, fade or speed is not made at once but at leader time now + lead_time, by the
leader and every follower alike (a jump's decoders start at once, and each player cuts at that moment with the new
video's clock anchored to it; a pause falls in the middle of the frame due then, so every player stops on it). The
leader makes the commands due before it says its state, and repeats the scheduled ones in every state message until
they are done.
Follower: every turn it works out where the leader's video is now (the last state, moved on by the time since on the
leader's clock, which it knows from round trips: installation/clock.py) and runs its own frame clock a little faster
or slower to close the difference, never seeking. More than JUMP_AFTER seconds off, or on another video (started
late, a missed jump), it jumps once, with the crossfade, to where the leader will be at now + lead_time. OSC and keys
that would change the picture are refused on a follower with a log line, so a wall cannot be split by a stray
command; send them to the leader. With no word from the leader for lost_after seconds it plays on alone on its own
clock; a restarted leader takes over what its followers show (their pings say), so they lock again without a jump.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Any

from installation.clock import JUMP_AFTER, OffsetEstimator, loop_error, pacing_trim
from installation.commands import Command, RateLimitedLog
from installation.playback import by_first_frame, find_subject, same_sequence
from installation.sync import PING_EVERY, Action, State, SyncLink
from installation.timing import subject_at

log = logging.getLogger(__name__)

SYNCED = {"play", "pause", "toggle", "blackout", "fade", "speed"}  # made by every player at the same moment
REFUSED = SYNCED | {"next", "prev", "next_sequence", "prev_sequence", "subject", "sequence"}  # on a follower
ADOPT_WINDOW = 1.0  # seconds a new leader listens for followers playing on alone before it says where it is
KEEP_ACTIONS = 2.0  # seconds after its time a scheduled command stays in the state messages
LOCKED_FRAMES = 1.0  # a follower is "locked" while within this many frames of its leader


def _subject_at_frame(seq: Any, frame: int):
    subjects = by_first_frame(seq)
    return subjects[subject_at([s.first_frame for s in subjects], frame)] if subjects else None


class Sync:
    def __init__(self, cfg: Any, clock: Any):
        self.cfg, self.role, self.clock = cfg, cfg.role, clock
        self.link: SyncLink | None = None
        self.estimator = OffsetEstimator()
        self.pending: list[tuple[float, Action]] = []  # (local time, command) scheduled, not yet made
        self.problems = RateLimitedLog(log)
        self.refused = 0  # commands refused because this player follows
        # leader
        self.actions: collections.deque = collections.deque(maxlen=16)  # recent scheduled commands, sent in states
        self.next_id, self.next_send, self.adopted = 1, 0.0, False
        self.first_turn: float | None = None  # the main loop's first turn: the adoption window starts then
        # follower
        self.state: State | None = None
        self.state_local = -math.inf  # when the last state arrived (our clock)
        self.done: collections.deque = collections.deque(maxlen=64)  # ids of the leader's commands taken
        self.following = False  # a leader is heard from (not lost)
        self.orphan = False  # we had a leader and lost it
        self.locked, self.error, self.trim = False, None, 1.0
        self.last_correction: str | None = None
        self.next_ping, self.resync_after = 0.0, 0.0
        self.made_at = -math.inf  # leader time of the latest scheduled command made: older states do not undo it

    def open(self, wake: Any) -> None:
        self.link = SyncLink(self.cfg, self.clock)
        self.link.wake = wake.set
        if self.role == "leader":
            log.info("sync: leading group %r on %s:%d", self.cfg.group, self.cfg.host, self.link.port)
        else:
            log.info("sync: following the leader at %s:%d, group %r", self.cfg.leader, self.cfg.port, self.cfg.group)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()

    # ----- commands ---------------------------------------------------------------------------------------------

    def intercept(self, player: Any, cmd: Command, now: float) -> bool:
        """Leader: schedule a picture command for everyone (True). Follower: refuse it (True). Else False."""
        if cmd.name not in REFUSED:
            return False
        if self.role == "follower":
            self.refused += 1
            self.problems.warning("%s refused: this player follows the leader at %s (send commands there)", cmd.name,
                                  self.cfg.leader)
            return True
        if cmd.name not in SYNCED:
            return False  # moves: resolved by the player, scheduled in takes_jump
        name, value = cmd.name, cmd.value
        if name == "toggle":
            name = "pause" if player.playback.playing else "play"
        if name == "blackout":
            value = (not player.blackout) if value is None else value
        pb, at = player.playback, None
        if name == "pause" and pb.main is not None and pb.seq is not None:  # everyone stops on the frame due then
            lead = now + self.cfg.lead_time
            pos = pb.main.video_position(lead, pb.seq.manifest.loop_frames)
            value = -1.0 if pos is None else math.floor(pos)
            if pos is not None:  # in the middle of that frame: a follower a few ms off shows the same one then
                clock = pb.main.clock
                mid = clock.time_at(clock.position(lead) + value + 0.5 - pos)
                at = mid if math.isfinite(mid) else None
        self._schedule(Action(0, 0.0, name, value=float(value or 0.0)), now, at)
        return True

    def _schedule(self, action: Action, now: float, at: float | None = None) -> Action:
        at = now + self.cfg.lead_time if at is None else at
        action = Action(self.next_id, at, action.name, action.sequence, action.subject, action.clip_from,
                        action.frame, action.value)
        self.next_id += 1
        self.actions.append(action)
        if action.name != "jump":
            self.pending.append((at, action))
        self.next_send = now  # tell the followers at once
        return action

    def takes_jump(self, player: Any, seq: Any, entry: Any, now: float) -> bool:
        """Leader: plan the jump, start its decoders, cut at now + lead_time, and tell the followers (True).
        Follower: a jump of its own (attract, advance_after, a broken video) is not made while it follows (True)."""
        if self.role == "follower":
            return self.following
        pb = player.playback
        move = pb.plan(seq, entry)
        at = now + self.cfg.lead_time
        pb.preroll(move, now, at=at)
        clip_from = pb.current_subject().name if move.clip_subject is not None else ""
        frame = (entry.final_frame if clip_from else entry.first_frame) if entry is not None else 0
        self._schedule(Action(0, 0.0, "jump", seq.name, entry.name if entry else "", clip_from, frame), now, at)
        return True

    def take_over(self, player: Any, seq: Any, now: float) -> None:
        """The render on screen changed under us (Player.take_over): its new loop goes on from the frame the old one
        will have reached when the jump lands, so nothing steps back. The leader tells every screen; a follower
        (which each rescans on its own) goes to where the leader will be, as after a correction."""
        pb = player.playback
        at = now + self.cfg.lead_time
        if self.role == "follower":
            self._exact_jump(player, seq, self._leader_position(seq, at), at, self.state.speed)
            return
        shown = pb.main.shown if pb.main is not None else None
        ahead = (at - now) * seq.manifest.fps * pb.speed if pb.playing else 0.0
        self._exact_jump(player, seq, (shown.index if shown is not None else 0) + ahead, at, pb.speed)

    def _exact_jump(self, player: Any, seq: Any, position: float, at: float, speed: float) -> None:
        """Jump to `position` (fractional frame of the loop of `seq`) so that it is on screen at `at`: the loop starts
        at its whole frame a fraction of a frame earlier."""
        n = max(1, seq.manifest.loop_frames)
        frame = int(math.floor(position)) % n
        entry = _subject_at_frame(seq, frame)
        exact = at - (position - math.floor(position)) / (seq.manifest.fps * speed)
        player.playback.preroll(player.playback.plan_exact(seq, entry, frame), self.clock(), at=exact)
        player.last_move = self.clock()
        if self.role == "leader":
            self._schedule(Action(0, 0.0, "jump", seq.name, entry.name if entry else "", "", frame, 1.0), exact, exact)

    def _make(self, player: Any, action: Action, at: float) -> None:
        """A scheduled command whose time has come (`at`, our clock)."""
        pb = player.playback
        self.made_at = max(self.made_at, action.at)
        if action.name in ("play", "pause"):
            pb.set_playing(action.name == "play", at, hold=False)
            if action.name == "pause" and action.value >= 0 and pb.main is not None and pb.seq is not None:
                self._hold(player, int(action.value), at)
        elif action.name == "blackout":
            player.blackout = bool(action.value)
        elif action.name == "fade":
            player.crossfade = action.value
        elif action.name == "speed":
            pb.set_speed(action.value, at)

    def _hold(self, player: Any, frame: int, at: float) -> None:
        """A synced pause: stop on the leader's `frame`, whatever our last thousandths of a second. A pause that came
        too late (after that frame's time: a state delayed beyond lead_time) goes back to it."""
        pb = player.playback
        n, main = pb.seq.manifest.loop_frames, pb.main
        mine = main.video_position(at, n)
        if mine is None:
            return
        main.clock.hold_at(main.clock.position(at) + loop_error(frame + 0.5, mine, n))
        if main.loop and main.shown is not None and loop_error(frame, main.shown.index, n) < 0:
            log.info("sync: the pause came after frame %d was shown here; going back to it", frame)
            entry = _subject_at_frame(pb.seq, frame)
            pb.preroll(pb.plan_exact(pb.seq, entry, frame), self.clock(), at=self.clock())
            self.last_correction = f"back to the paused frame {frame}"

    # ----- once a turn ------------------------------------------------------------------------------------------

    def tick(self, player: Any, now: float) -> None:
        if self.link is None:
            return
        if self.role == "leader":
            self._make_due(player, now)  # first: a state sent at or after a command's time must show it made
            self._lead(player, now)
        else:
            self._follow(player, now)
            self._make_due(player, now)

    def _make_due(self, player: Any, now: float) -> None:
        due = [(t, a) for t, a in self.pending if t <= now]
        if due:
            self.pending = [(t, a) for t, a in self.pending if t > now]
            for t, a in due:
                self._make(player, a, t)

    def _lead(self, player: Any, now: float) -> None:
        if self.first_turn is None:
            self.first_turn = now  # not when the socket opened: a slow first media scan may come between
        young = now - self.first_turn < ADOPT_WINDOW and not self.adopted
        for kind, ping, received, sender in self.link.take():
            if young and ping.orphan and ping.sequence and ping.position >= 0:
                seq = player.playlist.get(ping.sequence)
                if seq is not None:  # a restart: carry on where the followers are, so that they need not jump
                    self.adopted = True
                    self.actions.clear()  # our own start (a jump to the default sequence) was never sent: keep it so
                    at = now + self.cfg.lead_time
                    log.info("sync: followers play on alone (%s:%d shows %r); taking over from there", sender[0],
                             sender[1], seq.name)
                    self._exact_jump(player, seq, ping.position + (at - received) * seq.manifest.fps, at, 1.0)
        if young and not self.adopted:
            return  # a restarted leader first listens for followers playing on alone
        if now >= self.next_send:
            self.next_send = now + self.cfg.send_every
            while self.actions and self.actions[0].at < now - KEEP_ACTIONS:
                self.actions.popleft()
            self.link.send_state(self._state(player, now), now)

    def _state(self, player: Any, now: float) -> State:
        pb = player.playback
        seq, main = pb.seq, pb.main
        pos = -1.0
        if seq is not None and main is not None:
            p = main.video_position(now, seq.manifest.loop_frames)
            pos = -1.0 if p is None else p
        return State(self.link.session, now, seq.name if seq else "", main.path.name if main else "", pos, pb.playing,
                     pb.speed, player.blackout, player.crossfade, tuple(self.actions))

    # ----- follower ---------------------------------------------------------------------------------------------

    def _follow(self, player: Any, now: float) -> None:
        for kind, msg, received, _sender in self.link.take():
            if kind == "pong":
                if msg.session == (self.state.session if self.state else msg.session):
                    self.estimator.add(msg.t1, msg.t2, msg.t3, received)
            elif kind == "state":
                self._take_state(player, msg, received)
        if now >= self.next_ping:
            self.next_ping = now + PING_EVERY
            pb = player.playback
            pos = pb.main.video_position(now, pb.seq.manifest.loop_frames) if pb.main and pb.seq else None
            self.link.ping(pb.seq.name if pb.seq else "", -1.0 if pos is None else pos, self.orphan)
        if self.following and now - self.state_local > self.cfg.lost_after:
            log.warning("sync: no word from the leader for %.1f s; playing on alone, on our own clock",
                        now - self.state_local)
            self.following, self.locked, self.orphan, self.error = False, False, True, None
            self._set_trim(player, now, 1.0)
        if self.following and self.estimator.ready:
            self._correct(player, now)

    def _take_state(self, player: Any, s: State, received: float) -> None:
        if self.state is None or s.session != self.state.session:
            log.info("sync: leader %s (session %d)", "back" if self.orphan else "found", s.session)
            if self.state is not None:
                self.estimator.reset()  # another process: another clock
                self.pending = []
                self.done.clear()
                self.made_at = -math.inf
        if not self.following:
            self.following = True
        self.state, self.state_local = s, received
        if not self.estimator.ready:
            return  # the commands are repeated in the next states: taken once the leader's clock is known
        offset = self.estimator.offset
        for a in s.actions:
            if a.id in self.done:
                continue
            self.done.append(a.id)
            at = a.at - offset
            if a.name != "jump":
                self.pending.append((at, a))
            else:
                self._jump(player, a, at)

    def _jump(self, player: Any, a: Action, at: float) -> None:
        pb = player.playback
        seq = player.playlist.get(a.sequence)
        if seq is None:
            self.problems.warning("sync: the leader jumps to sequence %r, which is not on this player's playlist",
                                  a.sequence)
            return
        if a.value and self._there(player, seq, a.frame, at):  # a restarted leader took over where we are
            self.last_correction = f"none: the restarted leader took over at frame {a.frame}"
            return
        entry = find_subject(seq, a.subject) if a.subject else None
        pb.preroll(pb.plan_exact(seq, entry, a.frame, a.clip_from), self.clock(), at=at)
        player.last_move = self.clock()
        self.resync_after = at + 1.0

    def _there(self, player: Any, seq: Any, frame: int, at: float) -> bool:
        """Will our loop of `seq` be within JUMP_AFTER of `frame` at `at`?"""
        pb = player.playback
        if not same_sequence(pb.seq, seq) or pb.main is None or not pb.main.loop or pb.incoming is not None:
            return False
        n = seq.manifest.loop_frames
        mine = pb.main.video_position(at, n)
        return mine is not None and abs(loop_error(frame, mine, n)) / seq.manifest.fps < JUMP_AFTER

    def _leader_position(self, seq: Any, now: float) -> float:
        s = self.state
        if not s.playing:
            return s.position
        return s.position + (now + self.estimator.offset - s.t) * seq.manifest.fps * s.speed

    def _correct(self, player: Any, now: float) -> None:
        """Follow the leader's state: settings, the video, and the pacing."""
        s, pb = self.state, player.playback
        pending = {a.name for _, a in self.pending}
        if s.t <= self.made_at:
            pending = set(SYNCED)  # this state was sent before a command we have made: its settings are stale
        if pb.playing != s.playing and not pending & {"play", "pause"}:
            pb.set_playing(s.playing, now, hold=False)
        if player.blackout != s.blackout and "blackout" not in pending:
            player.blackout = s.blackout
        if player.crossfade != s.crossfade and "fade" not in pending:
            player.crossfade = s.crossfade
        if pb.speed != s.speed and "speed" not in pending:
            pb.set_speed(s.speed, now)
        if pb.incoming is not None or now < self.resync_after or not s.sequence or s.position < 0 or not s.playing:
            return  # a jump on its way, or the leader has nothing on screen yet
        seq = player.playlist.get(s.sequence)
        if seq is None:
            self.problems.warning("sync: the leader plays %r, which is not on this player's playlist", s.sequence)
            return
        n, fps = seq.manifest.loop_frames, seq.manifest.fps
        leader = self._leader_position(seq, now)
        main = pb.main
        same = same_sequence(pb.seq, seq) and main is not None and main.path.name == s.video
        if not same:
            # our transition clip ends into the leader's loop by itself, on the clip's clock (playback.py)
            ours_next = pb.after_clip is not None and same_sequence(pb.seq, seq) and \
                pb.after_clip.path.name == s.video
            if s.video == seq.manifest.loop.name and not ours_next:  # not during the leader's clip: it ends soon
                self._resync(player, seq, now, f"joining the leader: {seq.name!r} frame {int(leader) % n}")
            return
        mine = main.video_position(now, n)
        if mine is None:
            return
        frames = loop_error(leader % n, mine, n) if main.loop else leader - mine
        self.error = frames / (fps * s.speed)  # seconds: + we are behind
        if abs(self.error) > JUMP_AFTER and main.loop:
            self._resync(player, seq, now, f"{self.error * 1000:+.0f} ms off the leader; jumping to frame "
                                           f"{int(leader) % n}")
            return
        self.locked = abs(frames) < LOCKED_FRAMES
        if pb.playing:
            self._set_trim(player, now, pacing_trim(self.error))

    def _resync(self, player: Any, seq: Any, now: float, why: str) -> None:
        log.info("sync: %s", why)
        at = now + self.cfg.lead_time
        speed = self.state.speed
        self._exact_jump(player, seq, self._leader_position(seq, at), at, speed)
        self.last_correction, self.locked = f"jump ({why})", False
        self.resync_after = at + 1.0

    def _set_trim(self, player: Any, now: float, trim: float) -> None:
        main = player.playback.main
        if main is not None and main.clock.started and main.clock.trim != trim:
            main.clock.set_trim(now, trim)
            if trim != 1.0:
                self.last_correction = f"pace {(trim - 1) * 100:+.2f} %"
        self.trim = trim

    def next_due(self) -> float:
        """When the next scheduled command is due (our clock; inf when none), for the main loop's wait."""
        return min((t for t, _ in self.pending), default=math.inf)

    # ----- status -----------------------------------------------------------------------------------------------

    def status(self) -> dict:
        """`sync` in /status."""
        out: dict[str, Any] = {"role": self.role}
        if self.role == "leader":
            out["followers"] = len(self.link.peers) if self.link else 0
        else:
            out.update(leader=self.cfg.leader, following=self.following, locked=self.following and self.locked,
                       offset_ms=None if self.error is None or not self.following else round(self.error * 1000, 2),
                       clock_offset_ms=round(self.estimator.offset * 1000, 3) if self.estimator.ready else None,
                       round_trip_ms=round(self.estimator.delay * 1000, 3) if self.estimator.ready else None,
                       last_correction=self.last_correction, refused_commands=self.refused)
        if self.link is not None:
            out.update(packets_refused=self.link.refused, packets_ignored=self.link.foreign)
        return out
