"""Players in step: the sync protocol (OSC over UDP on its own port) and the socket that carries it.

    link = SyncLink(cfg.sync, clock=time.perf_counter)   # leader: binds host:port; follower: host, a free port
    link.send_state(state, peers)                           # leader, from the main loop
    link.ping(state)                                        # follower, from the main loop
    for kind, msg, t in link.take(): ...                    # the main loop takes what the thread validated

Three messages, each starting with the group name and the sender's session (a random number per run, so a restarted
leader is told from the old one):

    /uncanny/sync/ping   group session seq t1 sequence position orphan
        follower -> leader, every PING_EVERY s: t1 on the follower's clock; what it shows (a restarted leader takes
        it over, so followers that played on alone are not made to jump); orphan: it lost a leader.
    /uncanny/sync/pong   group session seq t1 t2 t3
        leader -> follower at once, from the leader's socket thread: t2 received, t3 sent, on the leader's clock.
    /uncanny/sync/state  group session t sequence video position playing speed blackout crossfade [action...]
        leader -> each follower heard from in the last PEER_TIMEOUT s, every send_every s and at once after a
        command: at leader time t, `video` (a file name: loop.mp4 or a transition clip) of `sequence` is at
        `position` frames (fractional; -1 before its first frame). Then the commands scheduled ahead, 8 values each:
        id at name sequence subject clip_from frame value (see Action), repeated in every state until done, so a
        lost datagram costs nothing.

Times are OSC doubles (float32 would lose milliseconds after a few hours of uptime). The socket thread validates:
a datagram from another address than the configured leader (follower) or of another group is ignored and counted
(`foreign`); one that does not parse or has the wrong arguments is refused and counted (`refused`), with a
rate-limited log line. Nothing here touches the player: the main loop takes the messages (installation/follow.py).
"""

from __future__ import annotations

import collections
import logging
import math
import random
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from installation.commands import RateLimitedLog

log = logging.getLogger(__name__)

PING, PONG, STATE = "/uncanny/sync/ping", "/uncanny/sync/pong", "/uncanny/sync/state"
PING_EVERY = 0.2  # seconds between a follower's round trips (each is a clock sample and a "still here")
PEER_TIMEOUT = 3.0  # seconds a leader keeps sending to a follower it has not heard from
MAX_PEERS = 64  # followers a leader sends to (a wall of twenty screens fits many times over)
MAX_ACTIONS = 16  # scheduled commands in one state message
QUEUE = 256  # validated messages waiting for the main loop; beyond, the oldest go
MAX_TEXT = 200  # longest name in a message
ACTIONS = ("jump", "play", "pause", "blackout", "fade", "speed")


class SyncError(ValueError):
    """A datagram that is not a well-formed sync message."""


@dataclass(frozen=True)
class Action:
    """A command the leader scheduled for leader time `at`, for every player. jump: `sequence`, `subject` ("" = the
    start of the loop), `clip_from` (the transition clip from that subject, "" = none) and the loop `frame` to play on
    from; blackout: value 1/0; fade, speed: value; play, pause: nothing."""

    id: int
    at: float
    name: str
    sequence: str = ""
    subject: str = ""
    clip_from: str = ""
    frame: int = 0
    value: float = 0.0

    def args(self) -> list:
        return [self.id, _d(self.at), self.name, self.sequence, self.subject, self.clip_from, self.frame,
                _d(self.value)]


@dataclass(frozen=True)
class State:
    """The leader's playback at its time `t`."""

    session: int
    t: float
    sequence: str  # "" = nothing plays
    video: str  # file name of the video on screen
    position: float  # frames into `video` at t; -1 before its first frame
    playing: bool
    speed: float
    blackout: bool
    crossfade: float
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Ping:
    session: int
    seq: int
    t1: float
    sequence: str  # what the follower shows ("" = nothing) and where, for a restarted leader to take over
    position: float
    orphan: bool  # the follower lost a leader and plays on alone


@dataclass(frozen=True)
class Pong:
    session: int
    seq: int
    t1: float
    t2: float
    t3: float


def _d(x: float) -> tuple[float, str]:
    return float(x), "d"


def encode(address: str, group: str, session: int, *args: Any) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in (group, session, *args):
        if isinstance(a, tuple):
            b.add_arg(*a)
        elif isinstance(a, bool):
            b.add_arg(int(a), "i")
        else:
            b.add_arg(a)
    return b.build().dgram


def encode_state(group: str, s: State) -> bytes:
    flat = [x for a in s.actions[-MAX_ACTIONS:] for x in a.args()]
    return encode(STATE, group, s.session, _d(s.t), s.sequence, s.video, _d(s.position), s.playing, _d(s.speed),
                  s.blackout, _d(s.crossfade), *flat)


def encode_ping(group: str, p: Ping) -> bytes:
    return encode(PING, group, p.session, p.seq, _d(p.t1), p.sequence, _d(p.position), p.orphan)


def encode_pong(group: str, p: Pong) -> bytes:
    return encode(PONG, group, p.session, p.seq, _d(p.t1), _d(p.t2), _d(p.t3))


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SyncError(f"{what}: expected a number, got {type(v).__name__}")
    return float(v)


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SyncError(f"{what}: expected an integer, got {type(v).__name__}")
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise SyncError(f"{what}: expected a name")
    return v


def _action(v: list) -> Action:
    a = Action(_int(v[0], "action id"), _num(v[1], "action time"), _text(v[2], "action"), _text(v[3], "sequence"),
               _text(v[4], "subject"), _text(v[5], "clip_from"), _int(v[6], "frame"), _num(v[7], "value"))
    if a.name not in ACTIONS:
        raise SyncError(f"unknown action {a.name[:40]!r}")
    if a.frame < 0 or (a.name == "speed" and not 0.05 <= a.value <= 8) or (a.name == "fade" and not 0 <= a.value <= 60):
        raise SyncError(f"action {a.name}: value out of range")
    return a


def decode(data: bytes) -> tuple[str, str, Any]:
    """(group, kind, message) of one datagram: kind "ping" (Ping), "pong" (Pong) or "state" (State). SyncError when
    it is not a well-formed sync message."""
    try:
        msg = OscMessage(data)
        address, v = msg.address, list(msg.params)
    except Exception as e:  # ParseError, and anything odd bytes provoke
        raise SyncError(f"not an OSC message ({type(e).__name__})") from None
    if len(v) < 2:
        raise SyncError(f"{str(address)[:40]}: too few arguments")
    group, session = _text(v[0], "group"), _int(v[1], "session")
    v = v[2:]
    if address == PING and len(v) == 5:
        return group, "ping", Ping(session, _int(v[0], "seq"), _num(v[1], "t1"), _text(v[2], "sequence"),
                                   _num(v[3], "position"), bool(_int(v[4], "orphan")))
    if address == PONG and len(v) == 4:
        return group, "pong", Pong(session, _int(v[0], "seq"), _num(v[1], "t1"), _num(v[2], "t2"), _num(v[3], "t3"))
    if address == STATE and len(v) >= 8 and (len(v) - 8) % 8 == 0 and (len(v) - 8) // 8 <= MAX_ACTIONS:
        speed = _num(v[5], "speed")
        if not 0.05 <= speed <= 8:
            raise SyncError("speed out of range")
        actions = tuple(_action(v[i : i + 8]) for i in range(8, len(v), 8))
        return group, "state", State(session, _num(v[0], "t"), _text(v[1], "sequence"), _text(v[2], "video"),
                                     _num(v[3], "position"), bool(_int(v[4], "playing")), speed,
                                     bool(_int(v[6], "blackout")), _num(v[7], "crossfade"), actions)
    raise SyncError(f"{str(address)[:40]}: not a sync message with {len(v) + 2} arguments")


def new_session() -> int:
    return random.randrange(1, 2**31)


class SyncLink:
    """The sync socket and the thread reading it. `sync` is the [sync] config section; `clock` the player's clock
    (time.perf_counter), read for the round-trip times."""

    def __init__(self, sync: Any, clock: Callable[[], float]):
        self.role, self.group, self.clock = sync.role, sync.group, clock
        self.session = new_session()
        family = socket.AF_INET6 if ":" in sync.host else socket.AF_INET
        self.leader_addr: tuple[str, int] | None = None
        if self.role == "follower":
            try:
                info = socket.getaddrinfo(sync.leader, sync.port, family, socket.SOCK_DGRAM)
            except OSError as e:
                raise OSError(f"sync.leader: cannot resolve {sync.leader!r} ({e})") from None
            self.leader_addr = info[0][4][:2]
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        where = (sync.host, sync.port if self.role == "leader" else 0)
        try:
            self.sock.bind(where)
        except OSError as e:
            self.sock.close()
            raise OSError(f"sync: cannot listen on {where[0]}:{where[1]} ({e.strerror or e})") from None
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.inbox: collections.deque = collections.deque(maxlen=QUEUE)  # (kind, message, received, sender)
        self.peers: dict[tuple[str, int], float] = {}  # leader: follower address -> last heard (clock)
        self.refused = 0  # malformed datagrams
        self.foreign = 0  # well-formed, from another address or group: ignored
        self.problems = RateLimitedLog(log)
        self.wake: Callable[[], None] | None = None  # the player's: a state message should not wait for the timeout
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self._thread.start()

    # ----- the socket thread ------------------------------------------------------------------------------------

    def handle(self, data: bytes, sender: tuple[str, int], received: float) -> None:
        """One datagram: decode, check group and sender, answer a ping at once (leader), queue the rest."""
        try:
            group, kind, msg = decode(data)
        except SyncError as e:
            self.refused += 1
            self.problems.warning("sync from %s:%d refused: %s", sender[0], sender[1], e)
            return
        if group != self.group:
            self.foreign += 1
            self.problems.warning("sync from %s:%d ignored: group %.40r is not ours", sender[0], sender[1], group)
            return
        if self.role == "follower" and (kind == "ping" or not _same_host(sender[0], self.leader_addr[0])):
            self.foreign += 1
            self.problems.warning("sync %s from %s:%d ignored: not our leader", kind, sender[0], sender[1])
            return
        if self.role == "leader":
            if kind != "ping":
                self.foreign += 1
                self.problems.warning("sync %s from %s:%d ignored: another leader in group %r?", kind, sender[0],
                                      sender[1], self.group)
                return
            self._send(encode_pong(self.group, Pong(self.session, msg.seq, msg.t1, received, self.clock())), sender)
            if sender not in self.peers and len(self.peers) >= MAX_PEERS:
                return
            if sender not in self.peers:
                log.info("sync: follower %s:%d joined", sender[0], sender[1])
            self.peers[sender] = received
        self.inbox.append((kind, msg, received, sender))
        if self.wake is not None and kind == "state":
            self.wake()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                self._stop.wait(0.05)  # e.g. ICMP port unreachable from a follower gone; keep listening
                continue
            received = self.clock()
            try:
                self.handle(data, sender[:2], received)
            except Exception as e:  # never let one datagram end the thread
                self.refused += 1
                self.problems.warning("sync handler error: %s: %.200s", type(e).__name__, e)

    # ----- the main loop ----------------------------------------------------------------------------------------

    def take(self) -> list[tuple[str, Any, float, tuple[str, int]]]:
        out = []
        while self.inbox:
            out.append(self.inbox.popleft())
        return out

    def send_state(self, state: State, now: float) -> None:
        """Leader: `state` to every follower heard from in the last PEER_TIMEOUT seconds."""
        data = encode_state(self.group, state)
        for peer, seen in list(self.peers.items()):
            if now - seen > PEER_TIMEOUT:
                self.peers.pop(peer, None)
                log.info("sync: follower %s:%d silent for %g s; no longer sent to", peer[0], peer[1], PEER_TIMEOUT)
            else:
                self._send(data, peer)

    def ping(self, sequence: str, position: float, orphan: bool) -> None:
        """Follower: one round trip's first half (the pong comes back through the thread)."""
        self._seq += 1
        self._send(encode_ping(self.group, Ping(self.session, self._seq, self.clock(), sequence, position, orphan)),
                   self.leader_addr)

    def _send(self, data: bytes, to: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, to)
        except OSError as e:  # a follower or leader gone: the next message tries again
            self.problems.warning("sync to %s:%d failed: %s", to[0], to[1], e)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


def _same_host(a: str, b: str) -> bool:
    a, b = a.split("%")[0], b.split("%")[0]
    return a == b or a.removeprefix("::ffff:") == b.removeprefix("::ffff:")
