"""The render farm's driver: the face graphs of several sequences run as Ray tasks, the render folders written here.

    reports = render_on_farm(jobs, cfg.farm)        # jobs: (Sequence, Config, output folder) of one command

Ray schedules, retries and moves data; this module only says which task needs which result. Every sequence's
aligns are submitted at once; when a sequence's faces are known its homes go out, an edge as soon as the home it
starts from is back, a segment as soon as its edge and its own home are; when a sequence's segments are all back,
its loop, reports and manifest are made here (render.pipeline.chain's `finish`, as locally). Results are saved
in the render folder and the shared projection cache as they arrive, under the same keys as a local render: a
farm render reuses local results and the other way round, and a driver killed mid-render resumes from what it
saved. A task whose worker dies is retried by Ray (`max_retries`); one that fails for its input (an unreadable
photo) fails once, with the one-line message a local render gives, and the other sequences go on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from render.faces.align import AlignedFace, ImageInputError
from render.farm import tasks
from render.latent.project import Projection
from render.models.base import generator_fingerprint
from render.pipeline.cache import lookup_align, prune_cache, save_projection, store_align
from render.pipeline.chain import ChainRenderer, Face, RenderError, RenderReport, align_subjects
from render.pipeline.graph import edge_id
from render.pipeline.segments import Segment
from sequences.atomic import write_atomic

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


class FarmError(RuntimeError):
    """The farm cannot be reached or used (no Ray, a bad address)."""


@dataclass
class Job:
    """One sequence's render on the farm: what is known of its face graph so far."""

    renderer: ChainRenderer
    spec: tasks.GeneratorSpec
    data: object  # the generator file's bytes in the object store, or None (embedded)
    aligned: dict[str, AlignedFace | ImageInputError] = field(default_factory=dict)
    faces: list[Face] | None = None
    homes: dict[str, Projection] = field(default_factory=dict)
    edges: dict[str, Projection] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    submitted: set[str] = field(default_factory=set)  # task ids out on the farm
    sent: dict[str, float] = field(default_factory=dict)  # task id -> when it was submitted (wall clock)
    seconds: dict[str, float] = field(default_factory=dict)  # task id -> seconds it ran (0: reused)
    error: Exception | None = None
    report: RenderReport | None = None
    t0: float = field(default_factory=time.perf_counter)

    @property
    def name(self) -> str:
        return self.renderer.seq.name

    def task_key(self, tid: str) -> str:
        """A task's id across the command (two sequences may both have "align:obama")."""
        return f"{self.renderer.out}/{tid}"

    @property
    def settled(self) -> bool:
        return self.error is not None or self.report is not None


@dataclass
class Summary:
    run: int = 0
    reused: int = 0
    retried: int = 0
    seconds: float = 0.0
    critical_path: float = 0.0

    def line(self) -> str:
        return (f"farm: {self.run} tasks run, {self.reused} reused, {self.retried} retried; {self.seconds:.1f} s, "
                f"critical path {self.critical_path:.1f} s")


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto", "ray://host:port") or start a private one ("local:N"). Workers of
    a private Ray import this checkout; a cluster's workers get its code shipped with the job (py_modules)."""
    try:
        import ray
    except ImportError:
        raise FarmError("the render farm needs Ray: pip install ray==2.60.0 (the README's set-up installs it)") \
            from None
    if ray.is_initialized():
        return
    logging.getLogger("ray").setLevel(logging.WARNING)
    # Ray's distributed tqdm replaces builtins.print in the driver when it shows workers' output: this process's
    # own print stays print
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    if address.startswith("local:"):
        try:
            workers = int(address.removeprefix("local:"))
        except ValueError:
            workers = 0
        if workers < 1:
            raise FarmError(f"farm.address {address!r}: local:N needs a number of workers N >= 1")
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        return
    import render
    import sequences

    try:
        ray.init(address=address, log_to_driver=False, runtime_env={"py_modules": [render, sequences]})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise FarmError(f"farm.address {address!r}: cannot reach a Ray cluster ({str(e).splitlines()[0]}); start "
                        "one with `ray start --head`, or use --farm local:N") from None


class Farm:
    """Runs the face graphs of several renders on Ray. One per command."""

    def __init__(self, farm_cfg, *, quiet: bool = False):
        import ray

        self.ray, self.cfg, self.quiet = ray, farm_cfg, quiet
        self.pending: dict = {}  # ObjectRef -> (job, kind, task id, subject)
        self.summary = Summary()
        self.timeline: list[dict] = []  # per task run: kind, when submitted / started / ended / received, seconds
        options = dict(num_cpus=farm_cfg.cpus, max_retries=farm_cfg.max_retries, retry_exceptions=False)
        self.align = ray.remote(tasks.align_task).options(**options)
        self.project = ray.remote(tasks.projection_task).options(**options, num_gpus=farm_cfg.gpus)
        self.encode = ray.remote(tasks.segment_task).options(**options, num_gpus=farm_cfg.gpus, num_returns=1)
        self.generators: dict[str, object] = {}  # generator file -> its bytes in the object store
        self.bar = tqdm(total=0, desc="farm", unit="task", disable=quiet, dynamic_ncols=True)

    # --- jobs ---------------------------------------------------------------------------------------------------
    def job(self, seq, cfg, out: Path) -> Job:
        renderer = ChainRenderer(seq, cfg, out, quiet=True)
        renderer.prepare()
        G, spec = renderer.G, cfg.general.generator
        data = None
        if spec != "embedded":
            if spec not in self.generators:  # each file goes to the object store once, whatever uses it
                self.generators[spec] = self.ray.put(np.frombuffer(Path(spec).read_bytes(), np.uint8))
            data = self.generators[spec]
        threads = cfg.general.threads or max(1, round(self.cfg.cpus))
        return Job(renderer, tasks.GeneratorSpec(spec, generator_fingerprint(G), cfg.general.device,
                                                 str(renderer.dtype).removeprefix("torch."), G.backend, threads),
                   data)

    def start(self, job: Job) -> None:
        """Submit the aligns the shared cache does not hold (the photos travel as bytes)."""
        r = job.renderer
        for subject in r.seq.subjects:
            tid = f"align:{subject.name}"
            try:
                face = lookup_align(subject.image, r.cfg.align, r.cache)
            except ImageInputError as e:  # unreadable here: the line a local render gives
                job.aligned[subject.name] = e
                continue
            if face is not None:
                job.aligned[subject.name] = face
                self.reused(job, tid)
                continue
            try:
                photo = np.frombuffer(Path(subject.image).read_bytes(), np.uint8)
            except OSError as e:  # the same line a local render gives for an unreadable file
                job.aligned[subject.name] = ImageInputError(subject.image, f"cannot read the file "
                                                                           f"({e.strerror or e})")
                continue
            self.submit(job, "align", tid, subject.name,
                        self.align.remote(photo, str(subject.image), r.cfg.align))

    def submit(self, job: Job, kind: str, tid: str, name: str, ref) -> None:
        job.submitted.add(tid)
        job.sent[tid] = time.time()
        self.pending[ref] = (job, kind, tid, name)
        self.bar.total += 1
        self.bar.refresh()

    def reused(self, job: Job, tid: str) -> None:
        job.seconds[tid] = 0.0
        self.summary.reused += 1

    def advance(self, job: Job) -> None:
        """Submit every task of `job` whose inputs are now known; finish the job when its segments are all back."""
        r = job.renderer
        if job.settled:
            return
        if job.faces is None:
            if len(job.aligned) < len(r.seq.subjects):
                return

            def aligned(subject):
                face = job.aligned[subject.name]
                if isinstance(face, ImageInputError):
                    raise face
                return face

            job.faces = align_subjects(r.seq, r.cfg, r.out, r.report, r.cache, r.G.resolution, align=aligned)
            for face in job.faces:
                tid = f"home:{face.name}"
                key = job.keys[tid] = r.home_key(face)
                stored = r.stored(r.home_path(face.name), key)
                if stored is not None:
                    job.homes[face.name] = stored
                    r.report.projections_reused += 1
                    self.reused(job, tid)
                else:
                    self.submit(job, "home", tid, face.name, self.project.remote(
                        job.spec, job.data, face.image, None if r.start is None else r.start.numpy(),
                        r.projection_inputs("home", face), face.restore))
        faces = job.faces
        for face in faces:
            source = faces[face.index - 1].name
            tid = f"edge:{edge_id(source, face.name)}"
            if face.name not in job.edges and tid not in job.submitted and source in job.homes:
                key = job.keys[tid] = r.edge_key(face, job.homes[source])
                stored = r.stored(r.edge_path(source, face.name), key)
                if stored is not None:
                    job.edges[face.name] = stored
                    r.report.projections_reused += 1
                    self.reused(job, tid)
                else:
                    self.submit(job, "edge", tid, face.name, self.project.remote(
                        job.spec, job.data, face.image, job.homes[source].final.numpy(),
                        r.projection_inputs("edge", face), face.restore))
            sid = f"segment:{edge_id(source, face.name)}"
            if (face.name not in job.segments and sid not in job.submitted and face.name in job.edges
                    and face.name in job.homes):
                key = job.keys[sid] = r.segment_key(job.keys[tid], job.keys[f"home:{face.name}"])
                rel = r.segment_path(face.name, key)
                stored = Segment.load(r.out, rel)
                if stored is not None:
                    job.segments[face.name] = stored
                    r.report.segments_reused += 1
                    self.reused(job, sid)
                else:
                    edge = job.edges[face.name]
                    arrays = {"latents": edge.latents.numpy(), "steps": edge.steps, "losses": edge.losses,
                              "distances": edge.distances}
                    self.submit(job, "segment", sid, face.name, self.encode.remote(
                        job.spec, job.data, arrays, job.homes[face.name].final.numpy(), r.cfg.render, rel,
                        r.clip_path(face.name, key)))
        if len(job.segments) == len(faces):
            job.report = r.finish(faces, job.homes, job.edges, job.keys, [job.segments[f.name] for f in faces],
                                  job.t0)

    # --- results ------------------------------------------------------------------------------------------------
    def receive(self, ref) -> None:
        job, kind, tid, name = self.pending.pop(ref)
        self.bar.update(1)
        if job.report is not None or (job.settled and kind not in ("home", "edge")):
            return  # after a failure, projections that finished are still saved: a rerun starts from them
        r = job.renderer
        try:
            result = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - Ray wraps the task's own error; its cause is the one-line one
            if job.settled:
                return  # the job's first failure is the one it reports
            cause = getattr(e, "cause", None) or e
            if kind == "align" and isinstance(cause, ImageInputError):
                job.aligned[name] = cause
                return
            job.error = RenderError(f"{r.seq.path}: {tid} failed: {one_line(cause)}")
            log.error("%s", job.error)
            return
        where = result[-1]
        attempt = where.get("attempt", 1)
        self.summary.run += 1
        self.summary.retried += attempt > 1
        job.seconds[tid] = where["seconds"]
        self.timeline.append({"task": job.task_key(tid), "kind": kind, "submitted": job.sent[tid],
                              "received": time.time(), **where})
        log.info("%-7s %-24s %-12s on %s (pid %d): %.1f s%s", kind, tid.split(":", 1)[1], job.name, where["node"],
                 where["pid"], where["seconds"], f" (attempt {attempt})" if attempt > 1 else "")
        if kind == "align":
            subject = next(s for s in r.seq.subjects if s.name == name)
            face = result[0]
            store_align(Path(subject.image), r.cfg.align, r.cache, face)
            job.aligned[name] = face
        elif kind in ("home", "edge"):
            arrays = result[0]
            projection = Projection(torch.from_numpy(np.array(arrays["latents"])), arrays["steps"], arrays["losses"],
                                    arrays["distances"])
            faces = {f.name: f for f in job.faces}
            rel = (r.home_path(name) if kind == "home"
                   else r.edge_path(job.faces[faces[name].index - 1].name, name))
            save_projection(r.out / rel, projection, job.keys[tid])
            if r.cache:
                shared = r.cache / f"{job.keys[tid]}.npz"
                save_projection(shared, projection, job.keys[tid])
                prune_cache(r.cache, r.cfg.general.cache_max_mb, keep=shared)
            (job.homes if kind == "home" else job.edges)[name] = projection
            r.report.projections_run += 1
        else:
            fields, files = result[0], result[1]
            for rel, data in files.items():
                write_atomic(r.out / rel, np.asarray(data).tobytes())
            job.segments[name] = Segment(**fields)
            r.report.segments_encoded += 1

    def run(self, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        for job in jobs:
            self.start(job)
        while True:
            for job in jobs:
                try:
                    self.advance(job)
                except Exception as e:  # noqa: BLE001 - one sequence's failure (a bad subject with on_bad_subject
                    # = "stop", a full disk, a failed join) ends that sequence only; the others go on
                    job.error = e if isinstance(e, RenderError) else RenderError(f"{job.renderer.seq.path}: {e}")
                    log.error("%s", job.error)
            if not self.pending:
                break
            done, _ = self.ray.wait(list(self.pending), num_returns=1)
            self.receive(done[0])
        self.bar.close()
        self.summary.seconds = time.perf_counter() - t0
        self.summary.critical_path = max((critical_path(job) for job in jobs if job.faces), default=0.0)
        log.info("%s", self.summary.line())


def critical_path(job: Job) -> float:
    """The longest chain of task times through the job's graph (align -> home -> edge -> segment), reused tasks
    counting 0: what the render would take with a worker for every task at once."""
    faces = job.faces or []
    t = job.seconds.get

    def home(name):
        return t(f"align:{name}", 0.0) + t(f"home:{name}", 0.0)

    longest = 0.0
    for face in faces:
        source = faces[face.index - 1].name
        edge = max(home(source), t(f"align:{face.name}", 0.0)) + t(f"edge:{edge_id(source, face.name)}", 0.0)
        longest = max(longest, max(edge, home(face.name)) + t(f"segment:{edge_id(source, face.name)}", 0.0))
    return longest


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def render_on_farm(jobs: list[tuple], farm_cfg, *, quiet: bool = False) -> list[RenderReport | Exception]:
    """Render (Sequence, Config, output folder) jobs on the farm together; a report or the error for each."""
    connect(farm_cfg.address)
    import ray

    have = ray.cluster_resources()
    for what, wanted in (("GPU", farm_cfg.gpus), ("CPU", farm_cfg.cpus)):
        if wanted > have.get(what, 0):  # Ray would wait for such a node for ever, saying nothing
            raise FarmError(f"farm.{what.lower()}s = {wanted:g} per task, but the cluster at {farm_cfg.address!r} "
                            f"has {have.get(what, 0):g} {what}s in all")
    farm = Farm(farm_cfg, quiet=quiet)
    made: list[Job | Exception] = []
    for seq, cfg, out in jobs:
        try:
            made.append(farm.job(seq, cfg, out))
        except Exception as e:  # noqa: BLE001 - a generator that will not load, a folder that is a file: that job
            log.error("%s", e)
            made.append(e)
    farm.run([j for j in made if isinstance(j, Job)])
    return [j if isinstance(j, Exception) else (j.error or j.report) for j in made]
