"""concat_videos: write_video's segments joined by stream copy are the segments, frame for frame, in one clean mp4."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from sequences.atomic import TEMPORARY as ATOMIC_TEMPORARY
from sequences.video import TEMPORARY, concat_videos, probe, read_video, write_video

FPS = 24
LENGTHS = (1, 37, 2, 3, 1, 12)  # short after long and long after short: x264 delays decoding only from 3 frames on


def frames(n: int, hue: int, side: int = 32) -> np.ndarray:
    """n smooth frames [n,side,side,3] uint8 of a bright disc drifting over a gradient (smooth motion, so x264
    uses B-frames), tinted by `hue` so that each part looks different."""
    y, x = np.mgrid[0:side, 0:side] / side
    out = []
    for t in range(n):
        cx, cy = 0.3 + 0.4 * t / max(n, 8), 0.5 + 0.2 * np.sin(t / 5)
        disc = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
        rgb = np.stack([x, y, np.full_like(x, hue / 255)], -1) * 160 + disc[..., None] * 90
        out.append(rgb.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def packets(path: Path) -> list[tuple[int, int, bool]]:
    """(dts, pts, keyframe) of every packet in decoding order, straight from ffmpeg's framecrc (nothing decoded)."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0",
                          "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    return [(int(r[1]), int(r[2]), len(r) == 6) for r in rows]


def top_level_boxes(path: Path) -> list[str]:
    """The types of an mp4's top-level boxes, in file order."""
    data, names, at = path.read_bytes(), [], 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        names.append(kind.decode("ascii"))
        at += size if size else len(data)
    return names


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("parts")
    paths = []
    for i, n in enumerate(LENGTHS):
        path = folder / f"{i:02d}-part.mp4"
        assert write_video(path, frames(n, hue=40 * i), FPS) == n
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def joined(parts, tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("joined") / "loop.mp4"
    path.write_bytes(b"an older loop, replaced whole")
    return path, concat_videos(parts, path)


def test_every_segment_starts_with_a_keyframe_and_the_long_one_reorders_frames(parts):
    for part in parts:
        assert packets(part)[0][2], f"{part.name} does not start with a keyframe"
    long = [pts for _, pts, _ in packets(parts[1])]
    assert long != sorted(long), "no B-frames: the test would not exercise x264's decoding delay"


def test_joined_video_is_its_parts_frame_for_frame_in_order(parts, joined):
    path, n = joined
    want = [f for part in parts for f in read_video(part)]
    got = list(read_video(path))
    assert n == len(got) == len(want) == sum(LENGTHS)
    for i, (a, b) in enumerate(zip(got, want)):
        assert np.array_equal(a, b), f"frame {i} differs: the join re-encoded or reordered"


def test_parts_that_last_no_whole_millisecond_join_one_frame_apart(tmp_path):
    """11 frames at 24 fps last 458.33 ms: the concat demuxer, left to the container's millisecond duration, started
    the next part 4/12288 s early and the join was refused (a live show then stopped taking visitors). Sixty such
    parts: where each starts is rounded once, never summed from rounded lengths."""
    lengths = [11, 17, 11, 20, 11] + [11] * 55
    texture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    paths = []
    for i, n in enumerate(lengths):  # a texture sliding sideways: x264's B-frames end the part as they did there
        paths.append(tmp_path / f"{i:02d}.mp4")
        write_video(paths[-1], [np.roll(texture, 2 * t + i, axis=1) for t in range(n)], FPS)
    assert concat_videos(paths, tmp_path / "loop.mp4") == sum(lengths)
    want = [f for part in paths[:5] for f in read_video(part)]
    got = list(read_video(tmp_path / "loop.mp4"))
    assert len(got) == sum(lengths) and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_joined_video_is_h264_yuv420p_bt709_at_a_constant_frame_rate(joined):
    path, n = joined
    meta = probe(path)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p(tv, bt709")
    assert meta["size"] == (32, 32) and meta["fps"] == FPS and meta["frames"] == n
    assert b"colrnclx\x00\x01\x00\x01\x00\x01\x00" in path.read_bytes()  # BT.709 primaries/transfer/matrix, tv range
    rows = packets(path)
    pts = sorted(p for _, p, _ in rows)
    step = pts[1] - pts[0]
    assert pts == [i * step for i in range(n)]  # shown one frame apart, from 0
    dts = [d for d, _, _ in rows]
    assert dts == [dts[0] + i * step for i in range(n)]  # decoded one frame apart: no fudged timestamps
    assert all(d <= p for d, p, _ in rows)


def test_joined_video_has_its_index_before_its_data_and_no_metadata(joined):
    path, _ = joined
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat")
    assert b"Lavf" not in path.read_bytes()  # bitexact: no muxer version string


def test_joining_leaves_only_the_joined_file(parts, joined):
    path, _ = joined
    assert sorted(p.name for p in path.parent.iterdir()) == ["loop.mp4"]
    assert sorted(p.name for p in parts[0].parent.iterdir()) == sorted(p.name for p in parts)


def test_a_part_may_repeat_and_any_path_is_safe_in_the_concat_list(parts, tmp_path):
    odd = tmp_path / "it's a [face]: #1 \\ ü"
    odd.mkdir()
    a = odd / "a 'quoted' part.mp4"
    a.write_bytes(parts[2].read_bytes())
    assert concat_videos([a, parts[0], a], odd / "out: 'x'.mp4") == 2 + 1 + 2
    assert sorted(p.name for p in odd.iterdir()) == ["a 'quoted' part.mp4", "out: 'x'.mp4"]


def test_a_missing_part_is_one_line_naming_it(parts, tmp_path):
    gone = tmp_path / "gone.mp4"
    with pytest.raises(ValueError, match="gone.mp4") as e:
        concat_videos([parts[0], gone], tmp_path / "loop.mp4")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("other, why", [({"side": 48}, "48x48 at 24 fps"), ({"fps": 30}, "32x32 at 30 fps"),
                                        ({"crf": 30}, "parameter sets differ")])
def test_a_part_of_another_size_fps_or_crf_is_refused_in_one_line(parts, tmp_path, other, why):
    odd = tmp_path / "odd.mp4"
    write_video(odd, frames(3, hue=0, side=other.get("side", 32)), other.get("fps", FPS), crf=other.get("crf", 18))
    with pytest.raises(ValueError, match=why) as e:
        concat_videos([parts[1], odd], tmp_path / "loop.mp4")
    assert "odd.mp4" in str(e.value) and "\n" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]


def test_a_failing_ffmpeg_is_one_line_and_leaves_no_temporaries(parts, tmp_path, monkeypatch):
    """An ffmpeg that writes half a file and fails mid-join; the files it saw beside the output are the ones a
    render deletes when it finds them left over (named as video.TEMPORARY and atomic.TEMPORARY)."""
    seen, fake = tmp_path / "seen.txt", tmp_path / "ffmpeg"
    fake.write_text(f"""#!/bin/sh
for a; do [ "$a" = concat ] && joining=1; done
if [ -n "$joining" ]; then
    for a; do out="${{a#file:}}"; done
    echo half > "$out"
    ls -A "$(dirname "$out")" > '{seen}'
    echo "simulated failure" >&2
    exit 1
fi
exec '{imageio_ffmpeg.get_ffmpeg_exe()}' "$@"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"loop\.mp4: ffmpeg failed \(exit 1\): simulated failure") as e:
        concat_videos(parts, out / "loop.mp4")
    assert "\n" not in str(e.value)
    assert list(out.iterdir()) == []
    temporaries = seen.read_text().split()
    assert len(temporaries) == 2
    assert all(TEMPORARY.fullmatch(t) or ATOMIC_TEMPORARY.fullmatch(t) for t in temporaries), temporaries
    assert str(os.getpid()) in " ".join(temporaries)
