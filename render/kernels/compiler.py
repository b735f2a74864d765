"""torch.compile (Inductor) around kernels: short functions of tensors whose element-wise work it fuses into few
passes, where a compiler is present.

A projection step spends much of its time in element-wise passes over big maps (the LPIPS heads, the generator's
bias / activation / modulation and their backward): eagerly each is a separate kernel that reads and writes whole
tensors. Inductor turns a short function of such ops into one or two generated C++ (CPU) or Triton (CUDA) kernels.
A function wrapped here runs eagerly unless its caller's backend says compiled:

    @compiler.kernel
    def head(f, t_w, energy, w): ...       # plain torch ops on tensors, no Python state

    value = head(f, t_w, energy, w, compiled=backend.compiled)

Compiling costs time once per process (Inductor caches its kernels on disk), so config `backend = "auto"` compiles
only where a run wins that back (render.kernels.backend.resolve). A kernel that fails to compile (no compiler, an
unsupported op) logs one warning and stays eager for the rest of the process: the results agree to rounding either
way (tests/test_compiler.py).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)

_RECOMPILE_LIMIT = 32  # versions of one kernel (dtype x batch 1 or more x optional arguments x layouts)


def available(device: torch.device) -> bool:
    """Whether Inductor can build kernels for `device` here: a C++ compiler for CPU, Triton for CUDA."""
    if device.type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++"))
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


class Kernel:
    """A function of tensors (and Python constants) that runs compiled when called with `compiled=True`, eagerly
    otherwise. `fn` is the eager function itself, for callers that trace it into a larger compiled function."""

    def __init__(self, fn, dynamic: bool = True):
        self.fn, self.dynamic = fn, dynamic
        self.compiled = None
        self.failed = False
        functools.update_wrapper(self, fn)

    def __call__(self, *args, compiled: bool = False, **kwargs):
        if not compiled or self.failed:
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
    """Decorator: `fn` runs through torch.compile when called with compiled=True. `@kernel(dynamic=False)` compiles
    one version per input shape instead (for a whole network, where symbolic shapes through every layer take minutes
    to solve)."""
    if fn is None:
        return lambda f: Kernel(f, dynamic)
    return Kernel(fn, dynamic)
