"""Gallery player: frame clock, decoder wrap, playlist, jumps and transition clips, missing/corrupt videos.

Tests make their own tiny renders: 64x64 videos whose every frame shows its index as a 4x4 grid of black/white
16 px blocks (16 bits), so what is on screen can be read back. pygame runs on SDL's dummy video driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from installation.decoder import Decoder, End, Failed, Frame  # noqa: E402
from installation.playlist import Playlist, scan  # noqa: E402
from installation.timing import FrameClock, loop_index, place, subject_at  # noqa: E402
from sequences.config import Config  # noqa: E402
from sequences.manifest import write_manifest  # noqa: E402

SIZE = 64
ROOT = Path(__file__).resolve().parent.parent


def pattern(index: int) -> np.ndarray:
    """A 64x64 RGB frame showing `index` as 16 bits, most significant bit top left."""
    bits = [(index >> (15 - k)) & 1 for k in range(16)]
    grid = np.array(bits, np.uint8).reshape(4, 4) * 255
    return np.repeat(np.repeat(grid, 16, 0), 16, 1)[:, :, None].repeat(3, 2)


def read_pattern(rgb: np.ndarray) -> int:
    """The index shown by a frame from `pattern` (any size; samples block centres)."""
    h, w = rgb.shape[:2]
    value = 0
    for k in range(16):
        r, c = divmod(k, 4)
        value = value << 1 | int(rgb[int((r + 0.5) * h / 4), int((c + 0.5) * w / 4), :3].mean() > 127)
    return value


def write_video(path: Path, indices: list[int], fps: float = 24) -> None:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    w = imageio_ffmpeg.write_frames(str(path), (SIZE, SIZE), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                    macro_block_size=16, output_params=["-crf", "10", "-g", "12"])
    w.send(None)
    for i in indices:
        w.send(pattern(i))
    w.close()


def make_render(folder: Path, name: str = "seq", segments: tuple[int, ...] = (8, 8, 8), fps: float = 24,
                transitions: dict[tuple[int, int], int] | None = None) -> Path:
    """A render folder: loop.mp4 of sum(segments) frames (frame i shows i), one subject per segment, and for each
    (a, b) -> n in `transitions` a clip of n frames showing 1000 + 100 * a + 10 * b + i."""
    total = sum(segments)
    write_video(folder / "loop.mp4", list(range(total)), fps)
    subjects, first = [], 0
    for k, n in enumerate(segments):
        subjects.append({"index": k, "name": f"s{k}", "first_frame": first, "last_frame": first + n - 1,
                         "final_frame": first + max(n - 3, 0)})  # the finished face, a little before the end
        first += n
    entries = []
    for (a, b), n in (transitions or {}).items():
        rel = f"transitions/s{a}--s{b}.mp4"
        write_video(folder / rel, [1000 + 100 * a + 10 * b + i for i in range(n)], fps)
        entries.append({"from": f"s{a}", "to": f"s{b}", "file": rel, "frames": n})
    write_manifest(folder, {"name": name, "fps": fps, "size": [SIZE, SIZE],
                            "loop": {"file": "loop.mp4", "frames": total}, "subjects": subjects,
                            "transitions": entries})
    return folder


def frame_index(frame: Frame) -> int:
    rgbx = np.frombuffer(frame.data, np.uint8).reshape(SIZE, SIZE, 4)
    return read_pattern(rgbx)


# ----- pure pieces -------------------------------------------------------------------------------------------------

def test_frame_clock_paces_by_time_pauses_and_changes_speed():
    c = FrameClock(fps=24.0)
    assert c.due(5.0) == 0 and not c.started
    c.start(100.0)
    assert c.due(100.0) == 0 and c.due(100.0 + 1 / 24) == 1 and c.due(101.0) == 24
    assert c.due(100.0 + 1e6) == 24_000_000  # weeks later: still exact, no drift
    c.pause(101.0)
    assert c.due(200.0) == 24 and c.next_due_time(200.0) == float("inf")
    c.resume(300.0)
    assert c.due(300.5) == 36
    c.set_speed(300.5, 2.0)
    assert c.due(301.0) == 60
    assert c.next_due_time(301.0) == pytest.approx(301.0 + 1 / 48)
    c.pause(302.0)  # 84 frames due, but say only frame 70 was decoded in time: freeze on what is on screen
    c.hold(70.999)
    assert c.due(303.0) == 70
    c.resume(310.0)
    assert c.due(310.0) == 70 and c.due(310.0 + 1 / 48) == 71


def test_loop_index_wraps_exactly_and_subject_lookup():
    assert [loop_index(20, p, 24) for p in range(6)] == [20, 21, 22, 23, 0, 1]
    firsts = [0, 8, 16]
    assert [subject_at(firsts, i) for i in (0, 7, 8, 15, 16, 23)] == [0, 0, 1, 1, 2, 2]


def test_place_fit_and_fill_keep_aspect():
    fit = place((512, 512), (1920, 1080), "fit")
    assert fit.scale == (1080, 1080) and fit.crop == (0, 0, 1080, 1080) and fit.dest == (420, 0)
    fill = place((512, 512), (1920, 1080), "fill")
    assert fill.scale == (1920, 1920) and fill.crop == (0, 420, 1920, 1080) and fill.dest == (0, 0)


# ----- decoder -----------------------------------------------------------------------------------------------------

def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False). The deadline is generous: a slow or
    busy machine only makes a passing test take longer, never fail."""
    end = time.perf_counter() + timeout
    while True:
        if predicate():
            return True
        if time.perf_counter() >= end:
            return False
        time.sleep(interval)


def drain(dec: Decoder, n: int, timeout: float = 10.0) -> list:
    items, end = [], time.perf_counter() + timeout
    while len(items) < n and time.perf_counter() < end:
        item = dec.get()
        if item is None:
            time.sleep(0.002)
            continue
        items.append(item)
        if not isinstance(item, Frame):
            break
    return items


def test_decoder_wraps_exactly_at_the_loop_point(tmp_path):
    make_render(tmp_path, segments=(10, 10))
    dec = Decoder(tmp_path / "loop.mp4", fps=24, start=15, loop=True, src_size=(SIZE, SIZE), buffer_frames=4)
    items = drain(dec, 30)
    dec.close()
    assert all(isinstance(i, Frame) for i in items) and len(items) == 30
    labels = [f.index for f in items]
    shown = [frame_index(f) for f in items]
    expected = [loop_index(15, p, 20) for p in range(30)]
    assert labels == expected and shown == expected  # 15..19, 0..19, 0..4: no gap, no repeat
    assert [f.pos for f in items] == list(range(30))
    assert dec.join()


def test_decoder_reports_missing_and_corrupt_videos(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    for path in (tmp_path / "missing.mp4", bad):
        dec = Decoder(path, fps=24, loop=True, src_size=(SIZE, SIZE))
        items = drain(dec, 1)
        assert len(items) == 1 and isinstance(items[0], Failed) and str(path) in items[0].reason
        assert dec.join()


def test_decoder_clip_ends_and_scales(tmp_path):
    write_video(tmp_path / "clip.mp4", [7, 8, 9])
    dec = Decoder(tmp_path / "clip.mp4", fps=24, loop=False, src_size=(SIZE, SIZE), scale=(128, 128),
                  crop=(0, 32, 128, 64))
    items = drain(dec, 10)
    assert [type(i) for i in items] == [Frame, Frame, Frame, End]
    assert dec.out_size == (128, 64) and len(items[0].data) == 128 * 64 * 4


# ----- playlist ----------------------------------------------------------------------------------------------------

def test_scan_skips_missing_and_half_written_renders_once(tmp_path):
    make_render(tmp_path / "a", "a", segments=(4,))
    make_render(tmp_path / "b", "b", segments=(4,))
    (tmp_path / "b" / "loop.mp4").unlink()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text('{"format": 1, "name": "c", "fps": 24')  # half-written
    reported: dict = {}
    first = scan([tmp_path], reported)
    assert [s.name for s in first.sequences] == ["a"] and len(first.problems) == 2
    assert any("missing" in p for p in first.problems)
    assert scan([tmp_path], reported).problems == ()  # reported once, not at every rescan
    pl = Playlist()
    assert pl.update(first.sequences) == (["a"], [], [])
    assert pl.find(0).name == "a" and pl.find("a").name == "a" and pl.find(3) is None and pl.find("zz") is None


# ----- the player, headless ----------------------------------------------------------------------------------------

class ManualClock:
    """A player clock that moves only when the test moves it, so what depends on time (fades, frames due) comes out
    the same however fast the machine runs. Decoders still deliver in real time; wait for them with run_until."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ticking(clock: ManualClock, cond, seconds: float = 0.02):
    """`cond` for run_until that first moves `clock` on by `seconds`: each turn of the player sees the same step of
    time, whatever the turn cost."""

    def check():
        clock.advance(seconds)
        return cond()

    return check


def make_player(sources, clock=None, **player):
    from installation.player import Player

    # move_interval 0: moves are made as they come, one turn after another (the flood tests set it)
    cfg = Config().override({"player": {"windowed": True, "window_size": [SIZE, SIZE], "attract_after": 0.0,
                                        "move_interval": 0.0, **player}, "osc": {"enabled": False}})
    p = Player(cfg, sources, clock=clock or time.perf_counter)
    p.open()
    return p


def screen_index(p) -> int:
    import pygame

    return read_pattern(pygame.surfarray.pixels3d(p.canvas.screen).swapaxes(0, 1))


def run_until(p, cond, timeout: float = 10.0) -> bool:
    """Turn the player's main loop until `cond()` holds (True) or `timeout` seconds pass (False)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        p.step()
        if cond():
            return True
    return False


def test_player_jump_crossfades_then_plays_the_target(tmp_path):
    from installation.commands import Command

    make_render(tmp_path / "seq", segments=(8, 8, 8))
    p = make_player([tmp_path], crossfade=0.1)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.submit(Command("subject", 2))
        assert run_until(p, lambda: p.status(p.clock())["subject"] == 2)
        assert run_until(p, lambda: p.fade_from is None)
        assert run_until(p, lambda: p.playback.main.shown.index >= 17)
        assert 16 <= screen_index(p) <= 23  # the picture is the target's segment
    finally:
        p.close()


def test_player_plays_transition_clip_then_continues_at_target(tmp_path):
    from installation.commands import Command

    make_render(tmp_path / "seq", segments=(12, 12, 12), transitions={(0, 2): 6})
    p = make_player([tmp_path], crossfade=0.0, transition_fade=0.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        assert p.playback.current_subject().name == "s0"
        p.submit(Command("subject", "s2"))
        seen = []

        def record():
            if p.playback.main is not None and p.playback.main.shown is not None and p.fade_from is None:
                seen.append(screen_index(p))
            return p.playback.clip_subject is None and len(seen) > 3 and seen[-1] < 1000

        assert run_until(p, record)
        clip = [v for v in seen if v >= 1000]
        assert clip and set(clip) <= {1020 + i for i in range(6)} and clip == sorted(clip)
        after = seen[len(seen) - seen[::-1].index(clip[-1]):]  # what followed the clip
        assert after and after[0] == 24 + 12 - 3  # into the loop where the clip ends: s2's finished face
        assert p.status(p.clock())["subject"] == 2
    finally:
        p.close()


def test_player_skips_corrupt_sequence_and_plays_on(tmp_path):
    make_render(tmp_path / "a_bad", "a_bad", segments=(4,))
    (tmp_path / "a_bad" / "loop.mp4").write_bytes(b"not a video at all" * 100)
    make_render(tmp_path / "b_good", "b_good", segments=(6,))
    p = make_player([tmp_path])
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.seq is not None and pb.seq.name == "b_good" and pb.main.primed)
        assert not p.playlist.playable("a_bad")
        assert run_until(p, lambda: p.playback.main.wraps >= 1)  # keeps looping
    finally:
        p.close()


def test_import_player_leaves_torch_out():
    code = ("import sys, installation.player, installation.cli, installation.osc; "
            "bad = [m for m in ('torch', 'render', 'open_clip') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_poster_cache_is_bounded_and_jumps_show_the_target_at_once(tmp_path):
    from installation.commands import Command
    from installation.stream import PosterCache

    cache = PosterCache(max_bytes=10)
    for k in range(5):
        cache.put(("v", k), bytes(4))
    assert cache.bytes <= 10 and cache.get(("v", 0)) is None and cache.get(("v", 4)) == bytes(4)

    make_render(tmp_path / "seq", segments=(6, 6, 6))
    p = make_player([tmp_path], crossfade=0.0)
    try:
        # one pass: first frames kept
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.wraps >= 1)
        p.submit(Command("subject", 1))
        p.step()  # one turn of the loop: no decoder has delivered anything yet
        assert p.playback.main.from_poster and screen_index(p) == 6
    finally:
        p.close()
