"""OSC: command validation, the allow-list, and a real player process driven over loopback UDP."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import time

import pytest

from installation.commands import Command, CommandError, RateLimitedLog, parse_command
from installation.osc import OscServer, build_message, decode_datagram, parse_allow, sender_allowed
from sequences.config import Config
from tests.test_player import ROOT, make_render, wait_until

STATUS_KEYS = {"sequence", "subject", "frame", "playing", "fps", "dropped", "uptime_s"}


def test_parse_command_validates_addresses_types_counts_and_ranges():
    assert parse_command("/subject", [2]) == Command("subject", 2)
    assert parse_command("/subject", [2.0]).value == 2
    assert parse_command("/subject", ["obama"]).value == "obama"
    assert parse_command("/blackout", [1]).value is True and parse_command("/blackout", [False]).value is False
    assert parse_command("/fade", [0.5]).value == 0.5 and parse_command("/speed", [2]).value == 2.0
    assert str(parse_command("/fade", [-0.0]).value) == "0.0"  # not "-0.0" in the log and /status
    bad = [("/nope", []), ("/play", [1]), ("/subject", []), ("/subject", [-1]), ("/subject", [1.5]),
           ("/subject", [b"blob"]), ("/subject", [True]), ("/blackout", [2]), ("/fade", ["x"]),
           ("/fade", [-1.0]), ("/fade", [float("nan")]), ("/speed", [0.0]), ("/speed", [1e9]),
           ("/sequence", ["x" * 1000]), ("/status", [1, 2]), (None, [])]
    for address, args in bad:
        with pytest.raises(CommandError):
            parse_command(address, args)


def test_decode_datagram_logs_and_drops_garbage(caplog):
    problems = RateLimitedLog(__import__("logging").getLogger("test"), per_second=100)
    sender = ("127.0.0.1", 5)
    assert decode_datagram(build_message("/subject", 3), sender, received=1.0, problems=problems) == [
        Command("subject", 3, sender, 1.0)]
    assert decode_datagram(b"\xff\x00garbage", sender, received=0, problems=problems) == []
    assert decode_datagram(build_message("/speed", "fast"), sender, received=0, problems=problems) == []
    assert len([r for r in caplog.records if "OSC from 127.0.0.1:5" in r.getMessage()]) == 2


def test_allow_list_refuses_other_senders():
    nets = parse_allow(("127.0.0.2", "10.1.0.0/16"))
    assert sender_allowed("127.0.0.2", nets) and sender_allowed("10.1.200.3", nets)
    assert not sender_allowed("127.0.0.1", nets) and not sender_allowed("10.2.0.1", nets)
    assert sender_allowed("192.168.9.9", ())  # empty list: anyone who can reach us
    with pytest.raises(ValueError, match="osc.allow"):
        parse_allow(("not-an-address",))

    got = []
    osc = Config().osc
    cfg = type(osc)(host="127.0.0.1", port=0, allow=("127.0.0.2",))
    server = OscServer(cfg, submit=got.append)
    try:
        for source in ("127.0.0.1", "127.0.0.2"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((source, 0))
                s.sendto(build_message("/subject", source), ("127.0.0.1", server.port))
        assert wait_until(lambda: len(got) + server.refused >= 2)  # both datagrams handled, either way
        assert [c.value for c in got] == ["127.0.0.2"] and server.refused == 1
    finally:
        server.close()


# ----- a real player process --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Remote:
    """A UDP socket talking to the player; collects replies."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, address: str, *args) -> None:
        self.sock.sendto(build_message(address, *args), ("127.0.0.1", self.port))

    def raw(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def ask(self, address: str, timeout: float = 10.0):
        """Send `address` and return the arguments of its reply (None on timeout), reading past other replies: those
        still on their way from earlier messages."""
        from pythonosc.osc_message import OscMessage

        self.sock.settimeout(timeout)
        self.send(address)
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                return None
            msg = OscMessage(data)
            if msg.address == {"/ping": "/pong"}.get(address, address):
                return list(msg.params)
        return None

    def status(self, timeout: float = 10.0) -> dict | None:
        reply = self.ask("/status", timeout)
        return json.loads(reply[0]) if reply else None

    def status_when(self, predicate, timeout: float = 10.0) -> dict | None:
        """The first /status reply for which `predicate` holds, asking until `timeout`; else the last reply (for the
        assertion to show)."""
        last = None

        def holds():
            nonlocal last
            last = self.status(1.0) or last
            return last is not None and predicate(last)

        wait_until(holds, timeout, interval=0.05)  # under the player's 20 replies a second to one sender
        return last


@pytest.fixture
def player(tmp_path_factory):
    """A player process of its own for each test, playing two fresh renders: no test sees what another one did."""
    media = tmp_path_factory.mktemp("media")
    make_render(media / "one", "one", segments=(8, 8, 8, 8))
    make_render(media / "two", "two", segments=(6, 6))
    port = free_port()
    config = media / "test.toml"
    config.write_text(f'media_dir = "{media}"\n[player]\nwindowed = true\nwindow_size = [64, 64]\n'
                      f'attract_after = 0.0\n[osc]\nport = {port}\n')
    code = ("import argparse, sys; from installation.cli import register; ap = argparse.ArgumentParser(); "
            "register(ap.add_subparsers()); a = ap.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = subprocess.Popen([sys.executable, "-c", code, "play", str(media), "--config", str(config)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    remote = Remote(port)
    # ask again until it answers: a /ping sent before the socket is bound is lost
    up = wait_until(lambda: proc.poll() is not None or remote.ask("/ping", 0.5) is not None, timeout=60, interval=0)
    assert up and proc.poll() is None, proc.communicate()[1][-2000:]
    yield proc, remote
    remote.sock.close()
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err[-3000:]


def test_osc_subject_then_status_reports_it(player):
    """How fast is bench/player.py's to measure; here only that it happens."""
    proc, remote = player
    assert remote.status_when(lambda s: s["subject"] is not None)["subject"] is not None
    remote.send("/subject", 2)
    status = remote.status_when(lambda s: s["subject"] == 2)
    assert status is not None and status["subject"] == 2, status
    assert STATUS_KEYS <= set(status) and status["sequence"] == "one"


def test_osc_sequence_pause_and_speed(player):
    proc, remote = player
    remote.send("/sequence", "two")
    remote.send("/pause")
    remote.send("/speed", 2.0)
    s = remote.status_when(lambda s: s["sequence"] == "two" and s["playing"] is False and s["speed"] == 2.0)
    assert s["sequence"] == "two" and s["playing"] is False and s["speed"] == 2.0
    remote.send("/play")
    remote.send("/speed", 1.0)
    remote.send("/sequence", 0)
    s = remote.status_when(lambda s: s["sequence"] == "one" and s["playing"] is True)
    assert s["sequence"] == "one" and s["playing"] is True


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        return build_message(rng.choice(["/subject", "/sequence", "/speed", "/fade", "/blackout", "/nope", "/"]),
                             *rng.choice([[], [rng.random() * 1e6], ["x" * rng.randrange(300)], [1, 2, 3],
                                          [-5], [b"\x00\x01"], [True]]))
    if kind == 2:
        msg = build_message("/subject", rng.randrange(100))
        return msg[: rng.randrange(len(msg))]
    if kind == 3:  # a bundle whose element claims more bytes than there are
        return b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", 10_000) + b"/x\x00\x00"
    if kind == 4:
        return b"/subject\x00\x00\x00\x00,iiiiiii\x00" + rng.randbytes(rng.randrange(12))
    if kind == 5:  # nested bundles
        inner = build_message("/speed", 1.0)
        for _ in range(rng.randrange(1, 30)):
            inner = b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", len(inner)) + inner
        return inner
    return b"/status\x00,zq\x00" + rng.randbytes(8)


def test_10000_malformed_datagrams_leave_it_alive(player):
    proc, remote = player
    rng = random.Random(0)
    for k in range(10_000):
        remote.raw(garbage(rng))
        if k % 500 == 0:
            time.sleep(0.005)  # let the receiver keep up a little; UDP may still drop some, that is fine
    # ping until it answers: the flood may still fill its socket (a ping then is lost), and its replies to the /status
    # messages in the flood use up the replies allowed; ask() reads past those
    wait_until(lambda: proc.poll() is not None or remote.ask("/ping", 1.0) == [], timeout=60, interval=0)
    status = remote.status_when(lambda s: True)
    assert proc.poll() is None
    assert status is not None and STATUS_KEYS <= set(status)
    assert status["sequence"] in ("one", "two") and isinstance(status["dropped"], int)
    assert remote.ask("/ping") == []
