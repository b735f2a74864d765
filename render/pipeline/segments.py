"""A face graph segment as videos: subject k's edge frames, easing out of the previous home's picture, then eased
in-betweens into its own home (render/pipeline/graph.py), encoded without its first frame (the previous segment's
last picture), with the subject's clip closed into a loop of its own. Frames are upscaled as they stream to the encoder (render.upscale,
render/latent/upscale.py); the clip repeats the segment's frames, which the upscaler's memo does not run again.

    seg = make_segment(G, edge, home_final, cfg.render, folder, "segments/obama.0123456789abcdef.mp4",
                       "clips/obama.0123456789abcdef.mp4")

A pure function of the generator, two results and the render settings, writing into `folder`: the local renderer
writes into the render folder, a farm worker into a scratch folder whose files go back to the driver as bytes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from render.latent.frames import synthesize
from render.latent.project import Projection
from render.latent.upscale import output_frames
from render.models.base import Generator
from render.pipeline.loop import close_loop, even_pacing, frame_diff
from sequences.atomic import write_atomic
from sequences.video import write_video

# A segment's first frames accelerate out of the previous home's picture, where the eased walk into it came to rest:
# with even pacing every join is then a small step, whatever the lengths of the two edges it joins
EASE_IN = 4


@dataclass
class Segment:
    """An encoded segment of the loop and what the loop needs to know of it (segments/<subject>.<key>.json)."""

    file: str  # relative to the render folder
    frames: int  # encoded frames: the segment without its first (the previous segment's last picture)
    steps: list[float]  # picture change between consecutive frames, from its dropped first frame on: steps[0] is
    # the join with the previous segment
    clip: str = ""
    clip_frames: int = 0

    @property
    def record(self) -> str:
        return self.file.replace(".mp4", ".json")

    @classmethod
    def load(cls, folder: Path, rel: str) -> Segment | None:
        """The segment stored at `rel` with its record and clip, or None (absent, unreadable, incomplete)."""
        path = Path(folder) / rel
        try:
            seg = cls(**json.loads(path.with_suffix(".json").read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if seg.file != rel or not path.is_file() or (seg.clip and not (Path(folder) / seg.clip).is_file()):
            return None
        return seg

    def save(self, folder: Path) -> None:
        write_atomic(Path(folder) / self.record, json.dumps(dataclasses.asdict(self)) + "\n")


def largest_join(segments: list[Segment]) -> float:
    """The seam ratio of the loop's worst join: the step from a segment's last frame into the next one over the
    median step of the whole loop (render/pipeline/loop.py's measure, at every join instead of one seam)."""
    median = float(np.median([step for seg in segments for step in seg.steps]))
    return max(seg.steps[0] for seg in segments) / max(median, 1e-6)


def paced(G: Generator, latents: torch.Tensor, pacing: str, ease_in: int = 0) -> torch.Tensor:
    """render.pacing = "even": frames spaced by visible change (the first `ease_in` accelerating from rest);
    "steps": one frame every `every` steps."""
    if pacing == "steps":
        return latents
    frames = synthesize(G, latents)
    return even_pacing(latents, [frame_diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)], ease_in)


def eased(G: Generator, latents: torch.Tensor, frames: list[np.ndarray], to_latent: torch.Tensor,
          to_frame: np.ndarray) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Append eased in-betweens from the last latent to `to_latent` (whose frame is `to_frame`, not appended), as
    many as keep every step within the median step of `frames` (render/pipeline/loop.py)."""
    steps = [frame_diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    median = float(np.median(steps)) if steps else 0.0
    extra, extra_frames = close_loop(latents[-1], to_latent, frames[-1], to_frame, median,
                                     lambda lat: synthesize(G, lat))
    return torch.cat([latents, extra]), frames + extra_frames


def closed(G: Generator, latents: torch.Tensor, frames: list[np.ndarray]) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Append eased in-between latents (and their frames) that lead from the last frame back to the first."""
    return eased(G, latents, frames, latents[0], frames[0])


def write(path: Path, frames: Iterable[np.ndarray], render_cfg) -> int:
    """Encode frames at the output size, upscaled (render.upscale) and resampled one at a time."""
    r = render_cfg
    return write_video(path, output_frames(frames, r), r.fps, crf=r.crf, preset=r.preset)


def segment_frames(G: Generator, edge: Projection, home_final: torch.Tensor,
                   render_cfg) -> tuple[torch.Tensor, list[np.ndarray]]:
    """A segment's latents and frames at the generator's size: edge[k] paced, eased into its home, the home last;
    the first is the previous segment's last picture."""
    latents = paced(G, edge.latents, render_cfg.pacing, EASE_IN)
    frames = list(synthesize(G, latents))
    home_frame = synthesize(G, home_final)[0]
    latents, frames = eased(G, latents, frames, home_final[0], home_frame)
    return torch.cat([latents, home_final]), frames + [home_frame]


def make_segment(G: Generator, edge: Projection, home_final: torch.Tensor, render_cfg, folder: Path, rel: str,
                 clip_rel: str) -> Segment:
    """Encode a segment (edge[k], eased into its home, `home_final` [1, D]) to folder/rel and its clip to
    folder/clip_rel, and store its record beside it."""
    folder = Path(folder)
    latents, frames = segment_frames(G, edge, home_final, render_cfg)
    steps = [frame_diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    seg = Segment(rel, write(folder / rel, frames[1:], render_cfg), steps, clip_rel)
    clip_frames = frames[1:]
    if render_cfg.loop_clips and seg.frames >= 2:
        _, clip_frames = closed(G, latents[1:], frames[1:])
    seg.clip_frames = write(folder / clip_rel, clip_frames, render_cfg)
    seg.save(folder)
    return seg
