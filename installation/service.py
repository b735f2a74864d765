"""Running unattended for months: signals, the systemd watchdog and unit, the heartbeat, and the record of each run.

    install_signals(player.request)          # SIGTERM/SIGINT -> "stop", SIGHUP -> "reload", SIGUSR1 -> "status"
    watchdog = Watchdog.from_env()            # sd_notify over $NOTIFY_SOCKET; None when not run by systemd
    watchdog.tick(now, frames_shown, expecting=True)
    record = RunRecord(path); record.begin()  # record.previous: why the last run ended; record.end("SIGTERM")
    heartbeat = Heartbeat("10.0.0.5", 9001, every=1.0); heartbeat.tick(now, lambda: (uptime, frames, ...))
    print(unit_text(root, python, ["play", "media"]))

Nothing here changes player state: a signal handler only names a request, which the main loop acts on at its next
turn (within one keyboard poll, 20 ms). The watchdog speaks systemd's notify protocol itself (one datagram on a
Unix socket), so no new dependency is needed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = {"SIGTERM": "stop", "SIGINT": "stop", "SIGHUP": "reload", "SIGUSR1": "status"}


def install_signals(request: Callable[[str, str], None]) -> None:
    """Route the player's signals to `request(what, signal name)`. Main thread only (Python's rule)."""
    for name, what in SIGNALS.items():
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, lambda signum, frame, what=what: request(what, signal.Signals(signum).name))


class Watchdog:
    """systemd's service notifications: READY=1 once playing, WATCHDOG=1 every half watchdog interval while the
    picture moves (or is meant to stand still), STOPPING=1 on the way out. A main loop that hangs, or a picture that
    should move and does not, stops the pings, and systemd restarts the player (WatchdogSec in the unit)."""

    def __init__(self, address: str, every: float | None):
        self.address = "\0" + address[1:] if address.startswith("@") else address  # @: the abstract namespace
        self.every = every  # seconds between pings; None: notifications only, no watchdog
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # never wait: a notify socket whose queue is full (net.unix.max_dgram_qlen datagrams, 10 to 512 by the
        # machine; a stalled systemd) would block the main loop in sendto, the picture with it. A dropped ping costs
        # nothing the next can't mend.
        self.sock.setblocking(False)
        self.last_ping = -float("inf")
        self.frames_seen, self.moved_at = -1, -float("inf")  # frames shown at the last tick; when that count last grew
        self.pings = 0
        self._warned = False

    @classmethod
    def from_env(cls, env: dict | None = None) -> Watchdog | None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        every = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            every = int(usec) / 2e6
        return cls(address, every)

    def notify(self, state: str) -> bool:
        try:
            self.sock.sendto(state.encode(), self.address)
            return True
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("systemd notification %s failed: %s", state.split("=")[0], e)
            return False

    def tick(self, now: float, frames_shown: int, expecting: bool, frame_period: float = 0.0) -> bool:
        """Ping if half the watchdog interval has passed and the picture moves: a new frame was shown within that half
        interval, or within two of the video's frame periods at the present speed (`frame_period`, seconds: a 1 fps
        render at /speed 0.05 shows a frame every 20 s), or no frame is `expecting` (paused, nothing to play). Called
        every turn of the main loop; `now` is time.monotonic(). True when it pinged."""
        if frames_shown != self.frames_seen or not expecting:  # standing still is right while nothing is due: a
            self.frames_seen, self.moved_at = frames_shown, now  # pause is not counted against the next frame
        if self.every is None or now - self.last_ping < self.every:
            return False
        if expecting and now - self.moved_at > max(self.every, 2.0 * frame_period):
            return False  # the picture should move and does not: let systemd see it
        self.last_ping = now
        self.pings += 1
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        self.sock.close()


class Heartbeat:
    """An OSC message to a show controller every `every` seconds: `/heartbeat` with the arguments `args()` gives."""

    ADDRESS = "/heartbeat"

    def __init__(self, host: str, port: int, every: float):
        self.every, self.last = every, -float("inf")
        self.sent = 0
        self.target = None
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self.target = info[4][:2]
            self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
        except OSError as e:
            log.warning("heartbeat: cannot send to %s:%d (%s); no heartbeat", host, port, e)

    def tick(self, now: float, args: Callable[[], tuple]) -> bool:
        from installation.osc import build_message

        if self.target is None or now - self.last < self.every:
            return False
        self.last = now
        try:
            self.sock.sendto(build_message(self.ADDRESS, *args()), self.target)
            self.sent += 1
            return True
        except OSError:  # the controller is away (ICMP refused): keep sending, it may come back
            return False

    def close(self) -> None:
        if self.target is not None:
            self.sock.close()


class RunRecord:
    """A small JSON file beside the log that says when this run started, when it was last alive, and how it stopped,
    so that the next run can say why it started: after a clean stop, or after one that never stopped (killed,
    crashed, hung and restarted by the watchdog, power lost)."""

    ALIVE_EVERY = 60.0  # seconds between "still alive" writes: one small write a minute

    def __init__(self, path: Path | None):
        self.path = path
        self.previous = "first start (no record of an earlier run)"
        self._state: dict[str, Any] = {}
        self._last_alive = -float("inf")
        self._warned = False

    def begin(self, now: float) -> str:
        """Read how the last run ended, record this start; returns the reason this run started."""
        if self.path is None:
            self.previous = "unknown (no state_file)"
            return self.previous
        try:
            last = json.loads(self.path.read_text(encoding="utf-8"))
            if last.get("stopped"):
                self.previous = f"the last run stopped cleanly ({last['stopped']}) at {last.get('alive', '?')}"
            else:
                self.previous = (f"the last run ended without stopping (killed, crashed, hung or power lost); last "
                                 f"seen alive at {last.get('alive', '?')}, started {last.get('started', '?')}")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:
            self.previous = f"unknown (cannot read {self.path}: {type(e).__name__})"
        stamp = _stamp()
        self._state = {"pid": os.getpid(), "started": stamp, "alive": stamp, "stopped": None}
        self._write()
        self._last_alive = now
        return self.previous

    def alive(self, now: float) -> None:
        if self.path is not None and now - self._last_alive >= self.ALIVE_EVERY:
            self._last_alive = now
            self._state["alive"] = _stamp()
            self._write()

    def end(self, reason: str) -> None:
        if self.path is not None and self._state:
            self._state.update(alive=_stamp(), stopped=reason)
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._state), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot write %s (%s); restart reasons will be unknown", self.path, e)


def _stamp() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _quote(arg: str) -> str:
    """An ExecStart= word: systemd splits on spaces and reads C-style escapes inside double quotes."""
    if arg and not any(c in arg for c in ' "\'\\$%;'):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def unit_text(root: Path, python: str, args: list[str], env: dict | None = None) -> str:
    """A systemd user unit that runs `python root/run.py *args` for ever: restarted whatever happens, watched (the
    player pings the watchdog while its picture moves), stopped with SIGTERM."""
    env = os.environ if env is None else env
    command = " ".join(_quote(a) for a in [python, str(root / "run.py"), *args])
    display = [f"Environment={_quote(f'{k}={env[k]}')}" for k in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")
               if env.get(k)]
    if not display:  # printed from a shell with no display (ssh): the player would find none and not start
        display = ["# No DISPLAY or WAYLAND_DISPLAY where this was printed: set the gallery screen's, e.g.",
                   "Environment=DISPLAY=:0"]
    lines = [
        "# The Uncanny gallery player as a systemd user service (printed by `run.py play --service`).",
        "#   run.py play --service > ~/.config/systemd/user/uncanny-player.service",
        "#   systemctl --user daemon-reload && systemctl --user enable --now uncanny-player",
        "#   loginctl enable-linger $USER     # start at boot without a login",
        "#   systemctl --user reload uncanny-player   # re-read config.toml and rescan media (SIGHUP)",
        "#   journalctl --user -u uncanny-player      # its log (also media/player.log)",
        "[Unit]",
        f"Description=Uncanny gallery player ({root})",
        "After=graphical-session.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"WorkingDirectory={_quote(str(root))}",
        f"ExecStart={command}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        *display,
        "Restart=always",
        "RestartSec=2",
        "WatchdogSec=10",
        "TimeoutStartSec=60",
        "TimeoutStopSec=5",
        "KillSignal=SIGTERM",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"
