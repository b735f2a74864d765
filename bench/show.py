"""The test show the player benches play: a loop of moving soft blobs, cut into subjects, made once and reused.

    folder = make_render(work / "bench-512-24-20-8", size=512, fps=24, seconds=20, subjects=8)
    folder = make_render(work / "clips", 256, 24, 20, 8, clip_frames=24)   # with a transition clip s_k -> s_k+1

Used by bench/player.py, bench/faults.py and bench/sync.py; numpy, imageio-ffmpeg and the manifest writer only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sequences.manifest import write_manifest


def _blobs(size: int, t: float, shift: float = 0.0) -> np.ndarray:
    """One frame: three soft coloured blobs on a circle at phase `t`, over faint stripes; [size,size,3] uint8."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    for c in range(3):
        cx, cy = 0.5 + 0.3 * np.cos(t * (c + 1) + c + shift), 0.5 + 0.3 * np.sin(t * (c + 2) + shift)
        img[..., c] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    img += 0.15 * np.sin(20 * xx + 10 * t)[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _write(path: Path, frames, size: int, fps: int) -> None:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    w = imageio_ffmpeg.write_frames(str(path), (size, size), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                    output_params=["-crf", "18", "-preset", "fast"])
    w.send(None)
    for img in frames:
        w.send(img)
    w.close()


def make_render(folder: Path, size: int, fps: int, seconds: float, subjects: int, clip_frames: int = 0) -> Path:
    """A loop of moving soft blobs, one subject segment per 1/subjects of it; with `clip_frames`, a transition clip
    of that many frames from each subject to the next (the last to the first), blobs moving the other way. Reused
    when already there."""
    frames = int(seconds * fps)
    if (folder / "manifest.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "loop.mp4", (_blobs(size, 2 * np.pi * i / frames) for i in range(frames)), size, fps)
    seg = frames // subjects
    entries = [{"index": k, "name": f"s{k}", "first_frame": k * seg,
                "last_frame": frames - 1 if k == subjects - 1 else (k + 1) * seg - 1} for k in range(subjects)]
    clips = []
    for k in range(subjects if clip_frames else 0):
        rel = f"transitions/s{k}--s{(k + 1) % subjects}.mp4"
        _write(folder / rel, (_blobs(size, -2 * np.pi * i / clip_frames, shift=k) for i in range(clip_frames)),
               size, fps)
        clips.append({"from": f"s{k}", "to": f"s{(k + 1) % subjects}", "file": rel, "frames": clip_frames})
    write_manifest(folder, {"name": "bench", "fps": fps, "size": [size, size],
                            "loop": {"file": "loop.mp4", "frames": frames}, "subjects": entries,
                            "transitions": clips})
    return folder
