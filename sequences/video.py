"""Video files through imageio-ffmpeg: H.264, yuv420p, BT.709, constant frame rate, `+faststart`.

    n = write_video(path, frames, fps=24)     # frames: iterable of uint8 [H,W,3] RGB
    for frame in read_video(path): ...         # uint8 [H,W,3]

Files appear atomically: the encoder writes to a hidden temporary name in the same folder, which is renamed over
`path` only once ffmpeg has finished, so a player or a re-run never sees a half-written video.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
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
