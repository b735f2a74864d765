"""`manifest.json`: what a render made, and what the player reads. Standard library only.

    {
      "format": 1,
      "name": "demo",                      # sequence name
      "fps": 24, "size": [512, 512],       # frame rate and frame size [width, height] of every video
      "generator": {...},                  # Generator.describe()
      "loop": {"file": "loop.mp4", "frames": 480},
      "subjects": [                        # in loop order; frame ranges are inclusive indices into loop.mp4
        {"index": 0, "name": "astronaut", "first_frame": 0, "last_frame": 119,
         "clip": "clips/01-astronaut.mp4", "clip_frames": 130}
      ],
      "transitions": [                     # optional morph clips from one subject's face to another's
        {"from": "astronaut", "to": "obama", "file": "transitions/astronaut--obama.mp4", "frames": 48}
      ],
      "skipped": [{"name": "...", "reason": "..."}],
      "config": "config.toml",             # the resolved settings the render used
      "created": "2026-11-21T23:59:00Z"
    }

All paths are relative to the manifest's folder. `read_manifest` refuses any path that would leave that folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequences.atomic import write_atomic
from sequences.sequence import SequenceError, check_name

FORMAT = 1
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v")  # what a manifest may name as a video: never a playlist (.m3u8, .txt, ...)
MAX_FPS, MAX_SIDE = 240, 8192  # the range render.fps allows; a frame side no display needs more of
# A manifest of 10,000 subjects is about 2 MB: past this, a file is no manifest of ours, and reading it whole would
# stall (or exhaust) the player that rescans it.
MAX_MANIFEST_BYTES = 16 * 2**20


class ManifestError(ValueError):
    """The manifest is missing, unreadable, or describes files outside its folder."""


@dataclass(frozen=True)
class SubjectEntry:
    index: int
    name: str
    first_frame: int
    last_frame: int
    clip: Path | None = None
    clip_frames: int = 0
    final_frame: int = -1  # the loop frame showing the finished face (where a transition clip leads); -1: last_frame

    def __post_init__(self) -> None:
        if self.final_frame < 0:
            object.__setattr__(self, "final_frame", self.last_frame)


@dataclass(frozen=True)
class TransitionEntry:
    source: str
    target: str
    file: Path
    frames: int


@dataclass(frozen=True)
class Manifest:
    path: Path  # the manifest.json itself
    name: str
    fps: float
    size: tuple[int, int]
    loop: Path
    loop_frames: int
    subjects: tuple[SubjectEntry, ...]
    transitions: tuple[TransitionEntry, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def subject(self, key: int | str) -> SubjectEntry | None:
        """A subject by index or by name; None when there is no such subject."""
        for s in self.subjects:
            if s.index == key if isinstance(key, int) else s.name == key:
                return s
        return None

    def transition(self, source: str, target: str) -> TransitionEntry | None:
        for t in self.transitions:
            if t.source == source and t.target == target:
                return t
        return None


def _inside(folder: Path, rel: Any, where: str) -> Path:
    """A video file inside `folder`, named by a relative path."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        raise ManifestError(f"{where}: expected a relative path, got {rel!r}")
    if not rel.lower().endswith(VIDEO_SUFFIXES):
        raise ManifestError(f"{where}: {rel[:80]!r} is not a video file ({', '.join(VIDEO_SUFFIXES)})")
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ManifestError(f"{where}: path {rel!r} leaves the render folder")
    return path


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate a manifest.json (or a folder holding one)."""
    path = Path(path)
    try:
        if path.is_dir():  # an unreadable folder raises PermissionError here: one line too
            path = path / "manifest.json"
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES // 2**20} MB; not a manifest of ours")
        raw = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # bad JSON or UTF-8, an int of 4300+ digits, deep nesting
        raise ManifestError(f"{path}: cannot read manifest: {type(e).__name__}: {str(e)[:200]}") from None
    folder = path.parent
    try:
        if raw.get("format") != FORMAT:
            raise ManifestError(f"{path}: unsupported manifest format {raw.get('format')!r}")
        subjects = tuple(
            SubjectEntry(
                index=int(s["index"]),
                name=check_name(s["name"], "a subject's 'name'"),
                first_frame=int(s["first_frame"]),
                last_frame=int(s["last_frame"]),
                clip=_inside(folder, s["clip"], f"{path}: subject {s['name']!r}") if s.get("clip") else None,
                clip_frames=int(s.get("clip_frames", 0)),
                final_frame=int(s.get("final_frame", -1)),
            )
            for s in raw["subjects"]
        )
        transitions = tuple(
            TransitionEntry(str(t["from"]), str(t["to"]), _inside(folder, t["file"], f"{path}: transition"),
                            int(t["frames"]))
            for t in raw.get("transitions", [])
        )
        width, height = (int(v) for v in raw["size"])
        manifest = Manifest(
            path=path,
            name=check_name(raw["name"], "'name'"),
            fps=float(raw["fps"]),
            size=(width, height),
            loop=_inside(folder, raw["loop"]["file"], f"{path}: loop"),
            loop_frames=int(raw["loop"]["frames"]),
            subjects=subjects,
            transitions=transitions,
            raw=raw,
        )
    except ManifestError:
        raise
    except SequenceError as e:  # a name that is not one: it becomes an OSC argument, a log line, a /status field
        raise ManifestError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RuntimeError, OSError) as e:
        # OverflowError: int(1e999); RuntimeError: a symlink loop while resolving a path
        raise ManifestError(f"{path}: malformed manifest ({type(e).__name__}: {str(e)[:200]})") from None
    if not (math.isfinite(manifest.fps) and 1 <= manifest.fps <= MAX_FPS):
        raise ManifestError(f"{path}: 'fps' must be a number from 1 to {MAX_FPS}, not {manifest.fps}")
    if not all(2 <= side <= MAX_SIDE and side % 2 == 0 for side in manifest.size):  # yuv420p video has even sides
        raise ManifestError(f"{path}: 'size' must be two even sides of 2 to {MAX_SIDE} pixels, "
                            f"not {list(manifest.size)}")
    if manifest.loop_frames <= 0:
        raise ManifestError(f"{path}: the loop's frame count must be positive")
    for s in manifest.subjects:
        if not 0 <= s.first_frame <= s.final_frame <= s.last_frame < manifest.loop_frames:
            raise ManifestError(f"{path}: subject {s.name!r} frame range {s.first_frame}..{s.last_frame} (final "
                                f"{s.final_frame}) is outside the loop's {manifest.loop_frames} frames")
    return manifest


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    """Write `data` (the dict layout above; "format" is added) as folder/manifest.json, atomically."""
    path = Path(folder) / "manifest.json"
    write_atomic(path, json.dumps({"format": FORMAT, **data}, indent=2) + "\n")
    read_manifest(path)  # never leave a manifest the player would refuse
    return path
