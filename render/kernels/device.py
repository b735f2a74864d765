"""Device and dtype are resolved here and nowhere else; everything else takes `device=` / `dtype=`."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda, then mps, then cpu. An explicit device that is absent is an error, not a silent fallback.
    A CUDA device is made reproducible first (`reproducible_cuda`)."""
    if name == "auto":
        if torch.cuda.is_available():
            reproducible_cuda()
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = \"cuda\" but torch sees no CUDA device (set device = \"auto\" or \"cpu\")")
    if name.startswith("cuda"):
        reproducible_cuda()
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device = \"mps\" but this torch build has no usable MPS device")
    return torch.device(name)


def reproducible_cuda() -> None:
    """Same seed, same trajectory on CUDA too: a resumed render must equal an uninterrupted one, and a projection
    reused from the cache must match the one it replaces. cuDNN otherwise picks convolution backward algorithms that
    sum with atomics, so two runs differ in the last bits and, through chaining, in every later subject (seen on an
    H100). Ops with no deterministic CUDA kernel warn instead of failing."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: deterministic workspaces
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic runs in hardware here: tensor cores with bf16 (CUDA, Ampere or later), or a CPU with
    AMX tiles or AVX512-BF16 instructions. Elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return torch.ops.mkldnn._is_mkldnn_bf16_supported() and any(check() for check in checks if check)
    return False


_warned_emulated: list[str] = []


def warn_if_emulated_bf16(setting: str, device: torch.device, instead: str) -> None:
    """One warning a process for a `setting` (dtype, [clip] precision) that asks for bfloat16 on a CPU that only
    emulates it (far slower than float32 there: bench/RESULTS.md); `instead` says what to set."""
    if device.type == "cpu" and setting not in _warned_emulated and not fast_bf16(device):
        _warned_emulated.append(setting)  # once a process: a montage of photos resolves dtype once a photo
        log.warning("%s = bfloat16: this CPU has no native bfloat16 (AMX or AVX512-BF16), so it runs emulated, "
                    "slower and less precise than float32 (%s)", setting, instead)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype of projection and the other optimisations (the latent, the optimiser and frames stay float32).

    "auto": bfloat16 on a CPU that runs it natively (see `fast_bf16`), else float32. On an AMX CPU it halves a
    projection step at the same reconstruction quality (bench/projection.py). On CUDA a batch-1 projection step is
    bound by kernel launches, not arithmetic: bf16 measured no faster there (bench/RESULTS.md), so "auto" keeps
    float32.
    float16 on CPU is slow and lossy, so it falls back to bfloat16 with a warning."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and fast_bf16(device) else torch.float32
    dtype = _DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        log.warning("dtype float16 is not supported on CPU; using bfloat16")
        dtype = torch.bfloat16
    if dtype is torch.bfloat16:
        warn_if_emulated_bf16("dtype", device, "dtype = \"auto\" picks float32 here")
    return dtype


def set_threads(threads: int) -> None:
    """Torch intra-op threads; 0 keeps torch's default (one per physical core)."""
    if threads > 0:
        torch.set_num_threads(threads)
