"""The player against hostile or broken input: manifests, media folders, OSC datagrams, command floods. Each case
here once stopped the show (an exit, a hang, a stuck black screen, a failed scan) or let input reach outside media."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from installation.commands import Command, CommandError, parse_command
from installation.decoder import ffmpeg_command
from installation.osc import OscServer, bundle_problem, decode_datagram
from installation.player import superseded_jumps_dropped
from installation.playlist import RETRY_AFTER, Playlist, scan
from installation.commands import RateLimitedLog
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
    ({"loop": {"file": "loop.m3u8", "frames": 24}}, "not a video file"),
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


def test_a_flood_of_jumps_costs_one_jump():
    batch = [Command("subject", 1), Command("next"), Command("pause"), Command("sequence", "b"), Command("blackout"),
             Command("subject", 2), Command("next")]
    kept = superseded_jumps_dropped(batch)
    assert [(c.name, c.value) for c in kept] == [("pause", None), ("blackout", None), ("subject", 2), ("next", None)]
    assert superseded_jumps_dropped([Command("next"), Command("next")]) == [Command("next"), Command("next")]


def test_huge_arguments_are_cut_in_messages():
    with pytest.raises(CommandError) as e:
        parse_command("/subject", [b"x" * 100_000])
    assert len(str(e.value)) < 200


def test_replies_to_one_sender_are_rate_limited():
    cfg = Config().override({"osc": {"port": 0}}).osc
    server = OscServer(cfg, submit=lambda c: None)
    try:
        allowed = sum(server._reply_allowed(("127.0.0.1", 9)) for _ in range(1000))
    finally:
        server.close()
    assert 40 <= allowed < 60  # the burst, plus what refills while the loop runs


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
        assert run_until(p, lambda: p.main is not None and p.main.primed)
        p.main.next_due_time = lambda now: math.nan  # what a NaN fps made of the frame clock
        for _ in range(5):
            p.step()
        p.main.next_due_time = lambda now: 1 / 0  # and anything else that raises there
        p.step()  # logged, not raised
        del p.main.next_due_time
        shown = p.frames_shown
        assert run_until(p, lambda: p.frames_shown > shown + 3)  # and the show goes on
    finally:
        p.close()
