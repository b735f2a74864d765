#!/usr/bin/env python3
"""Seconds per projection step for StyleGAN2 at 256 and 1024 px (random weights), with FLOPs and achieved GFLOP/s.

    python bench/stylegan_step.py                                   # stylegan2-256 and stylegan2-1024, both paths
    python bench/stylegan_step.py stylegan2-256 --steps 5 --path fast
    python bench/stylegan_step.py stylegan2-256 --threads 1

A step is what render/project.py does per iteration, batch 1: synthesis forward, LPIPS-VGG at 256 px (render/lpips.py;
the target's features computed once), backward to the latent, Adam step. "reference" is the NVIDIA-equivalent
computation (per-sample modulated weights as a grouped convolution, transposed conv + separate FIR blur, the same
ops NVIDIA's reference path runs); "fast" never forms the gradient of a modulated weight, only input gradients
(see render/generators/stylegan2.py). Both produce the same images within 1e-5.

FLOPs of one step come from torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products; element-wise
work is not counted). The float32 matmul peak is measured in the same run. The two paths are timed alternately, step
by step, so that other load on the machine hits both alike; the load average is printed with the figures.
Reference point (issue 4): NVIDIA's code with its reference ops takes about 1.6 s per 256 px step here, 9-20 s at 1024.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render.generators.stylegan2 import PRESETS, StyleGAN2  # noqa: E402

LOSS_SIZE = 256


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul GFLOP/s on this machine (current thread count), best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def loss_fn(size: int = LOSS_SIZE):
    """LPIPS-VGG at `size` px against a fixed random target: `loss(img [1,3,R,R]) -> [1]`."""
    import torch.nn.functional as F

    from render.lpips import load_lpips

    lpips = load_lpips("vgg", "cpu")
    target = lpips.features(torch.rand(1, 3, size, size) * 2 - 1)

    def loss(img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != size:
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return lpips.distance(lpips.features(img), target)

    loss.lpips = lpips
    return loss


def measure(arch: str, steps: int, paths: tuple[str, ...] = ("reference", "fast")) -> dict:
    """Time `steps` projection steps per path (after one warm-up each) of a random-weight `arch`; print the figures.

    Returns {path: {seconds_per_step, synthesis_s, loss_s, backward_s, adam_s, gflop_per_step, gflops_achieved}}
    plus "arch", "threads", "matmul_peak_gflops", "load_average".
    """
    if arch not in PRESETS:
        raise ValueError(f"unknown StyleGAN2 arch {arch!r}; known: {sorted(PRESETS)}")
    torch.manual_seed(0)
    G = StyleGAN2(PRESETS[arch]).freeze()
    loss = loss_fn()
    runs = {}
    for path in paths:
        latent = G.mean_latent().clone().requires_grad_(True)  # [1, num_ws * w_dim]
        timings = dict.fromkeys(("synthesis", "loss", "backward", "adam"), 0.0)
        runs[path] = (latent, torch.optim.Adam([latent], lr=0.01), timings)

    def step(path: str, record: bool) -> None:
        latent, opt, timings = runs[path]
        G.fast = path == "fast"
        t0 = time.perf_counter()
        img = G.synthesis(latent)  # [1, 3, R, R]
        t1 = time.perf_counter()
        total = loss(img).sum() + 0.01 * G.regularizer(latent).sum()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if record:
            for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[key] += dt

    for path in paths:
        step(path, False)  # warm-up (also computes latent_std once)
    for _ in range(steps):
        for path in paths:
            step(path, True)
    peak = matmul_peak()
    result = {"arch": arch, "threads": torch.get_num_threads(), "matmul_peak_gflops": peak,
              "load_average": os.getloadavg()[0]}
    for path in paths:
        counter = FlopCounterMode(display=False)
        loss.lpips.trunk.packed = False  # count LPIPS's convolutions: its packed oneDNN op is invisible to the counter
        logging.disable(logging.WARNING)  # (and LPIPS would announce that fallback, which is deliberate here)
        with counter:
            step(path, False)
        logging.disable(logging.NOTSET)
        loss.lpips.trunk.packed = True
        flops = counter.get_total_flops()
        timings = {f"{k}_s": v / steps for k, v in runs[path][2].items()}
        per_step = sum(timings.values())
        result[path] = {"seconds_per_step": per_step, **timings, "gflop_per_step": flops / 1e9,
                        "gflops_achieved": flops / 1e9 / per_step}
        r = result[path]
        print(f"{arch} ({path} path, {result['threads']} threads): {per_step:.2f} s/step "
              f"[synthesis {r['synthesis_s']:.2f}, LPIPS {r['loss_s']:.2f}, backward {r['backward_s']:.2f}, "
              f"Adam {r['adam_s']:.3f}]  {r['gflop_per_step']:.0f} GFLOP/step  {r['gflops_achieved']:.1f} GFLOP/s "
              f"(matmul peak {peak:.1f} GFLOP/s, {r['gflops_achieved'] / peak:.0%}; load average "
              f"{result['load_average']:.1f})")
    if len(paths) == 2:
        print(f"{arch}: fast path {result[paths[0]]['seconds_per_step'] / result[paths[1]]['seconds_per_step']:.2f}x "
              f"the speed of the reference path")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archs", nargs="*", default=["stylegan2-256", "stylegan2-1024"], help=f"of {sorted(PRESETS)}")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arch and path (after one warm-up)")
    ap.add_argument("--path", choices=("both", "fast", "reference"), default="both", help="which path(s) to time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = ("reference", "fast") if args.path == "both" else (args.path,)
    for arch in args.archs:
        measure(arch, args.steps, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
