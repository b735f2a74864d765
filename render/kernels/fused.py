"""Element-wise work fused into few passes by torch.compile (Inductor), where a compiler is present.

A projection step at 256 px spends a third of its time in element-wise passes over big maps (the LPIPS heads, the
generator's bias / activation / modulation and their backward): each is a separate eager kernel that reads and writes
whole tensors. Inductor turns a short function of such ops into one or two generated C++ (CPU) or Triton (CUDA)
kernels. Functions wrapped here run compiled only inside `using(True)`, and eagerly otherwise:

    @fused.kernel
    def head(f, t_w, energy, w): ...      # plain torch ops on tensors, no Python state

    with fused.using(fused.resolve("auto", device, resolution=256)):  # config.toml: compile = "auto"
        project(...)                       # calls head(...) -> compiled on first use, then reused

Compiling costs time once per process (Inductor caches its kernels on disk: measured 8 s for the LPIPS heads with a
warm cache, ~60 s on a fresh machine that has never compiled anything), so "auto" turns it on only for generators of
256 px and more, where a step saves more than that over a subject (bench/stylegan_step.py prints both), and for runs
of at least AUTO_MIN_FUSED_STEPS steps of the embedded DCGAN, whose whole step is one graph (bench/projection.py).
A kernel that fails to compile (no compiler, an unsupported op) logs one warning and stays eager for the rest of the
process: the results agree to rounding either way (tests/test_fused.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)

AUTO_MIN_RESOLUTION = 256  # "auto" compiles for generators at least this large (see the module docstring)
# ... and a run of at least this many embedded-DCGAN steps (a one-subject render: 2 passes x 1,000): compiled, a bf16
# step saves ~5 ms (~20 -> ~15 ms), and the graph costs 6-10 s from Inductor's disk cache (~60-70 s the first time on
# a machine), so 2,000 steps save about that much once the cache is warm, and every step past them is a gain
AUTO_MIN_FUSED_STEPS = 2000
_RECOMPILE_LIMIT = 32  # versions of one kernel (dtype x batch 1 or more x optional arguments x layouts)

_enabled = False


def compiler_available(device: torch.device) -> bool:
    """Whether Inductor can build kernels for `device` here: a C++ compiler for CPU, Triton for CUDA."""
    if device.type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++"))
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


def resolve(setting: str, device: torch.device, resolution: int, fused_steps: int = 0) -> bool:
    """config `compile` ("auto", "on" or "off") -> whether to compile, for a generator of `resolution` px.
    `fused_steps`: how many projection steps the run will take as one whole-step graph (a generator with
    `synthesis_vjp`, the embedded DCGAN: render/latent/project.py), which "auto" compiles from AUTO_MIN_FUSED_STEPS on."""
    if setting == "off":
        return False
    if not compiler_available(device):
        if setting == "on":
            log.warning("compile = \"on\" but no compiler for %s was found (a C++ compiler for CPU, Triton for "
                        "CUDA); running eagerly", device.type)
        return False
    # auto: CPU only. On an H100 a compiled StyleGAN2-256 step measured slower (0.04 s against 0.03 s eager): at
    # batch 1 a GPU step is bound by kernel launches, which fusing the element-wise glue does not remove.
    return setting == "on" or (device.type == "cpu" and (resolution >= AUTO_MIN_RESOLUTION
                                                         or fused_steps >= AUTO_MIN_FUSED_STEPS))


def enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def using(on: bool):
    """Within this block, `kernel` functions run compiled (on=True) or eagerly."""
    global _enabled
    saved, _enabled = _enabled, bool(on)
    try:
        yield
    finally:
        _enabled = saved


class _Kernel:
    """A function of tensors (and Python constants) that runs compiled when `enabled()`, eagerly otherwise."""

    def __init__(self, fn, dynamic: bool = True):
        self.fn, self.dynamic = fn, dynamic
        self.compiled = None
        self.failed = False
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        if not _enabled or self.failed:
            return self.fn(*args, **kwargs)
        if self.compiled is None:
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
            # dynamic: one kernel for every layer's shape. Each kernel still specialises on dtype, batch 1 vs more,
            # None arguments and strides: a render (bf16 projection, fp32 frame batches) needs more than Dynamo's
            # default 8 versions, past which it would run eagerly without a word.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
            self.compiled = torch.compile(self.fn, dynamic=self.dynamic)
        # Detached: requires_grad would be one more specialisation, and no kernel needs autograd (each runs inside an
        # autograd Function, or where no gradient is wanted).
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager function is always correct
            self.failed = True
            log.warning("compile: %s failed to compile (%s); running it eagerly", self.fn.__qualname__,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            return self.fn(*args, **kwargs)


def kernel(fn=None, *, dynamic: bool = True):
    """Decorator: `fn` runs through torch.compile inside `using(True)`. `@kernel(dynamic=False)` compiles one version
    per input shape instead (for a whole network, where symbolic shapes through every layer take minutes to solve)."""
    if fn is None:
        return lambda f: _Kernel(f, dynamic)
    return _Kernel(fn, dynamic)
