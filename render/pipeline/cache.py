"""Projection results on disk, keyed by everything that determines them.

A projection is fully determined by the generator's weights, the aligned image, the start latent, the projection
settings and the seed. `projection_key` hashes all of them; `save_projection` / `load_projection` store a result as
`.npz` (atomically) and only hand it back when the key matches, so a changed photo or setting is never served stale.

    key = projection_key(G, image, settings, start)
    hit = load_projection(path, key)           # None when absent, unreadable, or made with other inputs

The shared cache (`[morph] cache_dir`, default .cache/projections/) serves every command that projects a photo:
`project_photo` aligns (cached by the file's bytes and the align settings) and projects (cached by the key above),
so the second morph, variation or render of the same photo starts at once.

    face, result = project_photo(G, "subjects/obama.jpg", cfg, cache_dir=Path(".cache/projections"), quiet=True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from render.faces.align import AlignedFace, ImageInputError, align_file
from render.faces.degradation import Condition, resolve_restore
from render.kernels.device import resolve_dtype
from render.models.base import Generator, generator_fingerprint
from render.latent.project import ALGORITHM_VERSION, Projection, project
from sequences.atomic import UNREADABLE, write_atomic

log = logging.getLogger(__name__)


def projection_key(G: Generator, image: np.ndarray, settings: dict[str, Any], start: torch.Tensor | None) -> str:
    h = hashlib.sha256(f"{generator_fingerprint(G)} {ALGORITHM_VERSION}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    h.update(str(image.shape).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(b"mean" if start is None else start.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_projection(path: Path, result: Projection, key: str) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, latents=result.latents.numpy(), steps=result.steps, losses=result.losses,
                        distances=result.distances, key=np.array(key))
    write_atomic(path, buf.getvalue())


def load_projection(path: Path, key: str | None) -> Projection | None:
    """The stored result if it exists and was made from `key` (None = accept any), else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                log.info("%s was made with other inputs or settings; recomputing", path)
                return None
            _used(path)
            return Projection(torch.from_numpy(z["latents"].copy()), z["steps"].copy(), z["losses"].copy(),
                              z["distances"].copy())
    except UNREADABLE as e:
        log.warning("%s is unreadable (%s); recomputing", path, e)
        return None


def _used(path: Path) -> None:
    """Mark a cache entry as just used (its mtime), so pruning takes the least recently used first."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune_cache(cache_dir: Path, max_mb: int, keep: Path | None = None) -> int:
    """Delete the least recently used entries (cache_dir/*.npz and cache_dir/aligned/*.npz, nothing else) until they
    total at most max_mb MB; never `keep` (the entry just written). 0 = no cap. Returns how many were deleted."""
    if max_mb <= 0 or not Path(cache_dir).is_dir():
        return 0
    entries = []
    for p in [*Path(cache_dir).glob("*.npz"), *Path(cache_dir).glob("aligned/*.npz")]:  # ours only
        try:
            st = p.stat()
        except OSError:  # deleted meanwhile by another command
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total, limit, deleted = sum(size for _, size, _ in entries), max_mb * 2**20, 0
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        try:
            p.unlink()
        except FileNotFoundError:  # another command pruned it first: it is gone all the same
            pass
        except OSError:
            continue
        total -= size
        deleted += 1
    if deleted:
        log.info("projection cache %s over %d MB: deleted the %d least recently used entries", cache_dir, max_mb,
                 deleted)
    return deleted


# ------------------------------------------------------------------------------------------------- photo -> latent


# Part of every aligned face's cache key: raise it when alignment gives other results or keeps other figures.
# 2: the photo's Condition (render/faces/degradation.py) and the turn that found its face.
ALIGN_VERSION = 2


def align_key(path: Path, align_cfg) -> str:
    """sha256 of the photo's bytes and the align settings (the file's name and date do not matter)."""
    try:
        h = hashlib.sha256(Path(path).read_bytes())
    except OSError as e:  # unreadable (permissions, a vanished network share): that subject, not the whole render
        raise ImageInputError(path, f"cannot read the file ({e.strerror or e})") from None
    h.update(json.dumps(dataclasses.asdict(align_cfg), sort_keys=True).encode())
    h.update(f"align {ALIGN_VERSION}".encode())
    return h.hexdigest()


def lookup_align(path: Path, align_cfg, cache_dir: Path | None, key: str | None = None) -> AlignedFace | None:
    """The aligned face of the photo at `path` if the cache holds it, else None; aligns nothing. An unreadable
    photo raises its one-line ImageInputError. `key`: its align_key, when the caller has it already."""
    path = Path(path)
    if cache_dir is None or not path.is_file():
        return None
    key = key or align_key(path, align_cfg)
    store = Path(cache_dir) / "aligned" / f"{key}.npz"
    if store.exists():
        try:
            with np.load(store, allow_pickle=False) as z:
                _used(store)
                return AlignedFace(z["image"].copy(), z["landmarks"].copy(), path, int(z["faces_found"]),
                                   str(z["note"]), z["source_landmarks"].copy(),
                                   Condition(*map(float, z["condition"])), int(z["turn"]))
        except UNREADABLE as e:
            log.warning("%s is unreadable (%s); aligning again", store, e)
    return None


def cached_align(path: Path, align_cfg, cache_dir: Path | None) -> AlignedFace:
    """align_file, remembered under cache_dir/aligned/<key>.npz (ImageInputError for an unusable photo)."""
    path = Path(path)
    if cache_dir is None or not path.is_file():
        return align_file(path, align_cfg)  # a missing file raises its one-line ImageInputError here
    key = align_key(path, align_cfg)  # the photo is read and hashed once
    face = lookup_align(path, align_cfg, cache_dir, key)
    if face is not None:
        return face
    face = align_file(path, align_cfg)
    store_align(path, align_cfg, cache_dir, face, key)
    return face


def store_align(path: Path, align_cfg, cache_dir: Path | None, face: AlignedFace, key: str | None = None) -> None:
    """Remember `face`, the photo at `path` aligned with `align_cfg`, under cache_dir/aligned/<key>.npz (`key`: its
    align_key, when the caller has it already)."""
    if cache_dir is None:
        return
    buf = io.BytesIO()
    np.savez_compressed(buf, image=face.image, landmarks=face.landmarks, faces_found=face.faces_found,
                        note=np.array(face.note), source_landmarks=face.source_landmarks,
                        condition=np.array(dataclasses.astuple(face.condition)), turn=face.turn)
    write_atomic(Path(cache_dir) / "aligned" / f"{key or align_key(path, align_cfg)}.npz", buf.getvalue())


def project_photo(G: Generator, path: str | Path, cfg, *, cache_dir: Path | None, quiet: bool = False,
                  start: torch.Tensor | None = None, seed: int | None = None,
                  dtype: torch.dtype | None = None, face: AlignedFace | None = None) -> tuple[AlignedFace, Projection]:
    """Align the largest face of the photo at `path` and project it into G with cfg's projection settings.

    Both steps are cached under `cache_dir` (None = no cache): the projection by projection_key over the aligned
    image, the settings (projection section, render.steps/every, seed, dtype) and `start` ([1, D], None = the mean
    latent) and what it restores (projection.restore, render/faces/degradation.py). `seed` defaults to
    cfg.general.seed, `dtype` to cfg's (render.kernels.device.resolve_dtype). G runs its backend; a generator nobody
    chose one for gets cfg's (chain.configured_backend). A cache hit never calls `project`. The cache is kept under
    cfg.general.cache_max_mb (least recently used entries go first). `face`: the photo aligned already (the caller's
    early check of every photo), not aligned again.
    """
    from render.pipeline.chain import configured_backend, projection_settings  # chain imports this module: late

    face = cached_align(Path(path), cfg.align, cache_dir) if face is None else face
    if face.note:  # several faces, a turned photo: what a render logs per subject
        log.info("%s: %s", path, face.note)
    seed = cfg.general.seed if seed is None else seed
    dtype = resolve_dtype(cfg.general.dtype, G.device) if dtype is None else dtype
    if G.backend is None:
        G.backend = configured_backend(cfg, G)
    settings = {**projection_settings(cfg), "seed": seed}
    restore = resolve_restore(cfg.projection.restore, face.condition, G.resolution)
    if restore:
        log.info("%s: restoring through %s", path, restore.describe())
    restored = {"restore": restore.settings()} if restore else {}  # a plain projection keeps its key
    key = projection_key(G, face.image, {**settings, "dtype": str(dtype), "backend": G.backend.name, **restored},
                         start)
    store = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    if store is not None:
        hit = load_projection(store, key)
        if hit is not None:
            log.info("%s: projection from the cache (%s)", path, store)
            return face, hit
    steps = settings["steps"]
    with tqdm(total=steps, desc=f"project {Path(path).name}", unit="step", leave=False, disable=quiet,
              dynamic_ncols=True) as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 10 == 0 or step == steps:
                bar.set_postfix(loss=f"{loss:.4f}")

        result = project(G, face.image, start=start, dtype=dtype, restore=restore, progress=progress, **settings)
    if store is not None:
        save_projection(store, result, key)
        prune_cache(Path(cache_dir), cfg.general.cache_max_mb, keep=store)
    log.info("%s: projected in %d steps, LPIPS %.4f -> %.4f", path, steps, result.distances[0], result.distances[-1])
    return face, result
