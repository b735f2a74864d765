"""Device and dtype are resolved here and nowhere else; everything else takes `device=` / `dtype=`."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda, then mps, then cpu. An explicit device that is absent is an error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = \"cuda\" but torch sees no CUDA device (set device = \"auto\" or \"cpu\")")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device = \"mps\" but this torch build has no usable MPS device")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype for autocast. float16 on CPU is slow and lossy, so it falls back to bfloat16 with a warning."""
    dtype = _DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        log.warning("dtype float16 is not supported on CPU; using bfloat16")
        return torch.bfloat16
    return dtype


def set_threads(threads: int) -> None:
    """Torch intra-op threads; 0 keeps torch's default (one per physical core)."""
    if threads > 0:
        torch.set_num_threads(threads)
