"""What a farm worker runs: the face graph's tasks as functions of plain values (arrays, bytes, dataclasses of
settings), so Ray can ship their arguments and results, and a worker needs no shared filesystem.

Each function loads the generator once per worker process (kept by weight fingerprint, checked against the
driver's), runs on the device, dtype, backend and thread count the driver chose, and returns its result with where
and how long it ran. The same code paths as a local render run inside (align_file, project, make_segment), so a farm
render's latents equal a local one's bit for bit when the workers' device, dtype and threads match.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

_GENERATORS: dict[str, object] = {}  # fingerprint -> Generator, per worker process


@dataclass(frozen=True)
class GeneratorSpec:
    """How a worker gets the driver's generator: "embedded" from its own install, or a file's bytes (shipped once
    per node through Ray's object store), checked by weight fingerprint either way."""

    spec: str  # "embedded" or the file's name (for messages and its suffix)
    fingerprint: str
    device: str  # config `device`, resolved on the worker
    dtype: str  # the compute dtype's name, as the driver resolved it
    backend: object  # render.kernels.backend.Backend (a frozen dataclass of three bools)
    threads: int  # torch threads of a task


def _where(t0: float, started: float) -> dict:
    """Where and how long a task ran: its node and process, its seconds, when it started (wall clock), and which
    attempt this was."""
    return {"node": socket.gethostname(), "pid": os.getpid(), "seconds": time.perf_counter() - t0,
            "started": started, "ended": time.time(), "attempt": _attempt()}


def _attempt() -> int:
    """Which run of the current Ray task this is (1: the first; 2: the first retry), as Ray itself counts it, so a
    task whose worker died before it could tell anyone is still counted; 1 outside a Ray worker."""
    try:
        import ray

        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()) + 1
    except Exception:  # noqa: BLE001 - not in a Ray worker, or a Ray without this call: count it as a first run
        return 1


def _begin() -> tuple[float, float]:
    """This run's clocks: (perf_counter, wall clock)."""
    return time.perf_counter(), time.time()


def generator(spec: GeneratorSpec, data: np.ndarray | None):
    """The driver's generator in this worker, loaded once per process and checked by fingerprint."""
    import torch

    from render.kernels.device import resolve_device, set_threads
    from render.models import load_generator
    from render.models.base import generator_fingerprint

    set_threads(spec.threads)
    G = _GENERATORS.get(spec.fingerprint)
    if G is None:
        device = resolve_device(spec.device)
        if spec.spec == "embedded":
            G = load_generator("embedded", device)
        else:
            with tempfile.TemporaryDirectory(prefix="uncanny-worker-") as tmp:
                path = Path(tmp) / Path(spec.spec).name
                path.write_bytes(np.asarray(data).tobytes())
                G = load_generator(str(path), device)
        found = generator_fingerprint(G)
        if found != spec.fingerprint:
            raise RuntimeError(f"{socket.gethostname()}: generator {spec.spec} has other weights here than on the "
                               f"driver (fingerprint {found[:12]} against {spec.fingerprint[:12]}): install the same "
                               "packages on every worker")
        _GENERATORS[spec.fingerprint] = G
    G.backend = spec.backend
    torch.set_num_threads(max(1, spec.threads))
    return G


def align_task(photo: np.ndarray, source: str, align_cfg) -> tuple[object, dict]:
    """Align the photo whose bytes are `photo` (named `source` in messages): its AlignedFace, or the same one-line
    ImageInputError a local render gives, naming `source`."""
    from render.faces.align import ImageInputError, align_file

    t0, started = _begin()
    with tempfile.TemporaryDirectory(prefix="uncanny-worker-") as tmp:
        path = Path(tmp) / Path(source).name
        path.write_bytes(np.asarray(photo).tobytes())
        try:
            face = align_file(path, align_cfg)
        except ImageInputError as e:
            raise ImageInputError(source, e.reason) from None
    return replace(face, source=Path(source)), _where(t0, started)


def projection_task(spec: GeneratorSpec, data: np.ndarray | None, image: np.ndarray, start: np.ndarray | None,
                    inputs: dict, restore) -> tuple[dict, dict]:
    """`project` of the aligned `image` from `start` ([1, D], None: the mean face) with the driver's keyword
    arguments `inputs`, through the photo's degradation `restore` (render.faces.degradation): the Projection's
    arrays."""
    import torch

    from render.latent.project import project

    t0, started = _begin()
    G = generator(spec, data)
    args = {k: v for k, v in inputs.items() if k not in ("dtype", "backend", "restore")}
    dtype = getattr(torch, spec.dtype)
    result = project(G, image, start=None if start is None else torch.from_numpy(np.array(start)), dtype=dtype,
                     restore=restore, **args)
    arrays = {"latents": result.latents.numpy(), "steps": result.steps, "losses": result.losses,
              "distances": result.distances}
    return arrays, _where(t0, started)


def segment_task(spec: GeneratorSpec, data: np.ndarray | None, edge: dict, home_final: np.ndarray, render_cfg,
                 rel: str, clip_rel: str) -> tuple[dict, dict, dict]:
    """render.pipeline.segments.make_segment in a scratch folder: the Segment's fields, and the bytes of the files it
    wrote (segment, record, clip), for the driver to write into the render folder."""
    import torch

    from render.latent.project import Projection
    from render.pipeline.segments import make_segment

    t0, started = _begin()
    G = generator(spec, data)
    projection = Projection(torch.from_numpy(np.asarray(edge["latents"])), edge["steps"], edge["losses"],
                            edge["distances"])
    with tempfile.TemporaryDirectory(prefix="uncanny-worker-") as tmp:
        seg = make_segment(G, projection, torch.from_numpy(np.asarray(home_final)), render_cfg, Path(tmp), rel,
                           clip_rel)
        files = {name: np.frombuffer((Path(tmp) / name).read_bytes(), np.uint8)
                 for name in (seg.file, seg.record, seg.clip)}
    return asdict(seg), files, _where(t0, started)
