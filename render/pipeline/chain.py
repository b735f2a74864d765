"""The main job: render a sequence into a seamlessly looping video of faces growing out of each other.

The render is a face graph (render/pipeline/graph.py): every subject gets a *home*, its projection from the mean
face, and an *edge*, its projection starting from the previous subject's home, so each subject's visible
optimisation starts from the previous subject's face. A subject's *segment* of the loop is its edge's frames, then
eased in-betweens to its home: it starts on the previous home's picture and ends on its own, and the segments join
into a loop with no closure. Homes are independent of each other, and so are edges once the homes exist; a change to
the sequence re-runs only the tasks whose inputs changed (a subject added in the middle: its home, the edges into and
out of it, two segments).

    report = render_sequence(load_sequence("sequences/demo.toml"), load_config(), quiet=True)
    print(plan_sequence(load_sequence("sequences/demo.toml"), load_config()).text())   # what a render would run

Output folder (media/<name>/ unless `out_dir`): loop.mp4 (the segments joined by stream copy), segments/,
clips/, transitions/, latents/homes/<subject>.npz, latents/edges/<from>--<to>.npz, aligned/, manifest.json,
config.toml, contact.png, loss.png. Every projection and segment is saved as soon as it is made; running the same
command again after a crash or a kill reuses them and produces the same result.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from render.faces.align import ImageInputError
from render.faces.degradation import NO_RESTORE, Condition, Restore, resolve_restore
from render.pipeline.cache import (align_key, cached_align, load_projection, lookup_align, projection_key,
                                   prune_cache, save_projection)
from render.kernels.backend import Backend, resolve as resolve_backend
from render.kernels.device import resolve_device, resolve_dtype, set_threads
from render.latent.frames import synthesize
from render.models import load_generator
from render.models.base import Generator
from render.models.loading.checks import printable
from render.latent.morph import ease_in_out
from render.pipeline.graph import Plan, derived_key, edge_id, neighbours, plan_tasks
from render.latent.upscale import key_settings as upscale_key
from render.pipeline.segments import Segment, largest_join, make_segment, write
from render.latent.project import Projection, project, takes_whole_step
from render.pipeline.report import save_png, write_contact_sheet, write_loss_plot
from sequences.config import Config
from sequences.atomic import RENDER_OWNER, SETTINGS_HEADER, TEMPORARY as ATOMIC_TEMPORARY, UNREADABLE, write_atomic
from sequences.manifest import ManifestError, read_manifest, write_manifest
from sequences.sequence import Sequence
from sequences.video import TEMPORARY as VIDEO_TEMPORARY, concat_videos

log = logging.getLogger(__name__)


class RenderError(RuntimeError):
    """The render cannot go on (a bad subject with on_bad_subject = "stop", or nothing left to render)."""


# The folders of a render, and the names of the files we write in them. Only files matching these are ever deleted:
# temporaries of a render killed mid-write (named by their writers: sequences.atomic.TEMPORARY and
# sequences.video.TEMPORARY), and our outputs that this render did not write: those of subjects the sequence no
# longer has, of other keys (settings, neighbours), and the two passes of renders made before the face graph
# (latents/*.npz, latents/pass1/*.npz, clips named NN-subject.mp4).
KEYED = r"\.[0-9a-f]{16}\.(mp4|json)"  # what a keyed file's name ends in: 16 hex digits of its key
OUTPUTS = {"clips": re.compile(rf"[0-9]{{2,}}-.+\.mp4|.+{KEYED}"), "transitions": re.compile(r".+--.+\.mp4"),
           "aligned": re.compile(r"[0-9]{2,}-.+\.png"), "segments": re.compile(rf".+{KEYED}"),
           "latents": re.compile(r".+\.npz"), "latents/pass1": re.compile(r".+\.npz"),
           "latents/homes": re.compile(r".+\.npz"), "latents/edges": re.compile(r".+--.+\.npz")}
FOLDERS = ("", *OUTPUTS)
SEGMENT_VERSION = 1  # part of every segment's key: raise it when the frames of a segment change for the same edge
ALIGNED_KEY, ALIGNED_CONDITION = "uncanny-align-key", "uncanny-condition"  # tEXt chunks of aligned/NN-<subject>.png


def aligned_in_folder(out: Path, name: str, key: str) -> tuple[np.ndarray, Condition] | None:
    """The aligned face and its Condition that a render saved in out/aligned/ for subject `name`, if it was aligned
    from the photo and settings of align key `key`; None when there is none, or it was made from others."""
    for p in sorted((out / "aligned").glob(f"[0-9]*-{glob.escape(name)}.png")):
        if not OUTPUTS["aligned"].fullmatch(p.name) or p.name.split("-", 1)[1] != f"{name}.png":
            continue
        try:
            with Image.open(p) as im:
                if im.text.get(ALIGNED_KEY) != key:
                    continue
                return np.asarray(im.convert("RGB")), Condition(*map(float, json.loads(im.text[ALIGNED_CONDITION])))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.debug("%s: not usable for the plan (%s)", p, e)
    return None


def remove_temporaries(out: Path) -> None:
    for folder in (out / sub for sub in FOLDERS):
        if folder.is_dir():
            for p in folder.iterdir():
                if (ATOMIC_TEMPORARY.fullmatch(p.name) or VIDEO_TEMPORARY.fullmatch(p.name)) and p.is_file():
                    p.unlink(missing_ok=True)


def remove_stale_outputs(out: Path, keep: set[str]) -> None:
    """Delete our outputs (OUTPUTS) that this render did not write (`keep`: paths relative to `out`), left by an
    earlier render with other subjects, neighbours or settings; and latents/pass1/ once it is empty."""
    for sub, pattern in OUTPUTS.items():
        if (out / sub).is_dir():
            for p in (out / sub).iterdir():
                if pattern.fullmatch(p.name) and f"{sub}/{p.name}" not in keep and p.is_file():
                    p.unlink(missing_ok=True)
                    log.info("removed %s (not part of this render)", p)
    try:
        (out / "latents" / "pass1").rmdir()  # a render made before the face graph: its first pass is gone now
    except OSError:
        pass


@dataclass
class Face:
    index: int  # position in the loop, 0-based
    name: str
    image: np.ndarray  # aligned, uint8 [S,S,3]
    restore: Restore = NO_RESTORE  # the degradations its projections compare through


@dataclass
class RenderReport:
    out_dir: Path
    loop_frames: int = 0
    seam_ratio: float = float("nan")  # the largest join's: its step over the loop's median step
    subjects: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    projections_run: int = 0
    projections_reused: int = 0
    segments_encoded: int = 0
    segments_reused: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"projections: {self.projections_run} run, {self.projections_reused} reused; segments: "
                f"{self.segments_encoded} encoded, {self.segments_reused} reused")


def projection_settings(cfg: Config) -> dict:
    """The keyword arguments `project` takes from the config (everything that shapes a trajectory)."""
    p = dataclasses.asdict(cfg.projection)
    p.pop("start")
    p.pop("restore")  # a choice resolved per photo (render/faces/degradation.py): projection_inputs keys the result
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
    except OSError as e:
        raise RenderError(f"{spec}: cannot read start latent for 'projection.start' ({e})") from None
    except UNREADABLE:  # np.load's words for any other file are about pickles or zips, which would only mislead
        arr = None
    if not isinstance(arr, np.ndarray):  # a photo, a text file, an .npz archive
        raise RenderError(f"{spec}: 'projection.start' must be a .npy file of one latent (np.save), or \"mean\"")
    if arr.size != G.layout.dim:
        raise RenderError(f"{spec}: start latent has {arr.size} values, the generator's latent has {G.layout.dim}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise RenderError(f"{spec}: start latent must hold numbers, not {arr.dtype}")
    if not np.isfinite(arr).all():  # NaN would draw every frame black, and the render would still "succeed"
        raise RenderError(f"{spec}: start latent holds NaN or infinite values")
    return torch.from_numpy(arr.astype(np.float32).reshape(1, -1))


def align_subjects(seq: Sequence, cfg: Config, out: Path, report: RenderReport, cache: Path | None,
                   resolution: int = 0, align=None) -> list[Face]:
    """The usable subjects as Faces in loop order, each with what its projections restore for a generator of
    `resolution`, their aligned photos saved in out/aligned/. `align(subject)` gives an AlignedFace or raises
    ImageInputError (default: aligned here, through the shared cache); a bad photo skips its subject with one line,
    or stops the render (render.on_bad_subject)."""
    faces = []
    for subject in seq.subjects:
        try:
            aligned = align(subject) if align else cached_align(subject.image, cfg.align, cache)
        except ImageInputError as e:
            if cfg.render.on_bad_subject == "stop":
                raise RenderError(f"subject {subject.name!r}: {e} (on_bad_subject = \"stop\")") from None
            log.warning("skipping subject %r: %s", subject.name, e)
            report.skipped.append((subject.name, str(e)))
            continue
        if aligned.note:
            log.info("%s: %s", subject.name, aligned.note)
        restore = resolve_restore(subject.restore or cfg.projection.restore, aligned.condition, resolution)
        if restore:
            log.info("%s: restoring through %s", subject.name, restore.describe())
        face = Face(len(faces), subject.name, aligned.image, restore)
        # the photo and settings it was aligned from, for a plan without the shared cache (ChainRenderer.plan)
        text = {}
        if aligned.condition is not None:
            try:
                text = {ALIGNED_KEY: align_key(subject.image, cfg.align),
                        ALIGNED_CONDITION: json.dumps(dataclasses.astuple(aligned.condition))}
            except ImageInputError:  # the photo went since it was aligned: the plan aligns it again
                pass
        save_png(out / "aligned" / f"{face.index + 1:02d}-{face.name}.png", face.image, text=text, if_changed=True)
        faces.append(face)
    if not faces:
        raise RenderError(f"{seq.path}: no usable subject left to render")
    return faces


class ChainRenderer:
    """Holds the generator and settings for one sequence render; `run()` does the work, `plan()` says what it would
    do. Runs the face graph's tasks locally, in one process, in an order that respects their dependencies."""

    # Hook for subjects whose aligned face is known already (render/pipeline/live.py: a visitor whose photo was
    # deleted once aligned): a method (subject) -> AlignedFace, raising ImageInputError, that `run` passes to
    # align_subjects as `align`. None: every photo is aligned here, through the shared cache.
    align_subject = None

    def __init__(self, seq: Sequence, cfg: Config, out: Path, *, quiet: bool = False):
        self.seq, self.cfg, self.out, self.quiet = seq, cfg, out, quiet
        set_threads(cfg.general.threads)
        self.device = resolve_device(cfg.general.device)
        self.dtype = resolve_dtype(cfg.general.dtype, self.device)
        r = cfg.render
        if r.steps < 2 * r.every:
            raise RenderError(f"{seq.path}: render.steps ({r.steps}) must be at least twice render.every ({r.every}): "
                              "each subject needs at least two frames besides its first")
        self.G = load_generator(cfg.general.generator, self.device)
        self.settings = projection_settings(cfg)
        # Two projections per subject (home and edge). The backend is part of each projection's key (it changes
        # results by rounding), so it depends on per-subject settings only: adding a subject never changes it.
        whole_step = takes_whole_step(self.G, self.settings["loss_size"], self.settings["mse_weight"])
        home_steps = r.home_steps or round(1.5 * r.steps)
        self.G.backend = configured_backend(cfg, self.G, home_steps + r.steps if whole_step else 0)
        if self.G.backend.compiled:
            log.info("backend: compiled (the first projection step takes seconds longer, a minute the first time)")
        self.cache = Path(cfg.general.cache_dir) if cfg.general.cache_dir else None
        self.report = RenderReport(out)
        upscale_key(r, self.G.resolution)  # render.upscale that cannot run stops the render now, not after projecting
        self.start = start_latent(self.G, cfg.projection.start)

    # --- keys ---------------------------------------------------------------------------------------------------
    def projection_inputs(self, role: str, face: Face) -> dict:
        """Everything but the photo and the start that shapes a home's or an edge's projection (`project`'s keyword
        arguments, and the dtype and backend it runs on, and what it restores, if anything)."""
        seed = subject_seed(self.cfg.general.seed, 1 if role == "home" else 2, face.name)
        steps = self.settings["steps"]
        if role == "home":
            steps = self.cfg.render.home_steps or round(1.5 * steps)
        restore = {"restore": face.restore.settings()} if face.restore else {}  # a plain one keeps its key
        return {**self.settings, "steps": steps, "seed": seed, "dtype": str(self.dtype),
                "backend": self.G.backend.name, **restore}

    def home_key(self, face: Face) -> str:
        return projection_key(self.G, face.image, self.projection_inputs("home", face), self.start)

    def edge_key(self, face: Face, home_before: Projection) -> str:
        return projection_key(self.G, face.image, self.projection_inputs("edge", face), home_before.final)

    def segment_key(self, edge_key: str, home_key: str) -> str:
        """A segment is made of its edge's latents and the home it ends on, rendered with the output settings."""
        r = self.cfg.render
        output = {"size": r.size, "fps": r.fps, "crf": r.crf, "preset": r.preset, "filter": r.filter,
                  "pacing": r.pacing, "loop_clips": r.loop_clips, "version": SEGMENT_VERSION,
                  **upscale_key(r, self.G.resolution)}
        return derived_key(edge_key, home_key, settings=output)

    def transition_key(self, home_a: str, home_b: str) -> str:
        r = self.cfg.render
        return derived_key(home_a, home_b, settings={"size": r.size, "fps": r.fps, "crf": r.crf, "preset": r.preset,
                                                     "filter": r.filter, "seconds": r.transition_seconds,
                                                     **upscale_key(r, self.G.resolution)})

    @staticmethod
    def home_path(name: str) -> str:
        return f"latents/homes/{name}.npz"

    @staticmethod
    def edge_path(source: str, target: str) -> str:
        return f"latents/edges/{edge_id(source, target)}.npz"

    @staticmethod
    def segment_path(name: str, key: str) -> str:
        return f"segments/{name}.{key[:16]}.mp4"

    @staticmethod
    def clip_path(name: str, key: str) -> str:
        return f"clips/{name}.{key[:16]}.mp4"

    # --- projections --------------------------------------------------------------------------------------------
    def stored(self, rel: str, key: str) -> Projection | None:
        """A projection made from `key`, from the render folder or the shared cache (copied into the folder)."""
        local = load_projection(self.out / rel, key)
        if local is not None:
            return local
        shared = load_projection(self.cache / f"{key}.npz", key) if self.cache else None
        if shared is not None:
            save_projection(self.out / rel, shared, key)
        return shared

    def projection(self, face: Face, start: torch.Tensor | None, role: str, rel: str, key: str,
                   overall: tqdm) -> Projection:
        """The stored projection under `key`, or a new one (saved at once, here and in the shared cache)."""
        done = self.stored(rel, key)
        if done is not None:
            self.report.projections_reused += 1
            overall.update(1)
            return done
        inputs = self.projection_inputs(role, face)
        steps = inputs["steps"]
        with tqdm(total=steps, desc=f"  {role} {face.name}", unit="step", leave=False, disable=self.quiet,
                  dynamic_ncols=True) as bar:
            def progress(step: int, loss: float) -> None:
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix(loss=f"{loss:.4f}")

            t0 = time.perf_counter()
            result = project(self.G, face.image, start=start, seed=inputs["seed"], dtype=self.dtype, progress=progress,
                             restore=face.restore, **{**self.settings, "steps": steps})
        save_projection(self.out / rel, result, key)
        if self.cache:
            shared = self.cache / f"{key}.npz"
            save_projection(shared, result, key)
            prune_cache(self.cache, self.cfg.general.cache_max_mb, keep=shared)
        self.report.projections_run += 1
        overall.update(1)
        log.info("%-4s %-24s LPIPS %.4f -> %.4f (%.1f s)", role, rel.rsplit("/", 1)[-1].removesuffix(".npz"),
                 result.distances[0], result.distances[-1], time.perf_counter() - t0)
        return result

    def project_graph(self, faces: list[Face]) -> tuple[dict[str, Projection], dict[str, Projection], dict]:
        """Every home, then every edge (each from the home before it). Returns homes and edges by subject name and
        the keys of both by task id."""
        homes, edges, keys = {}, {}, {}
        with tqdm(total=2 * len(faces), desc=f"{self.seq.name}", unit="projection", disable=self.quiet,
                  dynamic_ncols=True) as overall:
            for face in faces:
                key = keys[f"home:{face.name}"] = self.home_key(face)
                homes[face.name] = self.projection(face, self.start, "home", self.home_path(face.name), key, overall)
            for face in faces:
                source = faces[face.index - 1].name
                key = keys[f"edge:{edge_id(source, face.name)}"] = self.edge_key(face, homes[source])
                edges[face.name] = self.projection(face, homes[source].final, "edge",
                                                   self.edge_path(source, face.name), key, overall)
        return homes, edges, keys

    # --- segments and the loop ----------------------------------------------------------------------------
    def segment(self, face: Face, edge: Projection, home: Projection, key: str) -> Segment:
        """Subject `face`'s segment of the loop (and its clip), encoded once under `key`, or the stored one."""
        rel = self.segment_path(face.name, key)
        seg = Segment.load(self.out, rel)
        if seg is not None:
            self.report.segments_reused += 1
            return seg
        seg = make_segment(self.G, edge, home.final, self.cfg.render, self.out, rel, self.clip_path(face.name, key))
        self.report.segments_encoded += 1
        return seg

    def run(self) -> RenderReport:
        """Render the sequence here, in one process: every home, then every edge, then every segment, then the
        loop (a farm runs the same tasks elsewhere: render/farm/)."""
        t0 = time.perf_counter()
        self.prepare()
        faces = align_subjects(self.seq, self.cfg, self.out, self.report, self.cache, self.G.resolution,
                               align=self.align_subject)
        homes, edges, keys = self.project_graph(faces)
        segments = []
        for face in faces:
            source = faces[face.index - 1].name
            segments.append(self.segment(face, edges[face.name], homes[face.name],
                                         self.segment_key(keys[f"edge:{edge_id(source, face.name)}"],
                                                          keys[f"home:{face.name}"])))
        return self.finish(faces, homes, edges, keys, segments, t0)

    def prepare(self) -> None:
        """The render folder, clean of a killed render's temporaries."""
        self.out.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.out)

    def write_settings(self) -> None:
        """config.toml: the resolved settings, written with the manifest (`assemble`), so that it always describes
        the videos beside it, also while a render with other settings is under way or after one failed."""
        # a comment ends at a newline, and TOML allows no control characters
        where = printable(str(self.seq.path), limit=10_000)
        write_atomic(self.out / "config.toml", f"{SETTINGS_HEADER}{RENDER_OWNER} {where}\n# ran with device "
                     f"{self.device.type}, dtype {str(self.dtype).removeprefix('torch.')}, backend "
                     f"{self.G.backend.name}\n" + self.cfg.to_toml(), if_changed=True)

    def finish(self, faces: list[Face], homes: dict[str, Projection], edges: dict[str, Projection], keys: dict,
               segments: list[Segment], t0: float) -> RenderReport:
        """The loop, transitions, reports and manifest from the segments (unless nothing changed since they were
        made), then our files this render did not write are removed."""
        state = self.assembly_key([s.file for s in segments], [f.name for f in faces], keys)
        if not self.assembled(state):
            self.assemble(faces, homes, edges, keys, segments, state)
        else:
            log.info("%s: nothing changed since the last render; loop.mp4 and the manifest stand", self.seq.name)
            if not (self.out / "config.toml").is_file():
                self.write_settings()
        transitions = read_manifest(self.out).raw.get("transitions", [])
        keep = {s.file for s in segments} | {s.record for s in segments} | {s.clip for s in segments}
        keep |= {t["file"] for t in transitions} | {f"aligned/{f.index + 1:02d}-{f.name}.png" for f in faces}
        keep |= {self.home_path(f.name) for f in faces}
        keep |= {self.edge_path(faces[f.index - 1].name, f.name) for f in faces}
        remove_stale_outputs(self.out, keep)
        self.report.subjects = [f.name for f in faces]
        self.report.seconds = time.perf_counter() - t0
        log.info("%s: %s; %d loop frames, largest join %.2f, %.1f s", self.seq.name, self.report.summary(),
                 self.report.loop_frames, self.report.seam_ratio, self.report.seconds)
        return self.report

    def assembly_key(self, segment_files: list[str], names: list[str], keys: dict) -> str:
        """What loop.mp4, the reports and the manifest are made of: the segments, the homes (transitions and the
        contact sheet), the subjects and those skipped, and the settings the manifest records."""
        r = self.cfg.render
        homes = [keys.get(f"home:{name}") for name in names]
        edges = sorted(v for k, v in keys.items() if k.startswith("edge:"))
        return derived_key(*segment_files, *homes, *edges, settings={
            "names": names, "skipped": self.report.skipped, "transitions": r.transitions,
            "transition_seconds": r.transition_seconds, "size": r.size, "fps": r.fps, "crf": r.crf,
            "preset": r.preset, "filter": r.filter, "sequence": self.seq.name})

    def assembled(self, state: str) -> bool:
        """Whether the folder's loop.mp4, reports and manifest were made from `state` (a re-run with no change)."""
        try:
            manifest = read_manifest(self.out)
        except ManifestError:
            return False
        if manifest.raw.get("loop", {}).get("state") != state or not manifest.loop.is_file():
            return False
        self.report.loop_frames = manifest.loop_frames
        self.report.seam_ratio = float(manifest.raw["loop"].get("seam_ratio", float("nan")))
        files = ["contact.png", "loss.png", *(t.get("file", "") if isinstance(t, dict) else ""
                                               for t in manifest.raw.get("transitions", []))]
        return all(name and (self.out / name).is_file() for name in files)

    def assemble(self, faces: list[Face], homes: dict, edges: dict, keys: dict, segments: list[Segment],
                 state: str) -> None:
        """loop.mp4 from the segments by stream copy, the transitions, the reports and the manifest."""
        out, r = self.out, self.cfg.render
        # From here on the videos change: the old manifest goes first, so that a render killed before the new one is
        # written never leaves a manifest that describes other videos (the player skips the folder meanwhile).
        (out / "manifest.json").unlink(missing_ok=True)
        self.report.loop_frames = concat_videos([out / s.file for s in segments], out / "loop.mp4")
        self.report.seam_ratio = largest_join(segments)
        subjects, at = [], 0
        for face, seg in zip(faces, segments):
            subjects.append({"index": face.index, "name": face.name, "first_frame": at,
                             "last_frame": at + seg.frames - 1, "final_frame": at + seg.frames - 1,
                             "clip": seg.clip, "clip_frames": seg.clip_frames})
            at += seg.frames
        transitions = self.write_transitions(faces, homes, keys)
        write_contact_sheet(out / "contact.png", self.G, faces, [edges[f.name] for f in faces],
                            [homes[f.name] for f in faces])
        write_loss_plot(out / "loss.png", [f.name for f in faces], [homes[f.name] for f in faces],
                        [edges[f.name] for f in faces])
        self.write_settings()
        write_manifest(out, {
            "name": self.seq.name, "fps": r.fps, "size": [r.size, r.size], "generator": self.G.describe(),
            "loop": {"file": "loop.mp4", "frames": self.report.loop_frames,
                     "seam_ratio": round(self.report.seam_ratio, 4), "segments": [s.file for s in segments],
                     "state": state},
            "subjects": subjects, "transitions": transitions,
            "skipped": [{"name": n, "reason": why} for n, why in self.report.skipped],
            "config": "config.toml", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    def write_transitions(self, faces: list[Face], homes: dict[str, Projection], keys: dict) -> list[dict]:
        """Eased morph clips from one subject's home face to another's, for the player's subject jumps. A clip ends
        on the frame at its target's `final_frame` in loop.mp4 (its home's picture), where the player carries on.
        Each is encoded once under the keys of the two homes and the output settings."""
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
            a, b = faces[i].name, faces[j].name
            key = self.transition_key(keys[f"home:{a}"], keys[f"home:{b}"])
            rel = f"transitions/{a}--{b}.{key[:16]}.mp4"
            if (self.out / rel).is_file():
                frames = count  # written by an earlier render under the same key
            else:
                frames = write(self.out / rel, synthesize(self.G, homes[a].final * (1 - t) + homes[b].final * t),
                               self.cfg.render)
            entries.append({"from": a, "to": b, "file": rel, "frames": frames})
        return entries

    # --- the plan -------------------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The face graph of this render with the keys known now and which tasks are done, running nothing: aligned
        faces come from the shared cache or the render folder's aligned/ (made from the same photo and settings),
        projections from the render folder or the cache."""
        names, faces, done, outputs, skipped = [], {}, set(), {}, []
        keys: dict[str, str | None] = {}
        last_skipped = self.skipped_last_time()
        for subject in self.seq.subjects:
            aligned = None
            try:
                key = keys[f"align:{subject.name}"] = align_key(subject.image, self.cfg.align)
                found = lookup_align(subject.image, self.cfg.align, self.cache, key)
                aligned = (found.image, found.condition) if found else aligned_in_folder(self.out, subject.name, key)
            except ImageInputError:
                pass  # its align task will say why
            if aligned is None and subject.name in last_skipped:
                skipped.append((subject.name, last_skipped[subject.name]))
                continue
            names.append(subject.name)
            if aligned is not None:
                image, condition = aligned
                restore = resolve_restore(subject.restore or self.cfg.projection.restore, condition,
                                          self.G.resolution)
                faces[subject.name] = Face(len(faces), subject.name, image, restore)
                done.add(f"align:{subject.name}")
        homes = {}
        for name in names:
            tid, outputs[f"home:{name}"] = f"home:{name}", self.home_path(name)
            if name in faces:
                keys[tid] = self.home_key(faces[name])
                homes[name] = self.stored_quietly(self.home_path(name), keys[tid])
                if homes[name] is not None:
                    done.add(tid)
        for source, target in neighbours(names):
            tid = f"edge:{edge_id(source, target)}"
            outputs[tid] = self.edge_path(source, target)
            if target in faces and homes.get(source) is not None:
                keys[tid] = self.edge_key(faces[target], homes[source])
                if self.stored_quietly(outputs[tid], keys[tid]) is not None:
                    done.add(tid)
            sid = f"segment:{edge_id(source, target)}"
            if keys.get(tid) and keys.get(f"home:{target}"):
                keys[sid] = self.segment_key(keys[tid], keys[f"home:{target}"])
                outputs[sid] = self.segment_path(target, keys[sid])
                if (self.out / outputs[sid]).is_file():
                    done.add(sid)
        segments = [outputs.get(f"segment:{edge_id(s, t)}") for s, t in neighbours(names)]
        self.report.skipped = list(skipped)  # part of the assembly's key, as in the render
        if all(segments) and len(faces) == len(names) and self.assembled(self.assembly_key(segments, names, keys)):
            done.add("assemble")
        tasks = plan_tasks(names, align_keys={k: v for k, v in keys.items() if k.startswith("align:")}, home_keys={k: v for k, v in keys.items() if k.startswith("home:")},
                           edge_keys={k: v for k, v in keys.items() if k.startswith("edge:")},
                           segment_keys={k: v for k, v in keys.items() if k.startswith("segment:")}, done=done,
                           outputs=outputs)
        return Plan(self.seq.name, str(self.out), tasks, skipped)

    def skipped_last_time(self) -> dict[str, str]:
        """{subject: why} of the subjects the render folder's manifest says were skipped, whose photo has not changed
        since (a render aligns a photo again each time and, from the same file, fails the same way)."""
        try:
            manifest = read_manifest(self.out)
            written = (self.out / "manifest.json").stat().st_mtime_ns
        except (ManifestError, OSError):
            return {}
        photos = {s.name: s.image for s in self.seq.subjects}
        out = {}
        for entry in manifest.raw.get("skipped", []):
            name, why = entry.get("name"), entry.get("reason", "")
            try:
                if name in photos and photos[name].stat().st_mtime_ns <= written:
                    out[name] = why
            except OSError:
                out[name] = why  # still missing
        return out

    def stored_quietly(self, rel: str, key: str) -> Projection | None:
        """stored() without copying anything into the render folder (a plan writes nothing)."""
        return load_projection(self.out / rel, key) or (load_projection(self.cache / f"{key}.npz", key)
                                                        if self.cache else None)


def sequence_config(seq: Sequence, base: Config, overrides: dict | None = None) -> Config:
    """`base` settings, then the sequence file's overrides, then `overrides` (the CLI's)."""
    cfg = seq.config(base)
    return cfg.override(overrides, source="command line") if overrides else cfg


def output_dir(seq: Sequence, cfg: Config, out_dir: Path | None = None) -> Path:
    return Path(out_dir) if out_dir else Path(cfg.general.media_dir) / seq.name


def plan_sequence(seq: Sequence, base: Config, *, out_dir: Path | None = None, overrides: dict | None = None
                  ) -> Plan:
    """The face graph a render of `seq` would run, with what is done already; runs nothing."""
    cfg = sequence_config(seq, base, overrides)
    return ChainRenderer(seq, cfg, output_dir(seq, cfg, out_dir), quiet=True).plan()


def render_sequence(seq: Sequence, base: Config, *, out_dir: Path | None = None, overrides: dict | None = None,
                    quiet: bool = False) -> RenderReport:
    """Render one sequence with `base` settings, the sequence file's overrides, then `overrides` (the CLI's)."""
    cfg = sequence_config(seq, base, overrides)
    return ChainRenderer(seq, cfg, output_dir(seq, cfg, out_dir), quiet=quiet).run()
