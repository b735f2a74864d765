"""Gallery player bench: headless (SDL dummy driver) playback at 1920x1080 from a 512 px, 24 fps loop.

    python bench/player.py                                  # the issue's durations: 10 min, 500 commands, 1 h soak
    python bench/player.py --minutes 1 --commands 100 --soak-hours 0.2 --soak-accel 12   # a shorter run

Prints, for each phase:
  playback  frames shown per second and dropped frames (goal: none), CPU share (player + its ffmpeg processes, as a
            share of all cores), resident memory
  latency   OSC-to-first-changed-frame latency p50/p99 over N `/subject` commands sent over loopback UDP (goal: p99
            under 50 ms); measured from just before sendto() to just after the flip that first shows the target
  soak      resident memory before and after an accelerated soak (player time runs --soak-accel times faster) with a
            subject change every --soak-jump seconds of player time (goal: growth under 10 MB)

The test render (smooth moving shapes, --loop-seconds long, --subjects segments) is made once under --work.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import children  # noqa: E402
from bench.show import make_render  # noqa: E402
from installation.osc import build_message  # noqa: E402
from installation.player import Player  # noqa: E402
from sequences.config import load_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def states(pids: list[int]) -> str:
    out: dict[str, int] = {}
    for pid in pids:
        try:
            st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        out[st] = out.get(st, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(out.items())) or "none"


def cpu_seconds() -> float:
    """CPU time of this process, its finished children, and its running children (ffmpeg)."""
    def fields(pid):
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())

    f = fields("self")
    total = sum(int(f[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
    for pid in children():
        try:
            g = fields(pid)
            total += int(g[11]) + int(g[12])
        except (OSError, IndexError):
            pass
    return total / TICK


def settled_rss(player: Player) -> tuple[float, str]:
    """RSS in a comparable state: paused, no fade running, the decoder queue full. (Playing, the queue's fill level
    alone moves RSS by up to buffer_frames frames, which would hide or fake a leak.)"""
    import gc

    from installation.commands import Command

    player.submit(Command("pause"))
    end, settled = time.perf_counter() + 60, False
    while time.perf_counter() < end and not settled:
        player.step()
        m = player.playback.main
        decoders = [t for t in threading.enumerate() if t.name.startswith("decode")]
        settled = m is not None and m.decoder.queue.full() and player.fade_from is None and len(decoders) == 1
    gc.collect()
    time.sleep(0.5)
    rss = rss_mb()
    q = player.playback.main.decoder.queue if player.playback.main is not None else None
    state = f"queue {q.qsize()}/{q.maxsize}" if q is not None else "no stream"
    player.submit(Command("play"))
    return rss, state + ("" if settled else " (not settled)")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def dropped(player: Player) -> int:
    """Frames dropped since start, as /status reports them."""
    return player.status(player.clock())["dropped"]


def playback(player: Player, seconds: float) -> None:
    shown0, dropped0, cpu0, t0 = player.stats.frames_shown, dropped(player), cpu_seconds(), time.perf_counter()
    player.run(seconds)
    wall = time.perf_counter() - t0
    shown, drops, cpu = player.stats.frames_shown - shown0, dropped(player) - dropped0, cpu_seconds() - cpu0
    ff = sum(rss_mb(p) for p in children())
    print(f"playback  {wall:.0f} s: {shown / wall:.2f} frames shown per second (video is "
          f"{player.playback.seq.manifest.fps:g} fps), {drops} dropped; "
          f"CPU {100 * cpu / wall / os.cpu_count():.0f}% of {os.cpu_count()} cores ({100 * cpu / wall:.0f}% of one); "
          f"RSS player {rss_mb():.0f} MB + ffmpeg {ff:.0f} MB")


def latency(player: Player, port: int, count: int, gap: float) -> None:
    subjects = len(player.playback.seq.manifest.subjects)
    sent: list[float] = []
    first = len(player.stats.command_flips)

    def sender():
        rng = random.Random(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            current = None
            for _ in range(count):
                time.sleep(gap * rng.uniform(0.5, 1.5))
                k = rng.choice([i for i in range(subjects) if i != current])
                current = k
                data = build_message("/subject", k)
                sent.append(time.perf_counter())
                s.sendto(data, ("127.0.0.1", port))

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    while t.is_alive() or len(player.stats.command_flips) - first < count:
        player.step()
        if not t.is_alive() and time.perf_counter() - sent[-1] > 5:
            break
    flips = list(player.stats.command_flips)[first:]
    lat = [1000 * (flipped - s) for s, (_, _, flipped) in zip(sent, flips)]
    queue_ms = [1000 * (flipped - received) for _, received, flipped in flips]
    print(f"latency   {len(lat)} of {count} /subject commands: OSC send -> first changed frame flipped "
          f"p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms "
          f"(receive -> flip p50 {percentile(queue_ms, 50):.1f} ms); mean {statistics.mean(lat):.1f} ms")


def soak(cfg, sources, hours: float, accel: float, jump: float) -> None:
    t_start = time.perf_counter()

    def fast_clock():
        return t_start + (time.perf_counter() - t_start) * accel

    player = Player(cfg, sources, windowed=True, clock=fast_clock, time_scale=accel)
    player.open()
    try:
        from installation.commands import Command

        player.run(10.0 * accel)  # warm-up, 10 s of wall time: a first pass, posters cached
        (rss0, state0), wall0 = settled_rss(player), time.perf_counter()
        posters0, threads0 = player.prefetcher.cache.bytes / 2**20, threading.active_count()
        rng, jumps = random.Random(1), 0
        end = player.clock() + hours * 3600
        next_jump = player.clock()
        while player.clock() < end:
            now = player.clock()
            if now >= next_jump:
                player.submit(Command("subject", rng.randrange(len(player.playback.seq.manifest.subjects))))
                jumps += 1
                next_jump = now + jump
            player.step()
        wall = time.perf_counter() - wall0
        rss1, state1 = settled_rss(player)
        print(f"soak      {hours:g} h of player time in {wall:.0f} s (x{accel:g}), {jumps} subject changes: "
              f"RSS (paused) {rss0:.1f} MB at start ({state0}), {rss1:.1f} MB after ({state1}), "
              f"growth {rss1 - rss0:+.1f} MB; "
              f"(poster cache {posters0:.0f} -> {player.prefetcher.cache.bytes / 2**20:.0f} MiB of it); "
              f"threads {threads0} -> {threading.active_count()}, child processes by state {states(children())}")
    finally:
        player.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="playback phase length (default 10)")
    ap.add_argument("--commands", type=int, default=500, help="/subject commands for the latency phase")
    ap.add_argument("--gap", type=float, default=0.6, help="mean seconds between commands (default 0.6)")
    ap.add_argument("--soak-hours", type=float, default=1.0, help="player-time length of the soak (default 1)")
    ap.add_argument("--soak-accel", type=float, default=12.0, help="how much faster than real time the soak runs")
    ap.add_argument("--soak-jump", type=float, default=3.0, help="player-time seconds between subject changes")
    ap.add_argument("--screen", default="1920x1080", help="output size (default 1920x1080)")
    ap.add_argument("--size", type=int, default=512, help="video frame side (default 512)")
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--loop-seconds", type=float, default=20.0)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/uncanny-bench-player"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["playback", "latency", "soak"])
    args = ap.parse_args()

    render = make_render(args.work / f"bench-{args.size}-{args.fps}-{args.loop_seconds:g}-{args.subjects}",
                         args.size, args.fps, args.loop_seconds, args.subjects)
    w, h = (int(v) for v in args.screen.lower().split("x"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config().override({"player": {"windowed": True, "window_size": [w, h], "attract_after": 0.0},
                                  "osc": {"port": port, "enabled": True}})
    print(f"load average before: {os.getloadavg()[0]:.1f} (figures are noisy when other work shares the cores)")
    print(f"bench: {args.size}px {args.fps} fps loop of {args.loop_seconds:g} s -> {w}x{h}, SDL "
          f"{os.environ['SDL_VIDEODRIVER']}, {os.cpu_count()} cores")
    started = time.perf_counter()
    player = Player(cfg, [render])
    player.open()
    print(f"start-up  {1000 * (time.perf_counter() - started):.0f} ms to an open player; RSS {rss_mb():.0f} MB")
    try:
        player.run(2.0)  # first frames
        if "playback" not in args.skip:
            playback(player, args.minutes * 60)
        if "latency" not in args.skip:
            latency(player, port, args.commands, args.gap)
    finally:
        player.close()
    if "soak" not in args.skip:
        soak(cfg.override({"osc": {"enabled": False}}), [render], args.soak_hours, args.soak_accel, args.soak_jump)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
