"""The player against hostile or broken input: manifests, media folders, OSC datagrams, command floods. Each case
here once stopped the show (an exit, a hang, a stuck black screen, a failed scan) or let input reach outside media."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import time
import types
from pathlib import Path

import pytest

from installation.commands import Command, CommandError, RateLimitedLog, parse_command
from installation.decoder import ffmpeg_command
from installation.osc import OscServer, bundle_problem, decode_datagram
from installation.playback import find_subject
from installation.inbox import coalesced
from installation.playlist import RETRY_AFTER, Playlist, find_manifests, scan
from installation.timing import FrameClock
from sequences.config import Config
from sequences.manifest import ManifestError, read_manifest
from tests.test_player import SIZE, make_player, make_render, run_until, write_video


def manifest_with(folder: Path, **changes) -> Path:
    make_render(folder)
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("changes, words", [
    ({"fps": math.nan}, "fps"), ({"fps": math.inf}, "fps"), ({"fps": 1e9}, "fps"), ({"fps": 0}, "fps"),
    ({"size": [0, 64]}, "size"), ({"size": [-64, 64]}, "size"), ({"size": [10**6, 64]}, "size"),
    ({"size": [63, 64]}, "size"),
    ({"loop": {"file": "loop.m3u8", "frames": 24}}, "not a video file"),
    ({"name": "x" * 70_000}, "'name' must be a name"),  # its /status reply no longer fit a datagram
    ({"name": "two\nlines"}, "'name' must be a name"),
])
def test_bad_manifest_values_are_one_line_errors(tmp_path, changes, words):
    with pytest.raises(ManifestError, match=words):
        read_manifest(manifest_with(tmp_path / "r", **changes))


def test_malformed_json_that_trips_python_is_a_manifest_error(tmp_path):
    path = manifest_with(tmp_path / "r")
    path.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError inside json
    with pytest.raises(ManifestError):
        read_manifest(path)
    raw = json.loads(manifest_with(tmp_path / "s").read_text())
    raw["loop"]["frames"] = 1e999  # inf: OverflowError in int()
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="OverflowError"):
        read_manifest(tmp_path / "s")
    text = (tmp_path / "s" / "manifest.json").read_text()
    (tmp_path / "s" / "manifest.json").write_text(text.replace('"fps": 24', '"fps": ' + "9" * 5000))
    with pytest.raises(ManifestError, match="4300"):  # json's own ValueError: no int of more than 4300 digits
        read_manifest(tmp_path / "s")


def test_an_unreadable_folder_is_a_manifest_error_and_never_fails_the_scan(tmp_path, monkeypatch):
    make_render(tmp_path / "media" / "good", name="good")
    make_render(tmp_path / "locked" / "r", name="r")
    real = Path.is_dir

    def is_dir(self):
        if "locked" in self.parts:  # as for a folder we may not enter (the test may run as root)
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    with pytest.raises(ManifestError, match="Permission"):
        read_manifest(tmp_path / "locked" / "r")
    assert find_manifests([tmp_path / "locked", tmp_path / "media"]) == [tmp_path / "media" / "good" / "manifest.json"]


def test_the_frame_clock_refuses_what_is_not_a_rate():
    for fps, speed in ((math.nan, 1.0), (math.inf, 1.0), (24.0, math.nan), (0.0, 1.0)):
        with pytest.raises(ValueError):
            FrameClock(fps, speed)
    with pytest.raises(ValueError):
        FrameClock(24.0).set_speed(0.0, math.nan)


def test_one_bad_folder_never_fails_the_scan(tmp_path, monkeypatch):
    make_render(tmp_path / "good", name="good")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "manifest.json").write_text("[" * 100_000)
    make_render(tmp_path / "locked", name="locked")
    real = Path.is_file

    def is_file(self):
        if "locked" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    result = scan([tmp_path], {})
    assert [s.name for s in result.sequences] == ["good"]
    assert any("deep" in line for line in result.problems)


def test_a_failed_sequence_is_tried_again_later_or_once_renamed(tmp_path):
    make_render(tmp_path / "a", name="a")
    now = [0.0]
    playlist = Playlist(clock=lambda: now[0])
    playlist.update(scan([tmp_path], {}).sequences)
    playlist.mark_failed("a")
    assert not playlist.playable("a")
    now[0] += RETRY_AFTER
    assert playlist.playable("a")  # a passing failure (a file being copied in) does not bench it for good
    playlist.mark_failed("a")
    (tmp_path / "a").rename(tmp_path / "b")  # same files, same times, another folder: a new render
    playlist.update(scan([tmp_path], {}).sequences)
    assert playlist.playable("a")


def test_digits_that_int_refuses_are_names_not_errors(tmp_path):
    make_render(tmp_path / "a", name="a")
    playlist = Playlist()
    playlist.update(scan([tmp_path], {}).sequences)
    assert playlist.find("²") is None and playlist.find("0").name == "a"
    seq = playlist.get("a")
    assert find_subject(seq, "²") is None and find_subject(seq, "1").name == "s1"


def test_faults_in_commands_are_logged_at_a_trickle(tmp_path, caplog, monkeypatch):
    make_render(tmp_path / "a", name="a")
    p = make_player([tmp_path])
    try:
        assert run_until(p, lambda: p.playback.main is not None)

        def broken(cmd, now):
            raise ValueError(f"cannot {cmd.name}")

        monkeypatch.setattr(p, "apply", broken)
        caplog.clear()
        for _ in range(3):
            for _ in range(100):
                p.submit(Command("pause"))
            p.step()
        assert p.inbox.empty()
        lines = [r for r in caplog.records if r.name == "installation.player"]
        assert 1 <= len(lines) <= 10  # one traceback, then the rate limit: not 300
        assert sum(r.exc_info is not None for r in lines) == 1
    finally:
        p.close()


def test_a_bundle_with_a_negative_element_size_is_refused_at_once():
    evil = b"#bundle\0" + b"\0" * 8 + (-8).to_bytes(4, "big", signed=True)  # 20 bytes: python-osc loops forever
    assert bundle_problem(evil) == "bad element size -8"
    assert decode_datagram(evil, ("127.0.0.1", 1), received=0.0, problems=RateLimitedLog(__import__("logging")
                                                                                          .getLogger("t"))) == []
    message = b"/next\0\0\0,\0\0\0"  # 12 bytes
    good = b"#bundle\0" + b"\0" * 8 + (len(message)).to_bytes(4, "big") + message
    nested = good
    for _ in range(10):
        nested = b"#bundle\0" + b"\0" * 8 + len(nested).to_bytes(4, "big") + nested
    assert bundle_problem(good) is None and "nested" in bundle_problem(nested)
    commands = decode_datagram(good + len(message).to_bytes(4, "big") + message, ("127.0.0.1", 1), received=0.0,
                               problems=RateLimitedLog(__import__("logging").getLogger("t")))
    assert [c.name for c in commands] == ["next", "next"]


def test_python_osc_cannot_flood_the_log(caplog):
    problems = RateLimitedLog(logging.getLogger("t"))
    junk = b"#bundle\0" + b"\0" * 8 + (b"\0\0\0\4" + b"junk") * 2000  # python-osc logs each junk element, in full
    assert bundle_problem(junk) == "an element is neither a message nor a bundle"
    unknown = b"/next\0\0\0," + b"z" * 3000 + b"\0" * 4  # python-osc logs each unknown type tag
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert decode_datagram(junk, ("127.0.0.1", 1), received=0.0, problems=problems) == []
            decode_datagram(unknown, ("127.0.0.1", 1), received=0.0, problems=problems)
    assert len(caplog.records) <= 10 and all(len(r.getMessage()) < 300 for r in caplog.records)


def test_a_flood_of_moves_costs_one_move_of_the_same_meaning():
    batch = [Command("subject", 1), Command("next"), Command("pause"), Command("sequence", "b"), Command("blackout"),
             Command("subject", 2), Command("speed", 2.0), Command("next"), Command("next")]
    kept = coalesced(batch)  # /subject 2 then two /next: subject 4, as if applied one by one
    assert [(c.name, c.value) for c in kept] == [("pause", None), ("blackout", None), ("subject", 2),
                                                 ("speed", 2.0), ("next", 2)]
    assert [(c.name, c.value) for c in coalesced([Command("next")] * 100)] == [("next", 100)]
    assert [(c.name, c.value) for c in coalesced([Command("next"), Command("prev"), Command("prev")])] == [("prev", 1)]
    assert [(c.name, c.value) for c in coalesced([Command("next_sequence")] * 3)] == [("next_sequence", 3)]
    assert coalesced([Command("subject", k) for k in range(100)]) == [Command("subject", 99)]


def test_a_jump_that_cannot_start_keeps_the_picture(tmp_path):
    make_render(tmp_path / "a", name="a")
    make_render(tmp_path / "b", name="b")
    p = make_player([tmp_path], default_sequence="a")
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.main is not None and pb.main.primed and pb.seq.name == "a")
        main, seq = p.playback.main, p.playback.seq
        b = p.playlist.get("b")  # a size no manifest may hold: place() refuses it
        p.playlist.sequences[1] = dataclasses.replace(b, manifest=dataclasses.replace(b.manifest, size=(0, 64)))
        p.submit(Command("sequence", "b"))
        p.step()  # logged, and nothing changed
        assert p.playback.main is main and p.playback.seq is seq
        shown = p.stats.frames_shown
        assert run_until(p, lambda: p.stats.frames_shown > shown + 3)  # the old picture plays on
    finally:
        p.close()


def test_commands_awaiting_the_screen_stay_bounded_when_nothing_is_drawn(tmp_path):
    make_render(tmp_path / "a", name="a")
    p = make_player([tmp_path], blackout_fade=0.0, crossfade=0.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.submit(Command("pause"))
        p.submit(Command("blackout", True))
        assert run_until(p, lambda: p.black_level == 1.0 and p.fade_from is None)
        drawn = p.last_draw
        for _ in range(20):  # paused in black: nothing is drawn, yet /blackout 1 keeps coming
            for _ in range(100):
                p.submit(Command("blackout", True, received=p.clock()))
            p.step()
        assert p.last_draw == drawn  # nothing was drawn that could have emptied it
        assert p.inbox.empty() and len(p.stats.awaiting) <= 256
    finally:
        p.close()


def test_huge_arguments_are_cut_in_messages():
    with pytest.raises(CommandError) as e:
        parse_command("/subject", [b"x" * 100_000])
    assert len(str(e.value)) < 200


def test_replies_are_rate_limited_per_host_and_in_all(monkeypatch):
    import installation.osc

    cfg = Config().override({"osc": {"port": 0}}).osc
    server = OscServer(cfg, submit=lambda c: None)
    frozen = types.SimpleNamespace(**vars(time))
    frozen.monotonic = lambda: 1000.0  # the bucket's clock stands still: nothing refills, however slow the loop
    monkeypatch.setattr(installation.osc, "time", frozen)
    try:
        allowed = sum(server._reply_allowed(("127.0.0.1", 9)) for _ in range(1000))
        other_ports = sum(server._reply_allowed(("127.0.0.1", port)) for port in range(10, 2010))
        other_hosts = sum(server._reply_allowed((f"127.0.{i // 250}.{i % 250 + 1}", 9)) for i in range(2000))
    finally:
        server.close()
    assert 40 <= allowed < 60  # the burst
    assert other_ports == 0  # a flood cycling its (forged) source ports gets no more replies
    assert other_hosts <= 200 - allowed  # nor one forging many hosts: all replies together stay under a cap


def test_ffmpeg_opens_only_plain_local_mp4(tmp_path):
    """Whatever a file is named or holds, the decoder's ffmpeg reads it as MP4/MOV from the local file only: an HLS
    playlist cannot make it open another video."""
    write_video(tmp_path / "elsewhere.mp4", list(range(4)))
    playlist = tmp_path / "loop.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{tmp_path / 'elsewhere.mp4'}\n"
                        "#EXT-X-ENDLIST\n")
    out = subprocess.run(ffmpeg_command(playlist, 0, 24.0, []), capture_output=True, timeout=60)
    assert out.returncode != 0 and out.stdout == b""
    ok = subprocess.run(ffmpeg_command(tmp_path / "elsewhere.mp4", 0, 24.0, []), capture_output=True, timeout=60)
    assert ok.returncode == 0 and len(ok.stdout) == 4 * SIZE * SIZE * 4


def test_a_nan_deadline_does_not_end_the_player(tmp_path):
    make_render(tmp_path / "a", name="a")
    p = make_player([tmp_path])
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.playback.main.next_due_time = lambda now: math.nan  # what a NaN fps made of the frame clock
        for _ in range(5):
            p.step()
        p.playback.main.next_due_time = lambda now: 1 / 0  # and anything else that raises there
        p.step()  # logged, not raised
        del p.playback.main.next_due_time
        shown = p.stats.frames_shown
        assert run_until(p, lambda: p.stats.frames_shown > shown + 3)  # and the show goes on
    finally:
        p.close()


def test_steps_in_one_turn_add_up_in_the_player(tmp_path):
    make_render(tmp_path / "a", name="a", segments=(8, 8, 8, 8))
    p = make_player([tmp_path])
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        for name in ("subject", "next", "next"):
            p.submit(Command(name, 1) if name == "subject" else Command(name))
        p.step()
        assert p.playback.current_subject().name == "s3"
    finally:
        p.close()


def test_a_huge_manifest_is_refused_unread_and_an_unchanged_one_is_not_read_again(tmp_path, monkeypatch):
    """A 100 MB manifest was parsed at every rescan (every 5 s): the picture stalled each time, and memory grew."""
    from installation import playlist
    from sequences import manifest

    big = manifest_with(tmp_path / "media" / "big", skipped=[0] * (manifest.MAX_MANIFEST_BYTES // 2))
    make_render(tmp_path / "media" / "good", name="good")
    with pytest.raises(ManifestError, match="larger than 16 MB"):
        read_manifest(big)
    reads = []
    real = playlist.read_manifest
    monkeypatch.setattr(playlist, "read_manifest", lambda path: reads.append(path) or real(path))
    reported, known = {}, {}
    first = scan([tmp_path / "media"], reported, known)
    assert [e.name for e in first.sequences] == ["good"] and len(reads) == 2  # the big one refused, once reported
    again = scan([tmp_path / "media"], reported, known)
    assert again.sequences == first.sequences and not again.problems
    assert len(reads) == 3  # the refused one is tried again (it may be fixed); the good one, unchanged, is not read
    (tmp_path / "media" / "good" / "manifest.json").touch()  # rewritten: read again
    scan([tmp_path / "media"], reported, known)
    assert len(reads) == 5


def test_links_leading_out_of_the_media_folder_are_not_played(tmp_path):
    """A render folder linked in from elsewhere could be chosen over OSC; a video turned into a link after the scan
    was opened; `play --check` read what a concat list named. None of these reach a file outside now."""
    import os

    from installation.cli import check
    from installation.decoder import Decoder, Failed

    make_render(tmp_path / "media" / "a", name="a")
    outside = make_render(tmp_path / "elsewhere" / "secret", name="secret")
    (tmp_path / "media" / "innocent").symlink_to(outside)
    result = scan([tmp_path / "media"], {})
    assert [e.name for e in result.sequences] == ["a"]
    assert any("innocent: a link out of the media folder" in line for line in result.problems)
    assert not scan([tmp_path / "media"], {("outside", tmp_path / "media" / "innocent"): str(outside)}).problems

    loop = result.sequences[0].manifest.loop  # swapped for a link after the scan that checked it
    os.replace(loop, tmp_path / "media" / "a" / "old.mp4")
    loop.symlink_to(outside / "loop.mp4")
    decoder = Decoder(loop, fps=24.0, src_size=(SIZE, SIZE))
    item = decoder.queue.get(timeout=30)
    decoder.close()
    assert isinstance(item, Failed) and "became a link since the media scan" in item.reason

    concat = make_render(tmp_path / "check" / "cc", name="cc")
    (concat / "inner.mp4").symlink_to(outside / "loop.mp4")
    (concat / "loop.mp4").write_text("ffconcat version 1.0\nfile inner.mp4\n")
    assert check(Config(), [tmp_path / "check"]) == 1  # as the player would: not an MP4, so not playable
