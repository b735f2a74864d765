"""Video files through imageio-ffmpeg: H.264, yuv420p, BT.709, constant frame rate, `+faststart`.

    n = write_video(path, frames, fps=24)     # frames: iterable of uint8 [H,W,3] RGB
    for frame in read_video(path): ...         # uint8 [H,W,3]
    n = concat_videos([a, b, c], path)         # join write_video's files by stream copy: no re-encode

Files appear atomically: the encoder writes to a hidden temporary name in the same folder, which is renamed over
`path` only once ffmpeg has finished, so a player or a re-run never sees a half-written video.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def encoder_args(fps: float, crf: int, preset: str) -> list[str]:
    """ffmpeg output options: gallery-safe H.264 that every player decodes, with correct colour tags.

    ffmpeg converts RGB to YUV with the BT.601 matrix unless told otherwise; we convert with BT.709 and tag BT.709,
    so colours are right in browsers, VLC and the player alike. `bitexact` keeps encoder version strings out of the
    file, so the same frames give the same bytes.
    """
    return [
        "-vf", "scale=out_color_matrix=bt709:out_range=tv,"
        "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv",
        "-crf", str(crf), "-preset", preset,
        "-g", str(max(1, round(fps))),  # a keyframe every second: the player seeks to a subject quickly
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
        "-movflags", "+faststart", "-fps_mode", "cfr", "-r", f"{fps}",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
    ]


# The names of write_video's temporaries, ".<stem>.<pid>.tmp.mp4", which an encode killed midway leaves behind: a
# render deletes these in its own folders, and nothing else.
TEMPORARY = re.compile(r"\..+\.[0-9]+\.tmp\.mp4")


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, *, crf: int = 18,
                preset: str = "medium") -> int:
    """Encode RGB uint8 frames (all of one size, even sides) to `path` through a temporary in the same folder
    (named as TEMPORARY for an .mp4), renamed when complete. Returns the number of frames written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer, count = None, 0
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"{path}: H.264 yuv420p needs even frame sides, got {w}x{h}")
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                    quality=None, macro_block_size=1, ffmpeg_log_level="error",
                    output_params=encoder_args(fps, crf, preset),
                )
                writer.send(None)  # start the generator
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
            count += 1
        if writer is None:
            raise ValueError(f"{path}: no frames to write")
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return count


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of `path` as uint8 [H,W,3] RGB."""
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(gen)
    w, h = meta["size"]
    try:
        for buf in gen:
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        gen.close()


def probe(path: str | Path) -> dict:
    """imageio-ffmpeg's metadata for `path` (size, fps, duration, codec...) and the exact frame count."""
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(gen)
    gen.close()
    meta["frames"], _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return meta


@dataclass(frozen=True)
class _Stream:
    """The video stream of an mp4 as its packets say, read by stream copy (nothing decoded)."""
    codec: str
    size: str          # "WxH"
    time_base: str     # "1/12288"
    step: int          # one frame, in time_base units
    extradata: str     # size and CRC of the H.264 parameter sets (SPS/PPS)
    delay: int         # frames the first packet is decoded before it is shown (x264's B-frame delay: 0..2)
    keyframe_first: bool
    pts: tuple[int, ...]  # in decoding order

    @property
    def fps(self) -> float:
        num, den = map(int, self.time_base.split("/"))
        return den / (num * self.step)


def _ffmpeg(args: list[str], what: Path) -> str:
    """Run ffmpeg quietly; its stdout, or one RuntimeError line naming `what` with ffmpeg's last word."""
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args],
                       capture_output=True, text=True, errors="replace")
    if r.returncode != 0:
        last = next((line.strip() for line in reversed(r.stderr.splitlines()) if line.strip()), "no message")
        raise RuntimeError(f"{what}: ffmpeg failed (exit {r.returncode}): {last}")
    return r.stdout


def _stream(path: Path) -> _Stream:
    """The first video stream's packets of `path`, through ffmpeg's framecrc muxer (header lines, then one line
    per packet: stream, dts, pts, duration, size, crc, and flags unless it is a plain keyframe)."""
    out = _ffmpeg(["-i", f"file:{path}", "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"], path)
    head = dict(line[1:].split(" 0: ", 1) for line in out.splitlines() if line.startswith("#") and " 0: " in line)
    packets = [[f.strip() for f in line.split(",")] for line in out.splitlines() if line and line[0] != "#"]
    if not packets:
        raise ValueError(f"{path}: no video frames")
    dts, pts, duration = (int(v) for v in packets[0][1:4])
    return _Stream(codec=head.get("codec_id", "?"), size=head.get("dimensions", "?"), time_base=head.get("tb", "?"),
                   step=duration, extradata=head.get("extradata", "none"),
                   delay=(pts - dts) // duration if duration > 0 else 0, keyframe_first=len(packets[0]) == 6,
                   pts=tuple(int(p[2]) for p in packets))


def _concat_entry(path: Path, microseconds: int) -> str:
    """The lines of an ffconcat list for `path`: its name, literally (an absolute `file:` URL, so no protocol or
    relative-path surprises, in single quotes, a quote inside written as '\\'' by ffmpeg's quoting rules), and how
    long it lasts. Without that duration the demuxer starts the next part where the container's own duration ends,
    which the mp4 muxer rounds to a millisecond, one way or the other depending on the B-frames of the part's end:
    11 frames at 24 fps (458.33 ms) then start the next part 4/12288 s early, and the join is refused."""
    url = f"file:{path.resolve()}"
    if "\n" in url or "\r" in url:
        raise ValueError(f"{path}: ffmpeg's concat list cannot name a path with a line break")
    return "file '" + url.replace("'", "'\\''") + f"'\nduration {microseconds}us\n"


def concat_videos(parts: list[str | Path], path: str | Path) -> int:
    """Join H.264 mp4 files written by write_video (same size, fps and encoder settings) into `path` by stream copy:
    the frames are the parts' frames, bit for bit, in order. Returns the number of frames.

    Like write_video: a temporary in the same folder (named as TEMPORARY) renamed when complete, `+faststart`,
    bitexact with no metadata; the colour tags travel with the stream. Each part must start with a keyframe (x264
    starts every file with an IDR frame) and carry the same SPS/PPS, which x264 derives from size, fps, crf and
    preset alone, never from a file's length or content; parts that differ are refused before anything is written.

    Timestamps: a part's frames are shown from the part's offset on (pts, from the concat demuxer), but with B-frames
    (every preset but ultrafast) x264 starts decoding a file of three frames or more two frames early (dts = pts - 2
    frames) and a shorter one not at all, so a short part followed by a long one would step dts backwards, and
    ffmpeg would fudge the timestamps. The `setts` bitstream filter renumbers decoding times one frame apart,
    starting as early as the largest delay of any part: dts never exceeds pts, and the frame rate stays constant.
    The joined file's frame times are checked before it replaces `path`.
    """
    path = Path(path)
    parts = [Path(p) for p in parts]
    if not parts:
        raise ValueError(f"{path}: no videos to join")
    for part in parts:
        if not part.is_file():
            raise ValueError(f"{part}: no such video to join into {path}")
    streams = [_stream(part) for part in parts]
    first = streams[0]
    for part, s in zip(parts, streams):
        if s.codec != "h264" or not s.keyframe_first:
            raise ValueError(f"{part}: not an H.264 video starting with a keyframe ({s.codec}), cannot join by copy")
        if (s.size, s.time_base, s.step) != (first.size, first.time_base, first.step):
            raise ValueError(f"{part}: {s.size} at {s.fps:g} fps, but {parts[0]} is {first.size} at "
                             f"{first.fps:g} fps; parts must match to join")
        if s.extradata != first.extradata:
            raise ValueError(f"{part}: encoded with other settings than {parts[0]} (H.264 parameter sets differ: "
                             f"crf or preset); parts must match to join")
    delay = max(s.delay for s in streams)
    frames = sum(len(s.pts) for s in streams)
    # Where each part starts, in whole microseconds (the concat demuxer's unit) rounded from the exact time, so that
    # the rounding never adds up over many parts; see _concat_entry.
    num, den = map(int, first.time_base.split("/"))
    starts = [round(Fraction(n * first.step * num * 1_000_000, den))
              for n in itertools.accumulate((len(s.pts) for s in streams), initial=0)]

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fd, listing = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # atomic.TEMPORARY
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("ffconcat version 1.0\n" + "".join(_concat_entry(part, until - at) for part, at, until in
                                                       zip(parts, starts, starts[1:])))
        _ffmpeg(["-f", "concat", "-safe", "0", "-i", f"file:{Path(listing).resolve()}", "-map", "0:v:0",
                 "-c", "copy", "-bsf:v", f"setts=pts=PTS:dts=(N-{delay})*{first.step}",
                 "-movflags", "+faststart", "-fflags", "+bitexact", "-map_metadata", "-1",
                 "-f", "mp4", "-y", f"file:{tmp.resolve()}"], path)
        joined = _stream(tmp)
        if sorted(joined.pts) != [i * joined.step for i in range(frames)]:
            raise RuntimeError(f"{path}: ffmpeg joined {len(joined.pts)} frames of {frames} or not one frame apart; "
                               f"nothing written")
        os.replace(tmp, path)
    finally:
        Path(listing).unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return frames
