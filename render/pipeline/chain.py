"""The main job: render a sequence into a seamlessly looping video of faces growing out of each other.

For subjects 1..N the generator's latent is projected onto each aligned photo in turn, each projection starting
where the previous one ended. That happens twice. The first pass starts from the mean face; the second starts
subject 1 from subject N's first-pass result, so the second pass is a cycle, and it is the loop we keep. A few eased
in-between frames take the loop's last latent back to its first, so the last frame leads into the first.

    report = render_sequence(load_sequence("sequences/demo.toml"), load_config(), quiet=True)

Output folder (media/<name>/ unless `out_dir`): loop.mp4, clips/NN-<subject>.mp4, latents/<subject>.npz (the loop
pass; latents/pass1/ holds the first pass), aligned/, manifest.json, config.toml, contact.png, loss.png. Every
projection is saved as soon as it finishes; running the same command again after a crash or a kill reuses them
and produces the same result.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from render.faces.align import ImageInputError
from render.pipeline.cache import cached_align, load_projection, projection_key, prune_cache, save_projection
from render.kernels.backend import Backend, resolve as resolve_backend
from render.kernels.device import resolve_device, resolve_dtype, set_threads
from render.latent.frames import resample, synthesize
from render.models import load_generator
from render.models.base import Generator
from render.latent.morph import ease_in_out
from render.pipeline.loop import SeamMeter, close_loop, even_pacing, frame_diff
from render.latent.project import Projection, project, takes_whole_step
from render.pipeline.report import save_png, write_contact_sheet, write_loss_plot
from sequences.config import Config
from sequences.atomic import TEMPORARY as ATOMIC_TEMPORARY, write_atomic
from sequences.manifest import write_manifest
from sequences.sequence import Sequence
from sequences.video import TEMPORARY as VIDEO_TEMPORARY, write_video

log = logging.getLogger(__name__)


class RenderError(RuntimeError):
    """The render cannot go on (a bad subject with on_bad_subject = "stop", or nothing left to render)."""


# The folders of a render, and the names of the files we write in them. Only files matching these are ever deleted:
# temporaries of a render killed mid-write (named by their writers: sequences.atomic.TEMPORARY and
# sequences.video.TEMPORARY), and clips, transitions and aligned faces of subjects the sequence no longer has.
OUTPUTS = {"clips": re.compile(r"[0-9]{2}-.+\.mp4"), "transitions": re.compile(r".+--.+\.mp4"),
           "aligned": re.compile(r"[0-9]{2}-.+\.png")}
FOLDERS = ("", "latents", "latents/pass1", *OUTPUTS)


def remove_temporaries(out: Path) -> None:
    for folder in (out / sub for sub in FOLDERS):
        if folder.is_dir():
            for p in folder.iterdir():
                if (ATOMIC_TEMPORARY.fullmatch(p.name) or VIDEO_TEMPORARY.fullmatch(p.name)) and p.is_file():
                    p.unlink(missing_ok=True)


def remove_stale_outputs(out: Path, keep: set[str]) -> None:
    """Delete our clips / transitions / aligned faces that this render did not write (`keep`: paths relative to
    `out`), left by an earlier render of a sequence that has since lost or renamed a subject."""
    for sub, pattern in OUTPUTS.items():
        if (out / sub).is_dir():
            for p in (out / sub).iterdir():
                if pattern.fullmatch(p.name) and f"{sub}/{p.name}" not in keep and p.is_file():
                    p.unlink(missing_ok=True)
                    log.info("removed %s (not part of this render)", p)


@dataclass
class Face:
    index: int  # position in the loop, 0-based
    name: str
    image: np.ndarray  # aligned, uint8 [S,S,3]


@dataclass
class RenderReport:
    out_dir: Path
    loop_frames: int = 0
    seam_ratio: float = float("nan")
    subjects: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    projections_reused: int = 0
    seconds: float = 0.0


def projection_settings(cfg: Config) -> dict:
    """The keyword arguments `project` takes from the config (everything that shapes a trajectory)."""
    p = dataclasses.asdict(cfg.projection)
    p.pop("start")
    return {**p, "steps": cfg.render.steps, "every": cfg.render.every}


def configured_backend(cfg: Config, G: Generator, whole_steps: int = 0) -> Backend:
    """Config `backend` resolved for G (render.kernels.backend.resolve); `whole_steps`: how many projection steps the
    run takes as one function (takes_whole_step), which "auto" compiles past a threshold."""
    return resolve_backend(cfg.general.backend, G.device, G.resolution, whole_steps)


def subject_seed(base: int, pass_no: int, name: str) -> int:
    """A seed per projection that does not shift when another subject is added or skipped."""
    return zlib.crc32(f"{base}:{pass_no}:{name}".encode())


def start_latent(G: Generator, spec: str) -> torch.Tensor | None:
    """projection.start: "mean" -> None (the generator's mean latent), or a .npy file holding [D] or [1, D]."""
    if spec == "mean":
        return None
    try:
        arr = np.load(spec, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RenderError(f"{spec}: cannot read start latent for 'projection.start' ({e})") from None
    if arr.size != G.layout.dim:
        raise RenderError(f"{spec}: start latent has {arr.size} values, the generator's latent has {G.layout.dim}")
    return torch.from_numpy(arr.astype(np.float32).reshape(1, -1))


def align_subjects(seq: Sequence, cfg: Config, out: Path, report: RenderReport, cache: Path | None) -> list[Face]:
    faces = []
    for subject in seq.subjects:
        try:
            aligned = cached_align(subject.image, cfg.align, cache)
        except ImageInputError as e:
            if cfg.render.on_bad_subject == "stop":
                raise RenderError(f"subject {subject.name!r}: {e} (on_bad_subject = \"stop\")") from None
            log.warning("skipping subject %r: %s", subject.name, e)
            report.skipped.append((subject.name, str(e)))
            continue
        if aligned.note:
            log.info("%s: %s", subject.name, aligned.note)
        face = Face(len(faces), subject.name, aligned.image)
        save_png(out / "aligned" / f"{face.index + 1:02d}-{face.name}.png", face.image)
        faces.append(face)
    if not faces:
        raise RenderError(f"{seq.path}: no usable subject left to render")
    return faces


class ChainRenderer:
    """Holds the generator and settings for one sequence render; `run()` does the work."""

    def __init__(self, seq: Sequence, cfg: Config, out: Path, *, quiet: bool = False):
        self.seq, self.cfg, self.out, self.quiet = seq, cfg, out, quiet
        set_threads(cfg.general.threads)
        self.device = resolve_device(cfg.general.device)
        self.dtype = resolve_dtype(cfg.general.dtype, self.device)
        r = cfg.render
        if r.steps < 2 * r.every:
            raise RenderError(f"render.steps ({r.steps}) must be at least twice render.every ({r.every}): each "
                              "subject needs at least two frames besides its first")
        self.G = load_generator(cfg.general.generator, self.device)
        self.settings = projection_settings(cfg)
        # two passes over the subjects (the chain, then the loop). The backend is part of each projection's key (it
        # changes results by rounding), so a sequence that crosses backend.AUTO_MIN_WHOLE_STEPS projects anew
        whole_step = takes_whole_step(self.G, self.settings["loss_size"], self.settings["mse_weight"])
        self.G.backend = configured_backend(cfg, self.G, 2 * len(seq.subjects) * r.steps if whole_step else 0)
        if self.G.backend.compiled:
            log.info("backend: compiled (the first projection step takes seconds longer, a minute the first time)")
        self.cache = Path(cfg.general.cache_dir) if cfg.general.cache_dir else None
        self.report = RenderReport(out)

    # --- projections --------------------------------------------------------------------------------------------
    def project_subject(self, face: Face, start: torch.Tensor | None, pass_no: int, path: Path,
                        overall: tqdm) -> Projection:
        seed = subject_seed(self.cfg.general.seed, pass_no, face.name)
        key = projection_key(self.G, face.image, {**self.settings, "seed": seed, "dtype": str(self.dtype),
                                                  "backend": self.G.backend.name}, start)
        shared = self.cache / f"{key}.npz" if self.cache else None  # the projection cache every command shares
        local = load_projection(path, key)
        done = local or (load_projection(shared, key) if shared else None)
        if done is not None:
            if local is None:  # absent, or left by a render with other settings: this render's latents go there
                save_projection(path, done, key)
            self.report.projections_reused += 1
            overall.update(1)
            return done
        steps = self.settings["steps"]
        with tqdm(total=steps, desc=f"  pass {pass_no} {face.name}", unit="step", leave=False,
                  disable=self.quiet, dynamic_ncols=True) as bar:
            def progress(step: int, loss: float) -> None:
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix(loss=f"{loss:.4f}")

            result = project(self.G, face.image, start=start, seed=seed, dtype=self.dtype, progress=progress,
                             **self.settings)
        save_projection(path, result, key)
        if shared:
            save_projection(shared, result, key)
            prune_cache(self.cache, self.cfg.general.cache_max_mb, keep=shared)
        overall.update(1)
        log.info("pass %d %-16s LPIPS %.4f -> %.4f", pass_no, face.name, result.distances[0], result.distances[-1])
        return result

    def project_all(self, faces: list[Face]) -> tuple[list[Projection], list[Projection]]:
        start = start_latent(self.G, self.cfg.projection.start)
        first, loop = [], []
        with tqdm(total=2 * len(faces), desc=f"{self.seq.name}", unit="subject", disable=self.quiet,
                  dynamic_ncols=True) as overall:
            for face in faces:
                first.append(self.project_subject(face, start, 1, self.out / "latents" / "pass1" /
                                                  f"{face.name}.npz", overall))
                start = first[-1].final
            for face in faces:
                loop.append(self.project_subject(face, start, 2, self.out / "latents" / f"{face.name}.npz", overall))
                start = loop[-1].final
        return first, loop

    # --- frames and videos -------------------------------------------------------------------------------------
    def closed(self, latents: torch.Tensor, frames: list[np.ndarray]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Append eased in-between latents (and their frames) that lead from the last frame back to the first."""
        steps = [frame_diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
        median = float(np.median(steps)) if steps else 0.0
        extra, extra_frames = close_loop(latents[-1], latents[0], frames[-1], frames[0], median,
                                         lambda lat: synthesize(self.G, lat))
        return torch.cat([latents, extra]), frames + extra_frames

    def paced(self, latents: torch.Tensor) -> torch.Tensor:
        """render.pacing = "even": frames spaced by visible change; "steps": one frame every `every` steps."""
        if self.cfg.render.pacing == "steps":
            return latents
        frames = synthesize(self.G, latents)
        return even_pacing(latents, [frame_diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)])

    def write(self, path: Path, frames: Iterable[np.ndarray], meter: SeamMeter | None = None) -> int:
        """Encode frames at the output size, resampled one at a time; `meter` sees every frame written."""
        r = self.cfg.render
        big = (resample(f, r.size, r.filter) for f in frames)
        return write_video(path, big if meter is None else map(meter.add, big), r.fps, crf=r.crf, preset=r.preset)

    def run(self) -> RenderReport:
        t0 = time.perf_counter()
        out, r = self.out, self.cfg.render
        out.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out)
        write_atomic(out / "config.toml", f"# resolved settings of sequence {self.seq.path}\n# ran with device "
                     f"{self.device.type}, dtype {str(self.dtype).removeprefix('torch.')}, backend "
                     f"{self.G.backend.name}\n" + self.cfg.to_toml())
        faces = align_subjects(self.seq, self.cfg, out, self.report, self.cache)
        first, loop = self.project_all(faces)

        # The loop: subject 1's segment starts at its start latent (subject N's first-pass face); every later
        # segment drops its start latent, which is the previous segment's last.
        paced = [self.paced(p.latents) for p in loop]
        segments = [lat if k == 0 else lat[1:] for k, lat in enumerate(paced)]
        latents = torch.cat(segments)
        # Frames stay a list of views at the generator's resolution (no concatenated copies) and are resampled to the
        # output size one at a time while encoding: a long sequence at 1024 px holds one copy of its frames, not three.
        frames = list(synthesize(self.G, latents))
        latents, frames = self.closed(latents, frames)
        bounds, at = [], 0  # per subject: first frame, frame of its final face, last frame
        for k, seg in enumerate(segments):
            final = at + len(seg) - 1
            bounds.append((at, final, final if k < len(segments) - 1 else len(frames) - 1))  # closure: subject N's
            at = final + 1
        # From here on the videos change: the old manifest goes first, so that a render killed before the new one is
        # written never leaves a manifest that describes other videos (the player skips the folder meanwhile).
        (out / "manifest.json").unlink(missing_ok=True)
        meter = SeamMeter()
        self.report.loop_frames = self.write(out / "loop.mp4", frames, meter)
        self.report.seam_ratio = meter.ratio()

        subjects = []
        for face, (a, final, b) in zip(faces, bounds):
            clip_lat, clip_frames = latents[a : b + 1], frames[a : b + 1]
            if r.loop_clips and len(clip_frames) >= 2:
                clip_lat, clip_frames = self.closed(clip_lat, clip_frames)
            clip = f"clips/{face.index + 1:02d}-{face.name}.mp4"
            n = self.write(out / clip, clip_frames)
            subjects.append({"index": face.index, "name": face.name, "first_frame": a, "last_frame": b,
                             "final_frame": final, "clip": clip, "clip_frames": n})
        transitions = self.write_transitions(faces, loop)

        write_contact_sheet(out / "contact.png", self.G, faces, loop)
        write_loss_plot(out / "loss.png", [f.name for f in faces], first, loop)
        write_manifest(out, {
            "name": self.seq.name, "fps": r.fps, "size": [r.size, r.size], "generator": self.G.describe(),
            "loop": {"file": "loop.mp4", "frames": self.report.loop_frames,
                     "seam_ratio": round(self.report.seam_ratio, 4)},
            "subjects": subjects, "transitions": transitions,
            "skipped": [{"name": n, "reason": why} for n, why in self.report.skipped],
            "config": "config.toml", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        remove_stale_outputs(out, {s["clip"] for s in subjects} | {t["file"] for t in transitions}
                             | {f"aligned/{f.index + 1:02d}-{f.name}.png" for f in faces})
        self.report.subjects = [f.name for f in faces]
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def write_transitions(self, faces: list[Face], loop: list[Projection]) -> list[dict]:
        """Eased morph clips from one subject's final face to another's, for the player's subject jumps. A clip ends on
        the frame at its target's `final_frame` in loop.mp4, where the player carries on."""
        r = self.cfg.render
        if r.transitions == "none" or len(faces) < 2:
            return []
        n = len(faces)
        if r.transitions == "consecutive":
            pairs = [(i, (i + 1) % n) for i in range(n)]
        else:
            pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        count = max(2, round(r.transition_seconds * r.fps))
        t = torch.from_numpy(ease_in_out(count)).float()[:, None]  # [count, 1]
        entries = []
        for i, j in pairs:
            a, b = loop[i].final, loop[j].final  # [1, D]
            frames = synthesize(self.G, a * (1 - t) + b * t)
            rel = f"transitions/{faces[i].name}--{faces[j].name}.mp4"
            entries.append({"from": faces[i].name, "to": faces[j].name, "file": rel,
                            "frames": self.write(self.out / rel, frames)})
        return entries


def sequence_config(seq: Sequence, base: Config, overrides: dict | None = None) -> Config:
    """`base` settings, then the sequence file's overrides, then `overrides` (the CLI's)."""
    cfg = seq.config(base)
    return cfg.override(overrides, source="command line") if overrides else cfg


def output_dir(seq: Sequence, cfg: Config, out_dir: Path | None = None) -> Path:
    return Path(out_dir) if out_dir else Path(cfg.general.media_dir) / seq.name


def render_sequence(seq: Sequence, base: Config, *, out_dir: Path | None = None, overrides: dict | None = None,
                    quiet: bool = False) -> RenderReport:
    """Render one sequence with `base` settings, the sequence file's overrides, then `overrides` (the CLI's)."""
    cfg = sequence_config(seq, base, overrides)
    return ChainRenderer(seq, cfg, output_dir(seq, cfg, out_dir), quiet=quiet).run()
