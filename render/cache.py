"""Projection results on disk, keyed by everything that determines them.

A projection is fully determined by the generator's weights, the aligned image, the start latent, the projection
settings and the seed. `projection_key` hashes all of them; `save_projection` / `load_projection` store a result as
`.npz` (atomically) and only hand it back when the key matches, so a changed photo or setting is never served stale.

    key = projection_key(G, image, settings, start)
    hit = load_projection(path, key)           # None when absent, unreadable, or made with other inputs
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from render.generators.base import Generator
from render.project import Projection
from sequences.manifest import write_atomic

log = logging.getLogger(__name__)
_FINGERPRINTS: dict[int, str] = {}


def generator_fingerprint(G: Generator) -> str:
    """sha256 of the generator's class, name and every parameter and buffer (computed once per instance)."""
    key = id(G)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256(f"{type(G).__name__}:{G.name}:{G.layout}".encode())
        for name, t in sorted(G.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


def projection_key(G: Generator, image: np.ndarray, settings: dict[str, Any], start: torch.Tensor | None) -> str:
    h = hashlib.sha256(generator_fingerprint(G).encode())
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
            return Projection(torch.from_numpy(z["latents"].copy()), z["steps"].copy(), z["losses"].copy(),
                              z["distances"].copy())
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s is unreadable (%s); recomputing", path, e)
        return None
