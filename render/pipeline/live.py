"""The live inbox: visitors' portraits join a show's running loop one at a time, with retention control.

    seq = load_sequence("show.toml")
    show = LiveShow(seq, seq.config(load_config()), Path("media/show"), Path("inbox"))  # the file's settings too
    show.watch()                       # forever: take complete photos, align, append, render, announce
    show.watch(until_idle=True)        # until the inbox and its queue are empty
    show.forget("anna-20261204-181502")

A photo's way, each step leaving the disk in a state that a restarted watcher finishes from:

 1. `inbox/<file>` is taken once complete (InboxScanner) by renaming it to `inbox/queue/<arrival ns>-<file>`: the
    queue is on disk, and its names sort in arrival order.
 2. The first queued photo is aligned. A bad one goes to `inbox/rejected/` with `<file>.txt` (its one-line reason);
    one whose bytes match a visitor's is dropped (added once). A good one's aligned face is written to
    `<out>/live/faces/<name>.npz`, then the visitor enters `<out>/live/subjects.json` (atomically; the oldest
    visitors past `max_subjects` leave it in the same write), then the photo is deleted (or, with keep_photos, moved
    to `<out>/live/photos/`). Killed before the registry write: the photo is still queued and is aligned again;
    after it: the photo's hash is registered, and it is dropped as the duplicate it is.
 3. The show renders: the sequence file's subjects, then the visitors in arrival order (LiveRenderer, a
    ChainRenderer: a new visitor runs its home, the edge into it, the edge out of it, and two segments). The loop
    is written under a new name and the manifest replaced last, so the player never sees a half-added subject.
 4. The player is told (`/reload`, then `/subject N`); the registry records it, so a restart announces only what
    was not announced.

A visitor's projections are kept in the render folder only, never in the shared projection cache, and the photo
never enters the align cache: `forget` and retirement need only clean the render folder (README, "Live inbox").
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from render.faces.align import AlignedFace, ImageInputError, align_file
from render.faces.degradation import Condition
from render.latent.project import ProjectionError
from render.pipeline.cache import cached_align
from render.pipeline.chain import ChainRenderer, RenderError, RenderReport
from render.pipeline.report import write_contact_sheet, write_loss_plot
from render.pipeline.segments import largest_join
from sequences.atomic import UNREADABLE, write_atomic
from sequences.config import Config
from sequences.manifest import ManifestError, read_manifest, write_manifest
from sequences.sequence import Sequence, Subject
from sequences.video import concat_videos

log = logging.getLogger(__name__)

# Names that uploaders (browsers, rsync, scp, phone apps) give a file while it is still being written.
IN_PROGRESS = (".part", ".partial", ".tmp", ".crdownload", ".download")
LOOP = re.compile(r"loop(\.[0-9a-f]{16})?\.mp4")  # loop.mp4 (run.py render) and loop.<state>.mp4 (the watcher)


class LiveError(RuntimeError):
    """A live command cannot do what was asked (forget a name that is not a visitor's)."""


# ----------------------------------------------------------------------------------------------------- the inbox


def in_progress(name: str) -> bool:
    """A dot file or an upload's temporary name: never taken."""
    return name.startswith(".") or name.lower().endswith(IN_PROGRESS)


class InboxScanner:
    """Which files of the inbox are complete. A file is complete when its size and modification time have stood
    still for `settle` seconds, or at once when its time is older than that (moved in whole: `mv` keeps the time).
    Only the inbox's own files count: not its folders (queue/, rejected/), links or names in progress."""

    def __init__(self, inbox: Path, settle: float):
        self.inbox, self.settle = Path(inbox), settle
        self.seen: dict[str, tuple[int, int, float, float]] = {}  # name -> size, mtime_ns, still since, first seen

    def candidates(self) -> list[os.DirEntry]:
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            return []
        return [e for e in entries if not in_progress(e.name) and e.is_file(follow_symlinks=False)]

    def scan(self, now: float | None = None) -> list[Path]:
        """The complete files, in arrival order (first seen, then modification time, then name)."""
        now = time.time() if now is None else now
        seen, ready = {}, []
        for entry in self.candidates():
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            size, mtime = st.st_size, st.st_mtime_ns
            before = self.seen.get(entry.name)
            still = before[2] if before and before[:2] == (size, mtime) else now
            first = before[3] if before else now
            seen[entry.name] = (size, mtime, still, first)
            if now - still >= self.settle or now - mtime / 1e9 >= self.settle:
                ready.append((first, mtime, entry.name))
        self.seen = seen
        return [self.inbox / name for _, _, name in sorted(ready)]


NAME_BYTES = 200  # a queued photo's name at most (its arrival time goes before it; file names end at 255 bytes)
MAX_PHOTO_BYTES = 256 * 2**20  # a photo larger is rejected unread: a phone's is a few MB, a 100 MP TIFF some 300
OWN_FOLDERS = ("queue", "rejected")  # the inbox's own folders, which an upload may not stand in the way of


def shown(name: str) -> str:
    """A file name as a log line shows it: as it is, or escaped when it holds a newline or a terminal escape (a
    name can forge a log line)."""
    return name if name.isprintable() else ascii(name)


def clear_own_names(inbox: Path) -> None:
    """An upload named like one of the inbox's own folders ("queue", "rejected"), or a link in that place, is
    renamed aside (to "queue.upload"): the folder must be made there, and a link would send photos elsewhere. It is
    then an upload like any other (taken, and rejected if it is no photo)."""
    for own in OWN_FOLDERS:
        path = Path(inbox) / own
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            aside = path.with_name(f"{own}.upload")
            n = 1
            while aside.exists() or aside.is_symlink():
                n += 1
                aside = path.with_name(f"{own}-{n}.upload")
            os.rename(path, aside)
            log.warning("%s: an upload in the place of the inbox's own folder; renamed %s", path, aside.name)


def short_name(name: str, limit: int = NAME_BYTES) -> str:
    """`name` cut to at most `limit` bytes of UTF-8, its extension kept: what the queue and rejected/ call a photo
    whose name was longer (the name a visitor's phone gave it is not worth a show that stops)."""
    if len(name.encode()) <= limit:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    stem = name[:len(name) - len(suffix)]
    while stem and len((stem + suffix).encode()) > limit:
        stem = stem[:-1]
    return stem + suffix


def claim(inbox: Path, photo: Path, arrival_ns: int) -> Path | None:
    """Move a complete photo into the on-disk queue (a rename in the same folder tree: atomic). None if it vanished;
    OSError if it cannot be moved."""
    queued = Path(inbox) / "queue" / f"{arrival_ns:020d}-{short_name(photo.name)}"
    queued.parent.mkdir(exist_ok=True)
    try:
        os.rename(photo, queued)
    except FileNotFoundError:
        return None
    return queued


def queue(inbox: Path) -> list[Path]:
    """The queued photos, in arrival order."""
    folder = Path(inbox) / "queue"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and not in_progress(p.name))


def original_name(queued: Path) -> str:
    return queued.name.split("-", 1)[1]


def arrival(queued: Path) -> float:
    return int(queued.name.split("-", 1)[0]) / 1e9


def reject(inbox: Path, queued: Path, reason: str) -> Path:
    """Move a queued photo to inbox/rejected/ with `<name>.txt` beside it holding its one-line reason."""
    folder = Path(inbox) / "rejected"
    folder.mkdir(exist_ok=True)
    name, n = original_name(queued), 1
    dest = folder / name
    while dest.exists() or dest.with_name(dest.name + ".txt").exists():  # an earlier photo (or reason) of that name
        n += 1
        dest = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
    write_atomic(dest.with_name(dest.name + ".txt"), " ".join(reason.split()) + "\n")
    os.rename(queued, dest)
    return dest


def visitor_name(filename: str, when: float, taken: set[str]) -> str:
    """A subject name from the photo's file name and arrival time, "anna-20261204-181502": a valid sequence name
    (letters and digits of any script, '.', '_', '-'), not in `taken` ("-2", "-3", ... when it is)."""
    stem = unicodedata.normalize("NFC", Path(filename).stem)
    stem = re.sub(r"^[\W_]+", "", re.sub(r"-{2,}", "-", re.sub(r"[^\w.-]+", "-", stem)))[:40].rstrip(".-") or "visitor"
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


# ---------------------------------------------------------------------------------------------- the aligned faces


def save_face(path: Path, face: AlignedFace) -> None:
    """What the renderer needs of a visitor once the photo is gone: the aligned crop and its landmarks, what the
    photo has lost (for restoration) and the turn that found the face. Nothing of the photo's own pixels or
    geometry beyond the crop."""
    buf = io.BytesIO()
    np.savez_compressed(buf, image=face.image, landmarks=face.landmarks, faces_found=face.faces_found,
                        note=np.array(face.note), turn=face.turn,
                        condition=np.array(dataclasses.astuple(face.condition) if face.condition else []))
    write_atomic(path, buf.getvalue())


def load_face(path: Path) -> AlignedFace:
    """A visitor's stored face (ImageInputError if it is missing or unreadable: that subject is skipped)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            condition = Condition(*map(float, z["condition"])) if z["condition"].size else None
            return AlignedFace(z["image"].copy(), z["landmarks"].copy(), path, int(z["faces_found"]), str(z["note"]),
                               z["landmarks"].copy(), condition, int(z["turn"]))
    except UNREADABLE as e:
        why = str(e) or type(e).__name__
        raise ImageInputError(path, f"the visitor's aligned face is unreadable ({why})") from None


def photo_hash(path: Path) -> str:
    with open(path, "rb") as f:  # in pieces: a photo is not read into memory whole for its hash
        return hashlib.file_digest(f, "sha256").hexdigest()


# ------------------------------------------------------------------------------------------------- the renderer


class LiveRenderer(ChainRenderer):
    """A ChainRenderer for a show that is playing while it grows. Visitors' faces come from their stored aligned
    crops (`align_subject`), their projections use `[live] steps`, nothing of theirs enters the shared cache, and
    the loop is assembled under a new name with the manifest replaced last (`assemble`). One renderer (one loaded
    generator) renders the show again and again: `render(seq, visitors)`."""

    def __init__(self, seq: Sequence, cfg: Config, out: Path, *, quiet: bool = True):
        super().__init__(seq, cfg, out, quiet=quiet)
        self.align_cache, self.cache = self.cache, None  # the show's photos may use the align cache; nothing else
        self.visitors: dict[str, Path] = {}  # name -> its stored face
        self.prune_loops = "previous"  # after the manifest: keep the previous loop ("previous") or none ("all")
        self._aligned: dict[tuple, AlignedFace] = {}  # the show's own photos, aligned once per process

    def render(self, seq: Sequence, visitors: dict[str, Path], *, forgetting: bool = False) -> RenderReport:
        self.seq, self.visitors, self.report = seq, visitors, RenderReport(self.out)
        self.prune_loops = "all" if forgetting else "previous"
        return self.run()

    def align_subject(self, subject: Subject) -> AlignedFace:
        if subject.name in self.visitors:
            return load_face(self.visitors[subject.name])
        try:
            st = subject.image.stat()
        except OSError:
            return cached_align(subject.image, self.cfg.align, self.align_cache)  # raises its one-line error
        memo = (str(subject.image), st.st_size, st.st_mtime_ns)
        if memo not in self._aligned:
            self._aligned[memo] = cached_align(subject.image, self.cfg.align, self.align_cache)
        return self._aligned[memo]

    def projection_inputs(self, role: str, face) -> dict:
        inputs = super().projection_inputs(role, face)
        steps = self.cfg.live.steps
        if steps and face.name in self.visitors:
            inputs["steps"] = steps if role == "edge" else round(1.5 * steps)
        return inputs

    def assemble(self, faces, homes, edges, keys, segments, state) -> None:
        """ChainRenderer.assemble for a show on screen: the loop goes to loop.<state>.mp4, a new file, and the old
        manifest stays until the new one replaces it (atomically), so the player plays the old loop and manifest
        until then and the new ones from then on. Loops no manifest names are deleted after it; the previous one
        is kept for a player that may still open it (until the next change), unless a visitor is being forgotten."""
        out, r = self.out, self.cfg.render
        try:
            previous = read_manifest(out).loop.name
        except ManifestError:
            previous = None
        loop = f"loop.{state[:16]}.mp4"
        self.report.loop_frames = concat_videos([out / s.file for s in segments], out / loop)
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
            "loop": {"file": loop, "frames": self.report.loop_frames,
                     "seam_ratio": round(self.report.seam_ratio, 4), "segments": [s.file for s in segments],
                     "state": state},
            "subjects": subjects, "transitions": transitions,
            "skipped": [{"name": n, "reason": why} for n, why in self.report.skipped],
            "config": "config.toml", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        keep = {loop} | ({previous} if previous and self.prune_loops == "previous" else set())
        for p in out.iterdir():
            if LOOP.fullmatch(p.name) and p.name not in keep and p.is_file():
                p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------- the show


class LiveShow:
    """One show's live inbox: the sequence file's subjects, the visitors registered in <out>/live/subjects.json,
    the inbox and its queue, and the renderer (its generator loaded at the first render). Every change to the
    render folder happens under <out>/live/lock, so `forget` from another process waits for the watcher's step."""

    def __init__(self, seq: Sequence, cfg: Config, out: Path, inbox: Path, *, quiet: bool = True):
        self.seq, self.cfg, self.out, self.inbox, self.quiet = seq, cfg, Path(out), Path(inbox), quiet
        self.live = self.out / "live"
        self.scanner = InboxScanner(self.inbox, cfg.live.settle)
        self._renderer: LiveRenderer | None = None
        self._last_claim = 0
        self._unclaimable: dict[str, int | None] = {}  # photos that could not be moved, each warned of once
        self.stale = True  # the render folder may not show the registry yet (start-up, a failed render)
        every, steps = cfg.render.every, cfg.live.steps
        if steps and steps < 2 * every:
            raise RenderError(f"live.steps ({steps}) must be at least twice render.every ({every})")

    # --- the registry ---------------------------------------------------------------------------------------
    @property
    def registry_path(self) -> Path:
        return self.live / "subjects.json"

    def visitors(self) -> list[dict]:
        """The visitors in arrival order: {name, sha256, added, announced}."""
        try:
            return json.loads(self.registry_path.read_text())["visitors"]
        except FileNotFoundError:
            return []

    def save_visitors(self, visitors: list[dict]) -> None:
        write_atomic(self.registry_path, json.dumps({"show": self.seq.name, "visitors": visitors}, indent=1) + "\n")

    def face_path(self, name: str) -> Path:
        return self.live / "faces" / f"{name}.npz"

    @contextmanager
    def lock(self):
        self.live.mkdir(parents=True, exist_ok=True)
        with open(self.live / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- rendering --------------------------------------------------------------------------------------------
    def render(self, *, forgetting: bool = False) -> RenderReport:
        visitors = self.visitors()
        names = {s.name for s in self.seq.subjects}
        subjects = [Subject(v["name"], self.face_path(v["name"])) for v in visitors if v["name"] not in names]
        seq = dataclasses.replace(self.seq, subjects=self.seq.subjects + tuple(subjects))
        if self._renderer is None:
            self._renderer = LiveRenderer(seq, self.cfg, self.out, quiet=self.quiet)
        report = self._renderer.render(seq, {s.name: s.image for s in subjects}, forgetting=forgetting)
        self.stale = False
        return report

    def announce(self) -> None:
        """Tell the player about each visitor not yet announced (the newest is jumped to last), then record it."""
        visitors = self.visitors()
        fresh = [v for v in visitors if not v.get("announced")]
        if not fresh:
            return
        if self.cfg.live.announce:
            try:
                index = {s.name: s.index for s in read_manifest(self.out).subjects}
            except ManifestError as e:
                log.warning("not announced: %s", e)
                return
            if fresh[-1]["name"] in index:
                send_subject(self.cfg.osc, index[fresh[-1]["name"]])
        for v in fresh:
            v["announced"] = True
        self.save_visitors(visitors)

    def resume(self) -> None:
        """What a killed watcher left: faces and kept photos of no visitor are deleted, the registry rendered and
        announced."""
        with self.lock():
            names = {v["name"] for v in self.visitors()}
            for folder in (self.live / "faces", self.live / "photos"):
                if folder.is_dir():
                    for p in folder.iterdir():
                        if p.is_file() and p.stem not in names and not in_progress(p.name):
                            p.unlink()
                            log.info("removed %s (no visitor's)", p)
            report = self.render()
            log.info("%s: %d subjects (%d visitors) on screen; %s", self.seq.name, len(report.subjects),
                     len(names), report.summary())
            self.announce()

    # --- the inbox ------------------------------------------------------------------------------------------
    def take(self, now: float | None = None) -> int:
        """Move every complete photo of the inbox into the queue, in arrival order. Returns how many."""
        taken = 0
        clear_own_names(self.inbox)
        for photo in self.scanner.scan(now):
            self._last_claim = max(time.time_ns(), self._last_claim + 1)  # strictly increasing: the queue's order
            try:
                queued = claim(self.inbox, photo, self._last_claim)
            except OSError as e:  # not ours to move (permissions): that photo waits in the inbox, the rest go on
                if self._unclaimable.get(photo.name) != e.errno:
                    self._unclaimable[photo.name] = e.errno
                    log.warning("%s: cannot move it into the queue (%s); it stays in the inbox", shown(str(photo)),
                                e.strerror or e)
                continue
            self._unclaimable.pop(photo.name, None)
            if queued is not None:
                log.info("queued %s", shown(photo.name))
                taken += 1
        return taken

    def pending(self) -> bool:
        """Whether anything is still to be done: a file in the inbox (complete or not) or a queued photo."""
        waiting = [e for e in self.scanner.candidates() if e.name not in self._unclaimable]  # those stay: `take`
        return bool(waiting or queue(self.inbox))

    def ingest(self, queued: Path) -> dict | None:
        """One queued photo: rejected, dropped as a duplicate, or registered as a visitor (returned)."""
        name = original_name(queued)
        try:
            size = queued.stat().st_size
            if size > MAX_PHOTO_BYTES:
                reject(self.inbox, queued, f"{size / 2**20:.0f} MB, larger than the {MAX_PHOTO_BYTES // 2**20} MB "
                                           "a photo may be")
                log.warning("rejected %s: larger than %d MB", shown(name), MAX_PHOTO_BYTES // 2**20)
                return None
            digest = photo_hash(queued)
        except FileNotFoundError:
            return None  # another watcher took it
        visitors = self.visitors()
        same = next((v for v in visitors if v["sha256"] == digest), None)
        if same is not None:
            queued.unlink(missing_ok=True)
            log.info("%s: the same photo as visitor %s; added once", shown(name), same["name"])
            return None
        try:
            face = align_file(queued, self.cfg.align)
        except ImageInputError as e:
            reject(self.inbox, queued, e.reason)
            log.warning("rejected %s: %s", shown(name), e.reason)
            return None
        except Exception as e:  # a photo must never stop the show, nor come back after a restart
            reject(self.inbox, queued, f"could not be aligned ({type(e).__name__}: {e})")
            log.exception("rejected %s: could not be aligned", shown(name))
            return None
        if face.note:
            log.info("%s: %s", shown(name), face.note)
        taken = {s.name for s in self.seq.subjects} | {v["name"] for v in visitors}
        visitor = {"name": visitor_name(name, arrival(queued), taken), "sha256": digest,
                   "added": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime()), "announced": False}
        save_face(self.face_path(visitor["name"]), face)
        visitors.append(visitor)
        limit, retired = self.cfg.live.max_subjects, []
        while limit and len(visitors) > limit:
            retired.append(visitors.pop(0))
        self.save_visitors(visitors)  # from here on the visitor is in the show, whatever happens to the process
        if self.cfg.live.keep_photos:
            kept = self.live / "photos" / f"{visitor['name']}{Path(name).suffix.lower()}"
            kept.parent.mkdir(exist_ok=True)
            os.replace(queued, kept)
        else:
            queued.unlink()
        for old in retired:
            self.remove_files(old["name"])
            log.info("retired visitor %s (max_subjects = %d)", old["name"], limit)
        log.info("%s: aligned as visitor %s", shown(name), visitor["name"])
        self.stale = True
        return visitor

    def remove_files(self, name: str) -> None:
        """A visitor's own files in live/ (its face, its kept photo); the render removes the rest."""
        self.face_path(name).unlink(missing_ok=True)
        if (self.live / "photos").is_dir():
            for p in (self.live / "photos").iterdir():
                if p.stem == name:
                    p.unlink(missing_ok=True)

    def step(self, now: float | None = None) -> bool:
        """Take complete photos, then handle the first queued one (align, register, render, announce). Returns
        whether there was a photo to handle."""
        self.take(now)
        first = next(iter(queue(self.inbox)), None)
        with self.lock():
            if first is not None and first.exists():
                t0 = time.perf_counter()
                visitor = self.ingest(first)
                if visitor is not None or self.stale:
                    try:
                        report = self.render()
                    except ProjectionError as e:  # the new face cannot be projected: it leaves, the show goes on
                        if visitor is None:
                            raise
                        report = self.withdraw(visitor["name"], str(e))
                        visitor = None
                    if visitor is not None:
                        index = report.subjects.index(visitor["name"]) if visitor["name"] in report.subjects else -1
                        log.info("added visitor %s as subject %d: %s; %.1f s", visitor["name"], index,
                                 report.summary(), time.perf_counter() - t0)
            elif self.stale:
                self.render()
            self.announce()
        return first is not None

    def watch(self, *, until_idle: bool = False) -> None:
        """Handle the inbox forever (or, `until_idle`, until nothing is left in it or its queue). A failing step is
        logged and tried again a little later: the show goes on."""
        self.resume()
        log.info("watching %s for %s (every %.1f s)", self.inbox, self.seq.name, self.cfg.live.poll)
        while True:
            try:
                busy = self.step()
            except Exception as e:
                log.exception("live step failed (%s); trying again", e)
                self.stale, busy = True, False
                time.sleep(10 * self.cfg.live.poll)
            if not busy:
                if until_idle and not self.pending():
                    return
                time.sleep(self.cfg.live.poll)

    # --- retention ------------------------------------------------------------------------------------------
    def withdraw(self, name: str, reason: str) -> RenderReport:
        """A new visitor whose projection failed leaves again (under the lock, from `step`): the registry, its files
        and its render, with inbox/rejected/<name>.txt saying why. Without this every later step would render it
        again, fail again, and no visitor after it would ever be shown."""
        self.save_visitors([v for v in self.visitors() if v["name"] != name])
        self.remove_files(name)
        folder = self.inbox / "rejected"
        folder.mkdir(exist_ok=True)
        write_atomic(folder / f"{name}.txt", " ".join(reason.split()) + "\n")
        log.warning("rejected visitor %s: %s", name, reason)
        return self.render(forgetting=True)

    def forget(self, name: str) -> RenderReport:
        """Remove visitor `name` from everything: the registry, its face and kept photo, and (by rendering the show
        without it) its latents, segments, clips, aligned crop, transitions and the loops that showed it. Runs the
        one edge that closes the gap and re-assembles the loop."""
        with self.lock():
            visitors = self.visitors()
            if name not in {v["name"] for v in visitors}:
                known = ", ".join(v["name"] for v in visitors) or "none"
                raise LiveError(f"{name!r} is not a visitor of {self.seq.name} (visitors: {known}); the sequence "
                                f"file's own subjects leave by editing it")
            self.save_visitors([v for v in visitors if v["name"] != name])
            self.remove_files(name)
            report = self.render(forgetting=True)
        log.info("forgot visitor %s: %s", name, report.summary())
        if self.cfg.live.announce:  # the player rescans now and leaves the loop that showed the visitor at once
            send_osc(self.cfg.osc, ("/reload", []))
        return report


def send_subject(osc, index: int) -> None:
    """/reload (the player rescans now, and waits for that scan before it jumps) then /subject N, to the player's
    OSC address."""
    send_osc(osc, ("/reload", []), ("/subject", index))


def send_osc(osc, *messages: tuple[str, object]) -> None:
    """OSC messages (address, arguments) to the player's address, in order; a failure is one warning."""
    from pythonosc.udp_client import SimpleUDPClient

    host = "127.0.0.1" if osc.host in ("", "0.0.0.0", "::") else osc.host
    said = " ".join(f"{address} {value}" if value != [] else address for address, value in messages)
    try:
        client = SimpleUDPClient(host, osc.port)
        for address, value in messages:
            client.send_message(address, value)
        log.info("announced %s to %s:%d", said, host, osc.port)
    except OSError as e:
        log.warning("could not announce %s to %s:%d: %s", said, host, osc.port, e)
