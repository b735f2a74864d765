#!/usr/bin/env python3
"""Seconds per projection step for StyleGAN2 / StyleGAN3 (random weights), with FLOPs and achieved GFLOP/s.

    python bench/stylegan_step.py                                   # stylegan2-256: every path and precision
    python bench/stylegan_step.py stylegan2-1024 stylegan3-t-256 stylegan3-r-256 --steps 2
    python bench/stylegan_step.py stylegan2-256 --path fast --dtype bfloat16 --steps 10
    python bench/stylegan_step.py stylegan3-t-256 --path reference   # the literal filtered leaky ReLU (slow)

A step is what render/latent/project.py does per iteration, batch 1: synthesis forward, LPIPS-VGG at 256 px (render/models/lpips.py;
the target's features computed once), backward to the latent, Adam step. Variants:
- path "reference": NVIDIA-equivalent ops (StyleGAN2: per-sample modulated weights as a grouped convolution,
  transposed conv + separate FIR blur; StyleGAN3: the literal up-sample, leaky ReLU, down-sample);
  "fast": render/kernels' measured fast paths (StyleGAN2: no gradient of a modulated weight is ever formed;
  StyleGAN3: the polyphase filtered leaky ReLU with its hand-written backward). Both give the same images within 1e-5.
- dtype "float32", or "bfloat16": what `dtype = "bfloat16"` in config.toml does to a projection, i.e. the synthesis
  runs on a bf16 copy of the weights (Generator.compute_copy) and LPIPS in bf16, with the latent, Adam and the loss
  sums in float32 (on this CPU bf16 convolutions run on AMX tiles). Frames are always rendered in float32 from the
  stored latents, so the rendered output keeps float32 parity; the bf16 image's error against float32 is printed.

FLOPs of one step come from torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products; element-wise
work is not counted). The float32 and bf16 matmul peaks are measured in the same run. Variants are timed in turn,
step by step, so that other load on the machine hits them alike; the load average is printed with the figures.
Reference points (issue 4): NVIDIA's code with its reference ops takes about 1.6 s per 256 px step here, 9-20 s at
1024, and about 75 s for StyleGAN3-T at 256.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render.kernels import backend as backends, compiler  # noqa: E402
from render.kernels.backend import Backend  # noqa: E402

from render.kernels.device import resolve_device  # noqa: E402
from render.models.stylegan2 import PRESETS, StyleGAN2  # noqa: E402
from render.models.stylegan3 import ARCHS, StyleGAN3  # noqa: E402
from render.models.lpips import load_lpips  # noqa: E402

LOSS_SIZE = 256
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock timings count it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype = torch.float32, device: torch.device = torch.device("cpu"),
                repeats: int = 10) -> float:
    """Measured matmul GFLOP/s in `dtype` on `device` (on CPU: at the current thread count), best of `repeats`."""
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch in PRESETS:
        return StyleGAN2(PRESETS[arch]).freeze()
    if arch in ARCHS:
        return StyleGAN3(ARCHS[arch], name=arch).freeze()
    raise ValueError(f"unknown arch {arch!r}; known: {sorted(PRESETS) + sorted(ARCHS)}")


def build_resolution(arch: str) -> int:
    return PRESETS[arch].resolution if arch in PRESETS else ARCHS[arch].resolution


def backend_of(path: str, compiled: bool = False, packed: bool = True) -> Backend:
    """"reference" or "fast" (compiled or not) as the Backend a network runs."""
    return Backend.REFERENCE if path == "reference" else Backend(packed=packed, compiled=compiled)


class Variant:
    """One (path, dtype) way of running a projection step, with its own latent, optimiser and timings."""

    def __init__(self, G, path: str, dtype: str, target: torch.Tensor, compiled: bool = False):
        self.G, self.path, self.dtype, self.compiled = G, path, DTYPES[dtype], compiled
        self.name = f"{path}{'+compiled' if compiled else ''}, {dtype}"
        self.backend = backend_of(path, compiled)
        self.lpips = load_lpips("vgg", G.device, dtype=self.dtype, backend=Backend(compiled=compiled))
        with torch.no_grad():
            self.target = self.lpips.target(target)
        self.latent = G.mean_latent().clone().requires_grad_(True)  # [1, num_ws * w_dim]
        self.opt = torch.optim.Adam([self.latent], lr=0.01)
        self.timings = dict.fromkeys(("synthesis", "loss", "backward", "adam"), 0.0)

    def step(self, record: bool, backend: Backend | None = None) -> None:
        self.G.backend = backend or self.backend
        G = self.G.compute_copy(self.dtype)
        device = G.device
        sync(device)
        t0 = time.perf_counter()
        img = G.synthesis(self.latent.to(self.dtype)).float()  # [1, 3, R, R]
        sync(device)
        t1 = time.perf_counter()
        if img.shape[-1] != LOSS_SIZE:
            img = F.interpolate(img, size=(LOSS_SIZE, LOSS_SIZE), mode="bilinear", align_corners=False,
                                antialias=True)
        total = self.lpips.distance_to(img, self.target).sum()
        total = total + 0.01 * self.G.regularizer(self.latent).sum()
        sync(device)
        t2 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        sync(device)
        t3 = time.perf_counter()
        self.opt.step()
        sync(device)
        t4 = time.perf_counter()
        if record:
            for key, dt in zip(self.timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                self.timings[key] += dt

    def flops(self) -> float:
        """FLOPs of one step. The packed oneDNN ops are invisible to the counter, so plain convolutions run here."""
        counter = FlopCounterMode(display=False)
        with counter:
            self.step(False, backend_of(self.path, self.compiled, packed=False))
        return counter.get_total_flops()

    def image_error(self) -> float:
        """Max |image - float32 image| for this variant's compute copy (compiled or not), at the mean latent."""
        with torch.no_grad():
            lat = self.G.mean_latent()
            self.G.backend = self.backend
            ref = self.G.synthesis(lat)
            G = self.G.compute_copy(self.dtype)
            return (G.synthesis(lat.to(self.dtype)).float() - ref).abs().max().item()


def measure(arch: str, steps: int, paths: tuple[str, ...], dtypes: tuple[str, ...],
            compiled: tuple[bool, ...] = (False,), device: torch.device = torch.device("cpu")) -> list[dict]:
    """Time `steps` projection steps per variant (after one warm-up each) of a random-weight `arch`; print them."""
    G = build(arch).to(device)
    G.latent_std()  # measured once per generator, not part of a step
    target = torch.rand(1, 3, LOSS_SIZE, LOSS_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    target = target.to(device)
    peaks = {name: matmul_peak(dt, device) for name, dt in DTYPES.items() if name in dtypes}  # again after the steps: best
    variants = [Variant(G, path, dtype, target, c) for dtype in dtypes for path in paths
                for c in (compiled if path == "fast" else (False,))]
    warmup = {}
    for v in variants:
        t0 = time.perf_counter()
        v.step(False)  # warm-up: weight packing, compute copies, caches, compiling (render/kernels/compiler.py)
        warmup[v.name] = time.perf_counter() - t0
    for _ in range(steps):
        for v in variants:
            v.step(True)
    peaks = {name: max(p, matmul_peak(DTYPES[name], device)) for name, p in peaks.items()}  # best of both (dips)
    load = os.getloadavg()[0]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{arch}: {where}, matmul peak "
          + ", ".join(f"{name} {p:.0f} GFLOP/s" for name, p in peaks.items()) + f"; load average {load:.1f}")
    results = []
    for v in variants:
        flops = v.flops()
        t = {f"{k}_s": s / steps for k, s in v.timings.items()}
        per_step = sum(t.values())
        peak = peaks[str(v.dtype).removeprefix("torch.")]
        r = {"arch": arch, "path": v.path, "compiled": v.compiled, "dtype": str(v.dtype).removeprefix("torch."), "seconds_per_step": per_step,
             **t, "gflop_per_step": flops / 1e9, "gflops_achieved": flops / 1e9 / per_step, "peak_gflops": peak,
             "image_error": v.image_error()}
        results.append(r)
        print(f"  {v.name:20s} {per_step:6.2f} s/step [synthesis {t['synthesis_s']:.2f}, LPIPS {t['loss_s']:.2f}, "
              f"backward {t['backward_s']:.2f}, Adam {t['adam_s']:.3f}]  {r['gflop_per_step']:.0f} GFLOP/step  "
              f"{r['gflops_achieved']:.0f} GFLOP/s ({r['gflops_achieved'] / peak:.0%} of its matmul peak)  "
              f"image vs float32: max |diff| {r['image_error']:.1e}"
              + (f"  [compiling: first step {warmup[v.name]:.0f} s]" if v.compiled else ""))
    base = next((r for r in results if r["path"] == "reference" and r["dtype"] == "float32"), None)
    if base is not None:
        print("  speed-up over reference float32: " + ", ".join(
            f"{r['path']}{'+compiled' if r['compiled'] else ''} {r['dtype']} "
            f"{base['seconds_per_step'] / r['seconds_per_step']:.2f}x" for r in results
            if r is not base))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archs", nargs="*", default=["stylegan2-256"], help=f"of {sorted(PRESETS) + sorted(ARCHS)}")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--path", choices=("both", "fast", "reference"), default="both", help="which path(s) to time")
    ap.add_argument("--dtype", choices=("both", *DTYPES), default="both", help="which precision(s) to time")
    ap.add_argument("--compile", choices=("both", "auto", "on", "off"), default="both",
                    help="fast path with the compiled element-wise kernels (render/kernels/compiler.py), without, or both; auto "
                         "= what a render does (config.toml backend = \"auto\")")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    ap.add_argument("--device", default="cpu", help="cpu (the issue's figures), cuda, or auto")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = ("reference", "fast") if args.path == "both" else (args.path,)
    dtypes = tuple(DTYPES) if args.dtype == "both" else (args.dtype,)
    for arch in args.archs:
        if args.compile == "both":
            compiled = (False, True) if compiler.available(device) else (False,)
        else:
            setting = {"on": "compiled", "off": "eager"}.get(args.compile, args.compile)
            compiled = (backends.resolve(setting, device, build_resolution(arch)).compiled,)
        measure(arch, args.steps, paths, dtypes, compiled, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
