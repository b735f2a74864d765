"""Player faults bench: a long run at 1920x1080 from a 512 px, 24 fps loop with a flood of valid OSC commands for the
middle minute and two decoder kills, as a gallery would meet them; then SIGTERM to a player process.

    python bench/faults.py                                   # the issue's run: 10 min, flood 2,000/s for 60 s, 2 kills
    python bench/faults.py --minutes 3 --flood-seconds 60    # a shorter run, same flood

Prints:
  frames    new frames shown vs expected (fps x seconds), dropped (as /status), the longest gap between two new frames
            and between two flips, over the whole run and within the flood (goals: 0 dropped, longest flip gap at most
            2 frame periods)
  flood     messages sent by a separate process (a mix of /subject, /next, /prev, /status, /ping, /speed, /fade,
            /play), and /status's received / coalesced / refused; jumps made
  kills     each `kill -9` of the loop's ffmpeg: the frame it died at, and whether the loop went on at the next frame
            (goal: the loop is never shortened: every wrap comes after the last frame)
  memory    RSS (paused, queue full) after warm-up and at the end (goal: growth under 10 MB)
  stop      SIGTERM to a `run.py play` process: seconds to exit, exit status, ffmpeg children left (goal: under 1 s, 0)

Player time runs at real time (decoding is the load being measured); the render is made once under --work.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import children  # noqa: E402
from bench.show import make_render  # noqa: E402
from installation.decoder import Frame  # noqa: E402
from installation.player import Player  # noqa: E402
from installation.timing import allowed_skip  # noqa: E402
from sequences.config import load_config  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_player", ROOT / "bench" / "player.py")
bench_player = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_player)  # its memory helpers

FLOOD = r"""
import socket, sys, time
from installation.osc import build_message
port, rate, seconds, subjects = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
mix = [build_message("/subject", k) for k in range(subjects)] + [build_message(a) for a in
       ("/next", "/prev", "/status", "/ping", "/play")] + [build_message("/speed", 1.0), build_message("/fade", 1.0)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies are not read: let the kernel drop them
sent, start, batch = 0, time.perf_counter(), max(1, int(rate / 100))
while time.perf_counter() - start < seconds:
    for _ in range(batch):
        s.sendto(mix[sent % len(mix)], ("127.0.0.1", port))
        sent += 1
    ahead = start + sent / rate - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)
print(sent, time.perf_counter() - start)
"""


class Watch:
    """Follows what goes on screen: flips, new frames, wraps of every loop stream (a wrap before the last frame is a
    shortened loop)."""

    def __init__(self, player: Player):
        self.player, self.flips, self.last_flip = player, [], None
        self.longest_flip, self.shortened, self.wraps = 0.0, [], 0
        self._seen: dict[int, int] = {}  # id(stream) -> last index seen
        show = player.canvas.show

        def timed_show(*args, **kwargs):
            t = show(*args, **kwargs)
            if self.last_flip is not None:
                self.longest_flip = max(self.longest_flip, t - self.last_flip)
            self.last_flip = t
            return t

        player.canvas.show = timed_show

    def reset(self) -> None:
        self.longest_flip, self.last_flip = 0.0, None
        self.player.stats.reset_gap()

    def after_step(self) -> None:
        pb = self.player.playback
        s = pb.main
        if s is None or not s.loop or not isinstance(s.shown, Frame) or s.from_poster:
            return
        last = self._seen.get(id(s))
        idx = s.shown.index
        if last is not None and idx < last:
            self.wraps += 1
            end = pb.seq.manifest.loop_frames - 1
            if last < end - allowed_skip(s.clock.speed) + 1:
                self.shortened.append((last, idx))
        self._seen = {id(s): idx}


def run_phase(player: Player, watch: Watch, seconds: float, actions: dict[float, object],
              done=lambda: True) -> dict:
    """Step the player for `seconds` and until `done()`; at each time in `actions` (seconds from the start) call it
    once. Gaps count from the phase's first frame."""
    stats, t0 = player.stats, time.perf_counter()
    shown0, dropped0 = stats.frames_shown, bench_player.dropped(player)
    watch.reset()
    pending = sorted(actions.items())
    while (now := time.perf_counter() - t0) < seconds or not done():
        while pending and pending[0][0] <= now:
            pending.pop(0)[1]()
        player.step()
        watch.after_step()
    wall = time.perf_counter() - t0
    return {"wall": wall, "shown": stats.frames_shown - shown0, "dropped": bench_player.dropped(player) - dropped0,
            "gap": stats.longest_gap, "flip_gap": watch.longest_flip}


def kill_decoder(player: Player, kills: list) -> None:
    s = player.playback.main
    proc = s.decoder._process if s is not None else None
    if proc is None:
        kills.append("no decoder running")
        return
    kills.append(f"killed ffmpeg {proc.pid} with frame {s.shown.index} on screen")
    os.kill(proc.pid, signal.SIGKILL)


def stop_time(render: Path, port: int) -> str:
    """SIGTERM to a `run.py play` process in gallery mode: seconds from the signal to its exit."""
    from installation.osc import build_message

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(f'media_dir = "{tmp}"\n[player]\nwindowed = true\nwindow_size = [1920, 1080]\n'
                       f'allow_quit_key = false\n[osc]\nport = {port}\n')
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "play", str(render), "--config", str(cfg)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.bind(("127.0.0.1", 0))
            for _ in range(120):
                s.sendto(build_message("/ping"), ("127.0.0.1", port))
                try:
                    s.recvfrom(1024)
                    break
                except socket.timeout:
                    pass
        time.sleep(3)  # playing
        kids = [p for p in children(proc.pid)]
        t = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        took = time.perf_counter() - t
        left = [p for p in kids if Path(f"/proc/{p}").exists()]
    return f"SIGTERM -> exit in {took:.2f} s, exit status {rc}, ffmpeg children {len(kids)} before, {len(left)} left"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    ap.add_argument("--flood-seconds", type=float, default=60.0, help="flood length, in the middle (default 60)")
    ap.add_argument("--rate", type=float, default=2000.0, help="flood messages per second (default 2000)")
    ap.add_argument("--kills", type=int, default=2, help="decoder kills, spread outside the flood (default 2)")
    ap.add_argument("--screen", default="1920x1080")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--loop-seconds", type=float, default=20.0)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/uncanny-bench-player"))
    args = ap.parse_args()

    render = make_render(args.work / f"bench-{args.size}-{args.fps}-{args.loop_seconds:g}-{args.subjects}", args.size,
                         args.fps, args.loop_seconds, args.subjects)
    w, h = (int(v) for v in args.screen.lower().split("x"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config().override({"player": {"windowed": True, "window_size": [w, h], "attract_after": 0.0},
                                  "osc": {"port": port, "enabled": True}})
    print(f"load average before: {os.getloadavg()[0]:.1f} (figures are noisy when other work shares the cores)")
    print(f"bench: {args.size}px {args.fps} fps loop of {args.loop_seconds:g} s -> {w}x{h}, {args.minutes:g} min, "
          f"flood {args.rate:g}/s for {args.flood_seconds:g} s, {args.kills} decoder kills, move_interval "
          f"{cfg.player.move_interval:g} s, crossfade {cfg.player.crossfade:g} s, {os.cpu_count()} cores")
    player = Player(cfg, [render])
    player.open()
    watch = Watch(player)
    kills: list = []
    try:
        player.run(10.0)  # warm-up: a first pass, posters cached
        rss0, state0 = bench_player.settled_rss(player)
        total = args.minutes * 60
        flood_start = (total - args.flood_seconds) / 2
        before = run_phase(player, watch, flood_start,
                           {flood_start * (k + 1) / (args.kills + 1): (lambda: kill_decoder(player, kills))
                            for k in range(args.kills)})
        moves = []
        real_jump = player.jump

        def counted_jump(seq, entry, now, preroll=False):
            moves.append(now)
            real_jump(seq, entry, now, preroll)

        player.jump = counted_jump
        s0 = player.status(player.clock())
        sender = subprocess.Popen([sys.executable, "-c", FLOOD, str(port), str(args.rate), str(args.flood_seconds),
                                   str(args.subjects)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        during = run_phase(player, watch, args.flood_seconds, {}, done=lambda: sender.poll() is not None)
        sent = sender.communicate(timeout=60)[0].split()
        player.jump = real_jump
        after = run_phase(player, watch, total - flood_start - args.flood_seconds, {})
        s1 = player.status(player.clock())
        rss1, state1 = bench_player.settled_rss(player)
    finally:
        t = time.perf_counter()
        player.close()
        closed = time.perf_counter() - t

    fps = args.fps
    wall = before["wall"] + during["wall"] + after["wall"]  # the pauses to read memory are left out
    shown = before["shown"] + during["shown"] + after["shown"]
    print(f"frames    {shown} new frames shown of {wall * fps:.0f} expected ({100 * shown / (wall * fps):.1f}%) in "
          f"{wall:.0f} s; dropped {before['dropped'] + during['dropped'] + after['dropped']}; longest gap between "
          f"new frames {1000 * max(before['gap'], during['gap'], after['gap']):.0f} ms, between flips "
          f"{1000 * max(before['flip_gap'], during['flip_gap'], after['flip_gap']):.0f} ms "
          f"(frame period {1000 / fps:.1f} ms)")
    for name, ph in (("before", before), ("flood", during), ("after", after)):
        print(f"  {name:6}  {ph['wall']:.0f} s: {ph['shown']} of {ph['wall'] * fps:.0f} frames "
              f"({100 * ph['shown'] / max(1e-9, ph['wall'] * fps):.1f}%), dropped {ph['dropped']}, longest gap "
              f"{1000 * ph['gap']:.0f} ms new frames / {1000 * ph['flip_gap']:.0f} ms flips")
    print(f"flood     {sent[0]} messages sent in {float(sent[1]):.1f} s; /status: received "
          f"{s1['commands_received'] - s0['commands_received']}, coalesced "
          f"{s1['commands_coalesced'] - s0['commands_coalesced']}, refused "
          f"{s1['commands_refused'] - s0['commands_refused']}; {len(moves)} jumps made")
    print(f"kills     {'; '.join(kills)}; decoder restarts {s1['decoder_restarts']}; loop wraps seen "
          f"{watch.wraps}, shortened {len(watch.shortened)} {watch.shortened[:5]}")
    print(f"memory    RSS (paused) {rss0:.1f} MB after warm-up ({state0}), {rss1:.1f} MB at the end ({state1}), "
          f"growth {rss1 - rss0:+.1f} MB; close() {1000 * closed:.0f} ms")
    print(f"stop      {stop_time(render, port)}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
