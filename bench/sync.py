"""Players in step bench (issue #20): one leader and --followers followers on this machine, each its own `run.py play`
process on SDL's dummy video driver, a subject jump sent by OSC to the leader every --jump-every seconds, and the
leader killed (SIGKILL) and started again.

    python bench/sync.py                                              # the issue's run: 10 min, 3 followers, 24 fps
    python bench/sync.py --minutes 1.5 --kill-at 40 --restart-at 60   # a short run

Every player logs each frame it puts on screen ([player] frame_log, installation/framelog.py) in
--work/run/<player>/frames.tsv: the flip time, the time the frame was due, the sequence, the video and the frame.
Times are time.perf_counter, which is CLOCK_MONOTONIC on Linux: one clock for every process on the machine, never
stepped (time.time is CLOCK_REALTIME, which NTP may step mid-run), and the clock the players pace by, so the logs of
the four processes compare as they are. The bench refuses to run where perf_counter is another clock.

Prints:
  offset   each follower against the leader, at instants every 10 ms while both show the same video: the difference of
           the positions they show (the frame on screen plus the time since its flip, at most one frame), in ms and in
           frames, p50 / p99 / max of its size (goal: p99 at most 10 ms). Beside it the same from the frames' due times:
           what the frame clocks agreed on, without the main loops' late wake-ups and dropped frames; `late` is
           flip - due per player. A large shown offset with a small due one is the machine's scheduling, not the sync.
  jumps    jumps whose first frame (where each log cuts) is the same frame of the same video on every player, each
           flip within half a frame of the leader's (goal: all); for a jump through a transition clip, the same for
           the clip's hand-over to the loop
  leader   SIGKILL at --kill-at, a new leader at --restart-at (seconds into the run): the frames each follower showed
           meanwhile and its longest gap (goal: they play on), what their /status said, and after the restart whether
           they locked again, how soon, and whether any jumped

The test show (bench/show.py: a --loop-seconds loop of --subjects subjects at --size px, --fps, and a --clip-frames
transition clip from each subject to the next) is made once under --work; --media plays a render folder of your own.
Jumps alternate between /subject to a subject half the show away (a cut) and /next (through a clip, if there is one);
a jump falling while the leader is gone or the followers are not locked again is skipped and counted. What the bench
did (times of the jumps, the kill, the restart) is saved in --work/run/run.json; --report analyses it again.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pythonosc.osc_message import OscMessage  # noqa: E402

from bench.machine import children, cpu_name  # noqa: E402
from bench.show import make_render  # noqa: E402
from installation.clock import loop_error  # noqa: E402
from installation.osc import build_message  # noqa: E402
from sequences.manifest import read_manifest  # noqa: E402

SAMPLE_EVERY = 0.010  # seconds between the instants at which players are compared
MAX_SKIP = 3  # frames a log may step forward (frames dropped on a loaded machine) without counting as a cut
FLUSH_MARGIN = 2.0  # seconds before a kill left out: a killed player's last second of log is lost (framelog.py)
SETTLE = 2.0  # seconds after the followers lock (within a frame: follow.py) before they are measured
QUIET = 6.0  # no jump sent this many seconds before the kill: it would not have landed (lead time, clip) and logged
CORRECTIONS = ("sync: joining the leader", "off the leader; jumping")  # a follower's jumps of its own (follow.py)


# ----- the players ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port: int, timeout: float = 1.0) -> dict | None:
    """A player's /status (README: OSC), or None when it does not answer in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(build_message("/status"), ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65536)
        except socket.timeout:
            return None
    msg = OscMessage(data)
    return json.loads(msg.params[0]) if msg.address == "/status" else None


def send(port: int, address: str, *args) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(build_message(address, *args), ("127.0.0.1", port))


@dataclass
class Proc:
    """One `run.py play` process: its folder (config, frame log, player log) and OSC port."""

    name: str
    folder: Path
    role: str
    media: Path
    osc_port: int
    sync_port: int
    screen: tuple[int, int]
    lead_time: float
    proc: subprocess.Popen | None = None
    kids: list = field(default_factory=list)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "config.toml"
        cfg.write_text(f'media_dir = "{self.folder}"\n[player]\nwindowed = true\n'
                       f"window_size = [{self.screen[0]}, {self.screen[1]}]\nattract_after = 0.0\n"
                       f'allow_quit_key = false\nstate_file = ""\nframe_log = "frames.tsv"\n'
                       f"[osc]\nport = {self.osc_port}\n"
                       f"[sync]\nport = {self.sync_port}\nlead_time = {self.lead_time}\n")
        cmd = [sys.executable, str(ROOT / "run.py"), "play", str(self.media), "--config", str(cfg),
               "--sync", self.role] + (["--leader", "127.0.0.1"] if self.role == "follower" else [])
        env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
        with open(self.folder / "console.log", "a") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL, as a crash; its ffmpeg decoders, orphaned, are killed too."""
        self.kids = children(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for pid in self.kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def wait_for(cond, timeout: float, every: float = 0.25) -> float | None:
    """Poll `cond()` until it holds: the perf_counter time it did, or None after `timeout` seconds."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if cond():
            return time.perf_counter()
        time.sleep(every)
    return None


def locked(p: Proc) -> bool:
    s = status(p.osc_port)
    return bool(s and s["sync"].get("locked"))


@dataclass
class Run:
    """What the bench did, on the players' clock (perf_counter)."""

    t0: float = 0.0  # every follower locked: the run starts
    t0_wall: float = 0.0  # the same moment on time.time(), for the players' console logs
    end: float = 0.0
    jumps: list = field(default_factory=list)  # (time sent, "cut" | "clip", what)
    skipped: int = 0
    kill: float | None = None
    restart: float | None = None
    relocked: float | None = None
    absent: dict = field(default_factory=dict)  # follower -> its /status "sync" while the leader was gone
    after: dict = field(default_factory=dict)  # follower -> its /status "sync" once locked again (or at the end)


def drive(leader: Proc, followers: list[Proc], args, subjects: int, clips: bool) -> Run:
    """Start the players, lock them, then jump, kill and restart the leader on schedule for --minutes."""
    run = Run()
    leader.start()
    if wait_for(lambda: status(leader.osc_port) is not None, 60) is None:
        raise SystemExit("the leader did not answer /status within 60 s (see its console.log)")
    for f in followers:
        f.start()
    if wait_for(lambda: all(locked(f) for f in followers), 90) is None:
        raise SystemExit("the followers did not lock within 90 s (see their console.log)")
    run.t0, run.t0_wall = time.perf_counter(), time.time()
    run.end = run.t0 + args.minutes * 60
    kill_at = run.t0 + args.kill_at if args.kill_at is not None else None
    restart_at = run.t0 + args.restart_at if args.restart_at is not None else None
    next_jump, up, ready, halfway = run.t0 + args.jump_every, True, True, float("inf")
    while (now := time.perf_counter()) < run.end:
        if kill_at is not None and run.kill is None and now >= kill_at:
            leader.kill()
            run.kill, up, ready = time.perf_counter(), False, False
            halfway = run.kill + ((restart_at or run.end) - run.kill) / 2
        if run.kill is not None and not run.absent and now >= halfway:
            run.absent = {f.name: (status(f.osc_port) or {}).get("sync") for f in followers}
        if restart_at is not None and run.restart is None and run.kill is not None and now >= restart_at:
            leader.start()
            run.restart, up = time.perf_counter(), True
        if run.restart is not None and not ready:
            if all(locked(f) for f in followers):
                run.relocked, ready = time.perf_counter(), True
                run.after = {f.name: (status(f.osc_port) or {}).get("sync") for f in followers}
        if now >= next_jump:
            next_jump += args.jump_every
            if not (up and ready) or (kill_at is not None and run.kill is None and now > kill_at - QUIET):
                run.skipped += 1  # the leader is away, or would be killed before every player has landed
            else:
                sent = len(run.jumps)
                if clips and sent % 2 == 1:
                    run.jumps.append((time.perf_counter(), "clip", "/next"))
                    send(leader.osc_port, "/next")
                else:
                    cur = (status(leader.osc_port) or {}).get("subject") or 0
                    target = (cur + max(2, subjects // 2)) % subjects
                    run.jumps.append((time.perf_counter(), "cut", f"/subject {target}"))
                    send(leader.osc_port, "/subject", target)
        time.sleep(0.02)
    if run.restart is not None and not run.after:
        run.after = {f.name: (status(f.osc_port) or {}).get("sync") for f in followers}
    return run


# ----- what the logs say ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    flip: float
    due: float
    sequence: str
    video: str
    frame: int


def read_log(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            f, d, s, v, i = line.split("\t")
            rows.append(Row(float(f), float(d), s, v, int(i)))
    return sorted(rows, key=lambda r: r.flip)


class Shown:
    """What one player showed as a function of time, by flip time; or (due=True) where its frame clock was, from the
    due time of the last frame it showed."""

    def __init__(self, rows: list[Row], fps: float, due: bool = False):
        self.rows = sorted(rows, key=lambda r: r.due) if due else rows
        self.times = [r.due if due else r.flip for r in self.rows]
        self.fps, self.cap = fps, float("inf") if due else 1.0

    def at(self, t: float) -> tuple[tuple[str, str], float] | None:
        """((sequence, video), position in frames) at `t`: the frame plus the time since it went on screen, at most
        one frame (a player that stalls or drops a frame shows an old one, and is behind); by due time, the clock's
        position with no such cap (a frame dropped by a busy main loop is no error of the clocks)."""
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return None
        r = self.rows[i]
        return (r.sequence, r.video), r.frame + min(self.cap, (t - self.times[i]) * self.fps)


def offsets(leader: Shown, follower: Shown, instants: list[float], loop: str, frames: int) -> tuple[list, int]:
    """Milliseconds the follower is behind (+) or ahead of the leader at each instant where both show the same video;
    and how many instants they showed different videos."""
    out, other = [], 0
    for t in instants:
        a, b = leader.at(t), follower.at(t)
        if a is None or b is None:
            continue
        if a[0] != b[0]:
            other += 1
            continue
        d = loop_error(a[1], b[1], frames) if a[0][1] == loop else a[1] - b[1]
        out.append(1000 * d / leader.fps)
    return out, other


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))] if s else float("nan")


def cut_after(rows: list[Row], start: float, stop: float, loop: str, frames: int) -> Row | None:
    """The first row in (start, stop] that does not carry on from the one before: another video, or a step back or of
    more than MAX_SKIP frames (a jump); None if there is none."""
    i = bisect.bisect_right([r.flip for r in rows], start)
    prev = rows[i - 1] if i > 0 else None
    for r in rows[i:]:
        if r.flip > stop:
            break
        if prev is not None:
            step = (r.frame - prev.frame) % frames if r.video == loop else r.frame - prev.frame
            if r.video != prev.video or not 1 <= step <= MAX_SKIP:
                return r
        prev = r
    return None


def landing(logs: dict[str, list[Row]], starts: dict[str, float], span: float, loop: str, frames: int, fps: float):
    """Where each player's log cuts after its start (in `starts`, within `span` seconds): (on the same frame
    everywhere, each flip within half a frame of the leader's; worst flip difference to the leader in ms; the same
    from the due times; the cuts by player)."""
    cuts = {n: cut_after(rows, starts[n], starts[n] + span, loop, frames) for n, rows in logs.items()}
    lead = cuts["leader"]
    if lead is None or any(c is None for c in cuts.values()):
        return False, float("nan"), float("nan"), cuts
    same = all((c.video, c.frame) == (lead.video, lead.frame) for c in cuts.values())
    spread = max(abs(c.flip - lead.flip) for c in cuts.values())
    due = max(abs(c.due - lead.due) for c in cuts.values())
    return same and spread <= 0.5 / fps, 1000 * spread, 1000 * due, cuts


def gaps(rows: list[Row], start: float, stop: float) -> tuple[int, float]:
    """Frames flipped in [start, stop] and the longest time without a new one (from `start` to `stop`)."""
    flips = [r.flip for r in rows if start <= r.flip <= stop]
    edges = [start, *flips, stop]
    return len(flips), max(b - a for a, b in zip(edges, edges[1:]))


def stats_line(ms: list[float], fps: float) -> str:
    a = [abs(v) for v in ms]
    fr = [v * fps / 1000 for v in (percentile(a, 50), percentile(a, 99), max(a, default=float("nan")))]
    return (f"p50 {percentile(a, 50):.1f} p99 {percentile(a, 99):.1f} max {max(a, default=float('nan')):.1f} ms "
            f"({fr[0]:.2f} / {fr[1]:.2f} / {fr[2]:.2f} frames)")


def corrections(console: Path, run: Run) -> list[float]:
    """Seconds into the run at which a follower's console.log says it jumped to rejoin its leader (log lines carry
    the wall clock: mapped through the run's start on both clocks)."""
    out = []
    if not console.is_file():
        return out
    for line in console.read_text(errors="replace").splitlines():
        if any(c in line for c in CORRECTIONS):
            try:
                wall = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if wall >= run.t0_wall:
                out.append(wall - run.t0_wall)
    return out


def jumps(run: Run, logs: dict[str, list[Row]], manifest, args) -> list:
    """How the jumps landed: the spans of time between the first and the last player's cut of each (a jump made by
    some players and not yet by others: left out of the offsets, it is measured here), and the lines to print."""
    fps, frames, loop = manifest.fps, manifest.loop_frames, manifest.loop.name
    kinds = {"cut": [0, 0], "clip": [0, 0], "handover": [0, 0]}
    spreads, failures, spans = [], [], []

    def one(kind: str, label: str, starts: dict, span: float):
        ok, spread, due_spread, cuts = landing(logs, starts, span, loop, frames, fps)
        kinds[kind][0] += ok
        kinds[kind][1] += 1
        spreads.append((spread, due_spread))
        found = [c for c in cuts.values() if c is not None]
        if found:
            spans.append((min(min(c.flip, c.due) for c in found), max(max(c.flip, c.due) for c in found)))
        lead = cuts["leader"]
        if not ok:
            failures.append(f"{label}: " + ", ".join(f"{n} {c.video}:{c.frame} {1000 * (c.flip - lead.flip):+.1f} ms"
                                                     if c and lead else f"{n} none" for n, c in cuts.items()))
        return cuts

    for sent, kind, what in run.jumps:
        cuts = one(kind, f"{what} at {sent - run.t0:.1f} s", {n: sent for n in logs}, args.lead_time + 3.0)
        lead = cuts["leader"]
        if kind == "clip" and lead is not None and lead.video != loop and all(cuts.values()):
            clip = next((t for t in manifest.transitions if t.file.name == lead.video), None)
            span = (clip.frames if clip else fps) / fps + 1.0
            one("handover", f"{what} at {sent - run.t0:.1f} s, clip -> loop", {n: c.flip for n, c in cuts.items()},
                span)
    total, good = kinds["cut"][1] + kinds["clip"][1], kinds["cut"][0] + kinds["clip"][0]
    lines = [f"jumps     {good} of {total} on the same frame everywhere, within half a frame "
          f"(cut {kinds['cut'][0]} of {kinds['cut'][1]}, through a clip {kinds['clip'][0]} of {kinds['clip'][1]}; "
          f"clip -> loop hand-over {kinds['handover'][0]} of {kinds['handover'][1]}); worst flip difference to the "
          f"leader {max((s for s, _ in spreads), default=float('nan')):.1f} ms (due "
          f"{max((d for _, d in spreads), default=float('nan')):.1f} ms); {run.skipped} skipped (the leader killed "
          f"or away)"]
    lines += [f"  missed  {line}" for line in failures[:8]]
    return spans, lines


def offsets_report(run: Run, logs: dict[str, list[Row]], manifest, args, spans: list) -> None:
    fps, frames, loop = manifest.fps, manifest.loop_frames, manifest.loop.name
    last = min(rows[-1].flip for rows in logs.values() if rows)
    windows = [(run.t0 + SETTLE, min(run.end, last))]
    if run.kill is not None:
        back = (run.relocked + SETTLE) if run.relocked is not None else run.end
        windows = [(run.t0 + SETTLE, run.kill - FLUSH_MARGIN), (back, min(run.end, last))]
    instants = [a + k * SAMPLE_EVERY for a, b in windows for k in range(int(max(0, b - a) / SAMPLE_EVERY))]
    mid_jump = [t for t in instants if any(a <= t <= b for a, b in spans)]
    instants = [t for t in instants if not any(a <= t <= b for a, b in spans)]
    left_out = ", the leader's absence and re-lock" if run.kill is not None else ""
    print(f"offset    follower vs leader at {len(instants)} instants, {len(instants) * SAMPLE_EVERY:.0f} s of the "
          f"{run.end - run.t0:.0f} s run (left out: the first {SETTLE:g} s after the lock{left_out}, and "
          f"{len(mid_jump)} instants between the first and the last player's cut of a jump); + is behind:")
    shown = {n: Shown(rows, fps) for n, rows in logs.items()}
    due = {n: Shown(rows, fps, due=True) for n, rows in logs.items()}
    worst = []
    for name in logs:
        if name == "leader":
            continue
        s, other = offsets(shown["leader"], shown[name], instants, loop, frames)
        d, _ = offsets(due["leader"], due[name], instants, loop, frames)
        worst.append(percentile([abs(v) for v in s], 99))
        mean = sum(s) / len(s) if s else float("nan")
        print(f"  {name:7} shown {stats_line(s, fps)}, mean {mean:+.2f} ms; due {stats_line(d, fps)}; "
              f"another video at {100 * other / max(1, len(instants)):.2f}% of instants")
    late = []
    for name, rows in logs.items():
        lag = [1000 * (r.flip - r.due) for r in rows if any(a <= r.flip <= b for a, b in windows)]
        late.append(f"{name} p50 {percentile(lag, 50):.1f} p99 {percentile(lag, 99):.1f} max "
                    f"{max(lag, default=float('nan')):.0f}")
    print(f"  late    flip - due, ms: {'; '.join(late)}")
    fixes = []
    for name in logs:
        if name != "leader":
            times = corrections(args.work / "run" / name / "console.log", run)
            fixes.append(f"{name} {len(times)}" + (f" (at {', '.join(f'{t:.1f}' for t in times[:5])} s)" if times
                                                    else ""))
    print(f"  rejoin  jumps a follower made of its own to rejoin the leader during the run (console.log): "
          f"{', '.join(fixes)}")
    print(f"  goal    p99 at most 10 ms: {'met' if worst and max(worst) <= 10 else 'NOT met'} "
          f"(worst follower p99 {max(worst, default=float('nan')):.1f} ms)")


def leader_report(run: Run, logs: dict[str, list[Row]], manifest) -> None:
    fps, frames, loop = manifest.fps, manifest.loop_frames, manifest.loop.name
    if run.kill is None:
        return
    back = run.restart if run.restart is not None else run.end
    print(f"leader    killed (SIGKILL) at {run.kill - run.t0:.1f} s, "
          + (f"restarted at {run.restart - run.t0:.1f} s" if run.restart else "not restarted") + ":")
    for name, rows in logs.items():
        if name == "leader":
            continue
        n, gap = gaps(rows, run.kill, back)
        st = run.absent.get(name) or {}
        print(f"  {name:7} while it was gone ({back - run.kill:.1f} s): {n} frames shown "
              f"({(back - run.kill) * fps:.0f} due), longest gap {1000 * gap:.0f} ms; "
              f"/status following={st.get('following')} locked={st.get('locked')}")
    if run.restart is None:
        return
    if run.relocked is None:
        print("  again   the followers did NOT all lock again before the end")
    else:
        print(f"  again   all followers locked again {run.relocked - run.restart:.1f} s after the restart")
    stop = (run.relocked if run.relocked is not None else run.end) + SETTLE
    for name, rows in logs.items():
        if name == "leader":
            continue
        jumped = cut_after(rows, run.restart, stop, loop, frames)
        st = run.after.get(name) or {}
        print(f"  {name:7} " + (f"jumped at {jumped.flip - run.t0:.1f} s to {jumped.video}:{jumped.frame}"
                                if jumped else "no jump") +
              f" after the restart; /status locked={st.get('locked')} offset {st.get('offset_ms')} ms, "
              f"last correction {st.get('last_correction')!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the run once all are locked (default 10)")
    ap.add_argument("--followers", type=int, default=3, help="follower processes (default 3)")
    ap.add_argument("--jump-every", type=float, default=20.0, help="seconds between subject jumps (default 20)")
    ap.add_argument("--kill-at", type=float, help="seconds into the run to SIGKILL the leader (default: never)")
    ap.add_argument("--restart-at", type=float, help="seconds into the run to start a new leader (with --kill-at)")
    ap.add_argument("--media", type=Path, help="a render folder to play (default: the test show, made under --work)")
    ap.add_argument("--screen", default="640x360", help="each player's window (default 640x360)")
    ap.add_argument("--size", type=int, default=256, help="test show: frame side (default 256)")
    ap.add_argument("--fps", type=int, default=24, help="test show: frames per second (default 24)")
    ap.add_argument("--loop-seconds", type=float, default=20.0, help="test show: loop length (default 20)")
    ap.add_argument("--subjects", type=int, default=8, help="test show: subjects (default 8)")
    ap.add_argument("--clip-frames", type=int, default=36, help="test show: transition clip length; 0 = none")
    ap.add_argument("--lead-time", type=float, default=0.5, help="sync.lead_time, as in config.toml (default 0.5)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/uncanny-bench-sync"), help="show, configs and logs")
    ap.add_argument("--report", action="store_true", help="analyse the last run's logs in --work again; run nothing")
    args = ap.parse_args()
    if args.restart_at is not None and (args.kill_at is None or args.restart_at <= args.kill_at):
        ap.error("--restart-at needs an earlier --kill-at")
    clock = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" not in clock:
        raise SystemExit(f"perf_counter is {clock} here, not CLOCK_MONOTONIC: the players' logs would not compare")

    base = args.work / "run"
    if args.report:  # the last run's logs and events, analysed again
        if not (base / "run.json").is_file():
            sys.exit(f"{base / 'run.json'}: no run to report on; run without --report first (same --work)")
        saved = json.loads((base / "run.json").read_text())
        media, run = Path(saved.pop("media")), Run(**saved)
    else:
        media, run = measure(args, base, clock)
    manifest = read_manifest(media / "manifest.json")
    names = ["leader", *sorted((f.parent.name for f in base.glob("f*/frames.tsv")), key=lambda n: int(n[1:]))]
    logs = {n: read_log(base / n / "frames.tsv") for n in names}
    print(f"logs      {', '.join(f'{n} {len(r)} frames' for n, r in logs.items())} in {base}/*/frames.tsv")
    spans, lines = jumps(run, logs, manifest, args)
    offsets_report(run, logs, manifest, args, spans)
    print("\n".join(lines))
    leader_report(run, logs, manifest)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def measure(args, base: Path, clock: str) -> tuple[Path, Run]:
    """Make (or find) the show, run the players, save what was done in run.json beside their logs."""
    media = args.media or make_render(
        args.work / f"show-{args.size}-{args.fps}-{args.loop_seconds:g}-{args.subjects}-{args.clip_frames}",
        args.size, args.fps, args.loop_seconds, args.subjects, clip_frames=args.clip_frames)
    manifest = read_manifest(media / "manifest.json")
    w, h = (int(v) for v in args.screen.lower().split("x"))
    sync_port = free_port()
    for old in base.glob("*/frames.tsv"):
        old.unlink()  # the frame log appends (a restarted player carries on in it)
    leader = Proc("leader", base / "leader", "leader", media, free_port(), sync_port, (w, h), args.lead_time)
    followers = [Proc(f"f{k + 1}", base / f"f{k + 1}", "follower", media, free_port(), sync_port, (w, h),
                      args.lead_time) for k in range(args.followers)]
    print(f"load average before: {os.getloadavg()[0]:.1f} (figures are noisy when other work shares the cores)")
    print(f"bench: 1 leader + {args.followers} followers (run.py play, SDL dummy, {w}x{h}), {media.name}: "
          f"{manifest.size[0]}px {manifest.fps:g} fps, loop {manifest.loop_frames} frames, "
          f"{len(manifest.subjects)} subjects, {len(manifest.transitions)} clips; {args.minutes:g} min, a jump every "
          f"{args.jump_every:g} s" + (f", leader killed at {args.kill_at:g} s" if args.kill_at is not None else "")
          + (f" and restarted at {args.restart_at:g} s" if args.restart_at is not None else "")
          + f"; {cpu_name()}, {os.cpu_count()} cores; clock {clock}")
    started = time.perf_counter()
    try:
        run = drive(leader, followers, args, len(manifest.subjects), bool(manifest.transitions))
    finally:
        codes = {p.name: p.stop() for p in [leader, *followers]}
    print(f"start-up  all followers locked {run.t0 - started:.1f} s after the leader was started; exit codes "
          f"{codes}")
    (base / "run.json").write_text(json.dumps({"media": str(media), **dataclasses.asdict(run)}))
    return media, run


if __name__ == "__main__":
    main()
