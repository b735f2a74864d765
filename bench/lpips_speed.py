"""Forward+backward time of LPIPS as projection uses it: `lp.distance_to(x, target)`, the target prepared once.

    python bench/lpips_speed.py                      # VGG, 64/128/256 px, all variants
    python bench/lpips_speed.py --net alex --sizes 64 --threads 1

Variants: fp32 NCHW, fp32 channels_last, bf16 trunk (LPIPS(dtype=torch.bfloat16)), each with plain F.conv2d, and
fp32 / bf16 with oneDNN pre-packed weights (what LPIPS uses on CPU by default). (Autocast is not a variant: distance_to
runs in the LPIPS instance's own dtype whatever autocast the caller has on; autocast measured slower when it did apply.)
Prints min and median milliseconds per step (N=1 unless --batch) and the bf16 error against fp32 (distance, gradient).
Other processes on the machine inflate wall time: the load average is printed. "cpu" is process CPU time per step;
with --threads 1 it is the least contention-sensitive figure (with 2 threads it also counts OpenMP spin-waiting).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from render.kernels.device import resolve_device  # noqa: E402
from render.kernels.backend import Backend  # noqa: E402
from render.models.lpips import LPIPS  # noqa: E402


def step_times(lp: LPIPS, size: int, reps: int, device: torch.device, batch: int = 1):
    """(wall seconds, process CPU seconds) per forward+backward of distance_to(x, f), x [N,3,size,size]."""
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)  # [N,3,H,W] in -1..1
    y = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    with torch.no_grad():
        target = lp.target(y)
    times, cpu = [], []
    for i in range(reps + 2):  # 2 warm-up steps
        x = x0.clone().requires_grad_(True)
        t0, c0 = time.perf_counter(), time.process_time()
        d = lp.distance_to(x, target)  # [N]
        d.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return times, cpu


def bf16_error(net: str, size: int, device: torch.device) -> tuple[float, float]:
    """(max relative distance error, gradient cosine) of the bf16 trunk against fp32 on 8 random-ish pairs."""
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(8, 3, size, size, generator=g) * 2 - 1).to(device)
    x = (y + 0.3 * torch.randn(8, 3, size, size, generator=g).to(device)).clamp(-1, 1)
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        lp = LPIPS(net, dtype=dtype).to(device)
        xr = x.clone().requires_grad_(True)
        d = lp(xr, y)  # [8]
        d.sum().backward()
        out.append((d.detach(), xr.grad.flatten()))
    (d32, g32), (d16, g16) = out
    rel = ((d16 - d32).abs() / d32).max().item()
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0).item()
    return rel, cos


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="vgg", choices=["vgg", "alex"])
    ap.add_argument("--sizes", default="64,128,256", help="comma-separated square sizes in px")
    ap.add_argument("--reps", type=int, default=20, help="timed steps at 64 px (fewer at larger sizes)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1, help="images per step (figures stay per step, not per image)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"LPIPS-{args.net} fwd+bwd, N={args.batch}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load:.1f}")
    variants = [  # name, LPIPS kwargs, oneDNN pre-packed weights (the default on CPU)
        ("fp32 NCHW, plain conv2d", dict(dtype=torch.float32, channels_last=False), False),
        ("fp32 channels_last, plain", dict(dtype=torch.float32), False),
        ("bf16 trunk, plain", dict(dtype=torch.bfloat16), False),
        ("fp32 packed (default)", dict(dtype=torch.float32), True),
        ("bf16 trunk packed (dtype=bf16)", dict(dtype=torch.bfloat16), True),
    ]
    models = {}
    for name, kw, packed in variants:
        models[name] = LPIPS(args.net, **kw, backend=Backend(packed=packed)).to(device)
    for size in [int(s) for s in args.sizes.split(",")]:
        reps = max(3, args.reps * 64 * 64 // (size * size))
        for name in models:
            t, c = step_times(models[name], size, reps, device, args.batch)
            wall = f"wall min {min(t) * 1e3:7.1f} ms  median {statistics.median(t) * 1e3:7.1f} ms"
            print(f"{size:4d} px  {name:31s} {wall}"
                  f"  cpu min {min(c) * 1e3:7.1f} ms  ({len(t)} steps)", flush=True)
        rel, cos = bf16_error(args.net, size, device)
        print(f"{size:4d} px  bf16 trunk vs fp32: max relative distance error {rel:.2e}, gradient cosine {cos:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
