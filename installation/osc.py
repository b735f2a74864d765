"""OSC over UDP (python-osc for the wire format): receive, check the sender, validate, enqueue; send replies.

    server = OscServer(cfg.osc, submit=commands.put)   # binds at once; ConfigError-style ValueError if it cannot
    server.port                                          # the bound port (config port 0 picks a free one)
    server.reply(cmd.reply_to, "/pong")
    server.close()

The receiving thread never touches player state: each datagram is checked against the allow-list, parsed (bundles
are unpacked and run at once, time tags ignored) and validated into Commands handed to `submit`. Anything wrong (a
sender not allowed, bytes that are not OSC, an unknown address, a bad argument) costs one log line, rate-limited so
a flood cannot fill the disk, and is otherwise ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import threading
import time
from typing import Any, Callable

import pythonosc
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from installation.commands import Command, CommandError, RateLimitedLog, parse_command

log = logging.getLogger(__name__)


class PythonOscLogs(logging.Filter):
    """python-osc logs to the root logger once per unknown type tag or bundle element, so one datagram could write
    thousands of lines (each with the whole datagram). We log what was wrong ourselves; its own lines are cut short
    and let out at most once a second."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder, self._last = folder, -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.folder):
            return True
        now = time.monotonic()
        if now - self._last < 1.0:
            return False
        self._last = now
        record.msg, record.args = f"python-osc: {record.getMessage()[:120]}", ()
        return True


logging.getLogger().addFilter(PythonOscLogs(os.path.dirname(pythonosc.__file__) + os.sep))


def parse_allow(entries: tuple[str, ...]) -> tuple:
    """`[osc] allow` entries (addresses or networks) as ip_network objects; ValueError names a bad entry."""
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"osc.allow: {entry!r} is not an IP address or network") from None
    return tuple(nets)


def sender_allowed(host: str, networks: tuple) -> bool:
    """True when `networks` is empty or holds the sender's address."""
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


BUNDLE = b"#bundle\0"
MAX_BUNDLE_DEPTH = 8
REPLIES_PER_SECOND, REPLY_BURST = 20.0, 40.0  # per host: answers to a flood of /status stay a trickle
# All replies together: a sender who forges many source hosts (UDP's sender is not verified) makes the player send
# /status (a few hundred bytes) to each, so this caps what such a flood can turn the player into a source of.
ALL_REPLIES_PER_SECOND, ALL_REPLY_BURST = 100.0, 200.0


def bundle_problem(data: bytes, depth: int = 0) -> str | None:
    """Why the OSC bundle `data` is malformed, or None. Checked before python-osc sees it: its parser loops forever
    on an element size that is negative (20 bytes are enough to spin the OSC thread)."""
    if depth > MAX_BUNDLE_DEPTH:
        return f"bundles nested more than {MAX_BUNDLE_DEPTH} deep"
    if len(data) < 16:
        return "bundle shorter than its header"
    i = 16  # "#bundle\0" and the 8-byte time tag
    while i < len(data):
        if i + 4 > len(data):
            return "truncated element size"
        size = int.from_bytes(data[i : i + 4], "big", signed=True)
        i += 4
        if size <= 0 or size % 4 or i + size > len(data):
            return f"bad element size {size}"
        element = data[i : i + size]
        if element.startswith(BUNDLE):
            why = bundle_problem(element, depth + 1)
            if why:
                return why
        elif not element.startswith(b"/"):
            return "an element is neither a message nor a bundle"
        i += size
    return None


def decode_datagram(data: bytes, sender: tuple[str, int], *, received: float,
                    problems: RateLimitedLog) -> list[Command]:
    """The valid commands in one datagram; every problem is logged (rate-limited) and dropped."""
    why = bundle_problem(data) if data.startswith(BUNDLE) else None
    if why:
        problems.warning("OSC from %s:%d: malformed bundle (%s); ignored", sender[0], sender[1], why)
        return []
    try:
        packet = OscPacket(data)
        messages = [timed.message for timed in packet.messages]
    except Exception as e:  # ParseError, but also anything odd bytes may provoke
        problems.warning("OSC from %s:%d: not an OSC packet (%s)", sender[0], sender[1], type(e).__name__)
        return []
    commands = []
    for msg in messages:
        try:
            commands.append(parse_command(msg.address, list(msg.params), reply_to=sender, received=received))
        except CommandError as e:
            problems.warning("OSC from %s:%d: %s; ignored", sender[0], sender[1], e)
        except Exception as e:
            problems.warning("OSC from %s:%d: unreadable message (%s); ignored", sender[0], sender[1],
                             type(e).__name__)
    return commands


def build_message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address=address)
    for a in args:
        builder.add_arg(a)
    return builder.build().dgram


class OscServer:
    """A UDP socket and the thread reading it. `osc` is the [osc] config section."""

    def __init__(self, osc: Any, submit: Callable[[Command], None]):
        self.networks = parse_allow(osc.allow)
        self.reply_host, self.reply_port = osc.reply_host, osc.reply_port
        self.submit = submit
        self.problems = RateLimitedLog(log)  # the receiving thread's
        self.reply_problems = RateLimitedLog(log)  # the main loop's
        family = socket.AF_INET6 if ":" in osc.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((osc.host, osc.port))
        except OSError as e:
            self.sock.close()
            raise OSError(f"osc: cannot listen on {osc.host}:{osc.port} ({e.strerror or e})") from None
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.refused = 0  # datagrams from senders not allowed, and messages refused as malformed or invalid
        self._replies: dict[str, tuple[float, float]] = {}  # destination host -> (tokens, time)
        self._all_replies = (ALL_REPLY_BURST, time.monotonic())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc", daemon=True)
        self._thread.start()

    def handle(self, data: bytes, sender: tuple[str, int], received: float) -> None:
        """One datagram: allow-list, parse, validate, submit."""
        if not sender_allowed(sender[0], self.networks):
            self.refused += 1
            self.problems.warning("OSC from %s:%d refused: sender not in osc.allow", sender[0], sender[1])
            return
        before = self.problems.total
        commands = decode_datagram(data, sender, received=received, problems=self.problems)
        self.refused += self.problems.total - before
        for cmd in commands:
            self.submit(cmd)

    def reply(self, to: tuple[str, int] | None, address: str, *args: Any) -> None:
        """Send a reply to the configured reply host/port, or back to the sender `to`."""
        if to is None and not self.reply_host:
            return
        host = self.reply_host or to[0]
        port = self.reply_port or (to[1] if to else 0)
        if not port:
            return
        if not self._reply_allowed((host, port)):
            self.reply_problems.warning("OSC replies to %s:%d over %g a second; %s dropped", host, port,
                                  REPLIES_PER_SECOND, address)
            return
        try:
            self.sock.sendto(build_message(address, *args), (host, port))
        except (OSError, ValueError, TypeError) as e:
            self.reply_problems.warning("OSC reply %s to %s:%d failed: %s", address, host, port, e)

    def _reply_allowed(self, to: tuple[str, int]) -> bool:
        """A token bucket per destination host (its ports share it: a flood cycling source ports gets no more), and
        one for all replies together (called from the main loop only)."""
        now = time.monotonic()
        if len(self._replies) > 1024:  # many senders (spoofed, perhaps): start afresh rather than grow
            self._replies.clear()
        tokens, last = self._replies.get(to[0], (REPLY_BURST, now))
        tokens = min(REPLY_BURST, tokens + max(0.0, now - last) * REPLIES_PER_SECOND)
        every, since = self._all_replies
        every = min(ALL_REPLY_BURST, every + max(0.0, now - since) * ALL_REPLIES_PER_SECOND)
        allowed = tokens >= 1 and every >= 1
        self._replies[to[0]] = (tokens - allowed, now)
        self._all_replies = (every - allowed, now)
        return allowed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # e.g. ICMP port unreachable after a reply; keep listening
                continue
            try:
                self.handle(data, sender[:2], time.perf_counter())
            except Exception as e:  # never let one datagram end the thread
                self.problems.warning("OSC handler error: %s: %.200s", type(e).__name__, e)
