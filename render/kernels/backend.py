"""The one switch for every fast path: which implementation a network runs, passed in, never a global.

Each network keeps a reference path beside its fast one: plain PyTorch ops computing what NVIDIA's (or the original
authors') code computes, which the tests hold every fast path against. A `Backend` says which of the two runs:

    G = load_generator("embedded", device, backend=Backend.COMPILED)   # or G.backend = ... on a network you own
    lp = load_lpips("vgg", device, dtype, backend=G.backend)

    REFERENCE   the reference path everywhere: plain F.conv2d and autograd
    EAGER       the fast halves (render/kernels/: StyleGAN2's modulated convolution without a weight gradient and its
                one-pass epilogue, StyleGAN3's polyphase filtered leaky ReLU, the embedded generator's written-out
                projection step, LPIPS's distance as one autograd node), with oneDNN's packed convolutions on CPU
    COMPILED    EAGER, with the kernels of render.kernels.compiler run through torch.compile

`packed=False` keeps the fast halves on plain convolutions: what they run on CUDA, and what a test runs on CPU to
check that variant. Config `backend` ("auto", "reference", "eager", "compiled") picks one per render (`resolve`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from render.kernels import compiler, onednn

log = logging.getLogger(__name__)

# "auto" compiles for generators at least this large, and where each subject takes at least this many steps of a
# generator whose whole projection step is one function (the embedded DCGAN): compiling costs seconds once per
# process, which these runs win back (the measurements behind both thresholds: bench/RESULTS.md, bench/projection.py and
# bench/stylegan_step.py)
AUTO_MIN_RESOLUTION = 256
AUTO_MIN_WHOLE_STEPS = 2000
SETTINGS = ("auto", "reference", "eager", "compiled")


@dataclass(frozen=True)
class Backend:
    """Which implementation every fast path takes (see the module docstring). Frozen: hand it on, never flip it."""

    fast: bool = True  # the fast halves; False: the reference path
    packed: bool = True  # within the fast halves on CPU: oneDNN's packed convolutions (False: plain ones)
    compiled: bool = False  # within the fast halves: torch.compile'd kernels

    REFERENCE: ClassVar[Backend]
    EAGER: ClassVar[Backend]
    COMPILED: ClassVar[Backend]

    def __post_init__(self) -> None:
        if self.compiled and not self.fast:
            raise ValueError("Backend: compiled kernels belong to the fast path (fast=True)")

    @property
    def name(self) -> str:
        """"reference", "eager" or "compiled", with "-plain" where the fast path keeps plain convolutions."""
        name = "compiled" if self.compiled else "eager" if self.fast else "reference"
        return name if self.packed or not self.fast else f"{name}-plain"

    def packs(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether a convolution of x with this frozen weight runs on oneDNN's packed path here."""
        return self.fast and self.packed and onednn.usable(x, weight)

    def ops_pack(self) -> bool:
        """The `packed` argument of render.kernels.onednn's custom ops (which check device and dtype themselves)."""
        return self.fast and self.packed and onednn.available()


Backend.REFERENCE = Backend(fast=False, packed=False)
Backend.EAGER = Backend()
Backend.COMPILED = Backend(compiled=True)


def default_backend(device: torch.device | str) -> Backend:
    """What a network runs when nobody chose: the fast path on CPU, where it was measured faster; the reference path
    elsewhere (on a CUDA GPU at batch 1 the StyleGANs' reference paths measured as fast or faster, bench/RESULTS.md)."""
    return Backend.EAGER if torch.device(device).type == "cpu" else Backend.REFERENCE


def resolve(setting: str, device: torch.device, resolution: int, whole_steps: int = 0) -> Backend:
    """config `backend` -> the Backend of a run on `device` with a generator of `resolution` px. `whole_steps`: how
    many projection steps the run takes as one function (render/kernels/step.py: the embedded DCGAN), which "auto"
    compiles from AUTO_MIN_WHOLE_STEPS on. Compiling needs a compiler (a C++ compiler on CPU, Triton on CUDA); where
    there is none, "compiled" says so once and runs eagerly."""
    if setting not in SETTINGS:
        raise ValueError(f"backend must be one of {', '.join(SETTINGS)}, not {setting!r}")
    if setting == "reference":
        return Backend.REFERENCE
    eager = Backend.EAGER if setting == "eager" or device.type == "cpu" else default_backend(device)
    if setting == "eager":
        return eager
    if not compiler.available(device):
        if setting == "compiled":
            log.warning("backend = \"compiled\" but no compiler for %s was found (a C++ compiler for CPU, Triton for "
                        "CUDA); running eagerly", device.type)
            return Backend.EAGER
        return eager
    if setting == "compiled":
        return Backend.COMPILED
    # auto: compiled on CPU only, for large generators and long runs of the whole-step generator. On CUDA a batch-1
    # step is bound by kernel launches, which fusing element-wise work does not remove (bench/RESULTS.md).
    if device.type == "cpu" and (resolution >= AUTO_MIN_RESOLUTION or whole_steps >= AUTO_MIN_WHOLE_STEPS):
        return Backend.COMPILED
    return eager
