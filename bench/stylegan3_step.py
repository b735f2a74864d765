#!/usr/bin/env python3
"""Seconds per projection step for StyleGAN3 T / R at 256 px (random weights), with FLOPs and achieved GFLOP/s.

    python bench/stylegan3_step.py                              # stylegan3-t-256 and stylegan3-r-256, 3 steps each
    python bench/stylegan3_step.py stylegan3-r-256 --steps 5
    python bench/stylegan3_step.py stylegan3-t-256 --reference  # the literal filtered leaky ReLU (slow path)

A step is what render/project.py does per iteration, batch 1: synthesis forward, LPIPS-VGG at 256 px against a
fixed target, backward to the latent, Adam step. The FLOPs of one step are counted by
torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products: the filters' depthwise convolutions
count, element-wise work does not). The machine's float32 matmul peak is measured in the same run for scale.
Reference point (issue 4): NVIDIA's code with its reference ops takes about 75 s per StyleGAN3-T-256 step here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render.generators.stylegan3 import ARCHS, StyleGAN3  # noqa: E402


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul GFLOP/s on this machine (current thread count)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def _loss_fn(size: int):
    """LPIPS-VGG (render/lpips.py) as `loss(img) -> [N]` against a fixed random target."""
    from render.lpips import load_lpips

    lpips = load_lpips("vgg", "cpu")
    target = lpips.features(torch.rand(1, 3, size, size) * 2 - 1)
    return lambda img: lpips.distance(lpips.features(img), target)


def measure(arch: str, steps: int, reference: bool = False) -> dict:
    """Time `steps` projection steps (after one warm-up) of a random-weight `arch`; print and return the figures."""
    if arch not in ARCHS:
        raise ValueError(f"unknown StyleGAN3 arch {arch!r}; known: {sorted(ARCHS)}")
    torch.manual_seed(0)
    G = StyleGAN3(ARCHS[arch], name=arch).set_reference(reference)
    loss = _loss_fn(G.resolution)
    latent = G.mean_latent().clone().requires_grad_(True)  # [1, num_ws * w_dim]
    opt = torch.optim.Adam([latent], lr=0.01)
    timings = {"synthesis": 0.0, "loss": 0.0, "backward": 0.0, "adam": 0.0}

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        img = G.synthesis(latent)  # [1, 3, 256, 256]
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

    G.latent_std()  # measured once per generator, not part of a step
    counter = FlopCounterMode(display=False)
    with counter:
        step(False)  # the warm-up step is the one whose FLOPs are counted
    flops = counter.get_total_flops()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(True)
    per_step = (time.perf_counter() - t0) / steps
    peak = matmul_peak()
    result = {"arch": arch, "path": "reference" if reference else "fast", "threads": torch.get_num_threads(),
              "seconds_per_step": per_step, "gflop_per_step": flops / 1e9,
              "gflops_achieved": flops / 1e9 / per_step, "matmul_peak_gflops": peak,
              **{f"{k}_s": v / steps for k, v in timings.items()}}
    print(f"{arch} ({result['path']} path, {result['threads']} threads): {per_step:.2f} s/step "
          f"[synthesis {result['synthesis_s']:.2f}, LPIPS {result['loss_s']:.2f}, backward {result['backward_s']:.2f}, "
          f"Adam {result['adam_s']:.3f}]  {flops / 1e9:.0f} GFLOP/step  {result['gflops_achieved']:.1f} GFLOP/s "
          f"(matmul peak {peak:.1f} GFLOP/s, {result['gflops_achieved'] / peak:.0%})")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archs", nargs="*", default=["stylegan3-t-256", "stylegan3-r-256"], help=f"of {sorted(ARCHS)}")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arch (after one warm-up)")
    ap.add_argument("--reference", action="store_true", help="time the literal (slow) filtered leaky ReLU")
    args = ap.parse_args(argv)
    for arch in args.archs:
        measure(arch, args.steps, reference=args.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
