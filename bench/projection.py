#!/usr/bin/env python3
"""Projection speed and reconstruction quality.

    python bench/projection.py                         # embedded generator: speed, time shares, quality table
    python bench/projection.py --steps 300 --subjects astronaut obama
    python bench/projection.py --arch stylegan2-256    # seconds per step for a random-weight StyleGAN (issue 4)
    python bench/projection.py --arch stylegan3-t-256 --steps 2 --path fast   # other flags: bench/stylegan_step.py

Embedded generator (issue 2): projection steps per second at default settings, in float32 and in the precision a
render uses (`dtype = "auto"`: bfloat16 on this AMX CPU), and the share of a step spent in the generator (forward +
backward), the LPIPS loss (value and image gradient) and the rest (optimiser, noise, bookkeeping); then the written-out
step against autograd through the same backend, interleaved twice; then that step compiled as one graph (what a render
of 2,000 steps or more runs, `backend = "auto"`), with its compile time; then the
step with all five LPIPS layers in the loss (`loss_layers = 5`; the default, auto, sums the first two at 64 px).
Goal: a 1,000-step subject in under 20 s on 2 cores. Then, per demo subject, LPIPS-VGG at 256 px and dlib identity
distance of the final frame against the aligned photo, for the layer-wise latent ("plus") and for z alone ("single")
at the same number of steps: the layer-wise latent should win on both. `--loss-layers 5` gives the table for the
five-layer loss (render/models/lpips.py's auto_layers has both).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import render.latent.project as projection  # noqa: E402
from render.kernels import compiler  # noqa: E402
from render.kernels.backend import Backend  # noqa: E402
from render.faces.align import align_file  # noqa: E402
from render.pipeline.chain import projection_settings  # noqa: E402
from render.kernels.device import resolve_device, resolve_dtype  # noqa: E402
from render.latent.frames import resample, synthesize, to_uint8  # noqa: E402
from render.models import load_generator  # noqa: E402
from render.faces.identity import identity_distance  # noqa: E402
from render.kernels.lpips import image_value_and_grad  # noqa: E402
from render.models.lpips import auto_layers, load_lpips  # noqa: E402
from render.latent.project import loss_side, prepare_target, project, resize  # noqa: E402
from sequences.config import load_config  # noqa: E402

DEMO = {"astronaut": "astronaut.png", "obama": "obama.jpg", "biden": "biden.jpg", "obama2": "obama2.jpg"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":  # CUDA runs asynchronously: wait for the queued work before reading the clock
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def speed(G, face: np.ndarray, settings: dict, steps: int, dtype: torch.dtype, block: int = 25,
          backend: Backend = Backend.EAGER, whole_step: bool = True) -> None:
    """Seconds per step from the time between steps, as the median over blocks of `block` steps: this VM's speed
    drifts by up to +-30 % within minutes, and the range of the blocks shows how much it did during the run.
    `backend`: Backend.COMPILED runs the step as one torch.compile graph (what a render of AUTO_MIN_WHOLE_STEPS steps or
    more runs); the first call's compile time is printed. `whole_step` False: autograd through the generator and
    LPIPS's distance node instead of the written-out step (render/kernels/step.py), on the same backend."""
    G.backend = backend
    compiled = backend.compiled
    real = projection.whole_step_distance
    if not whole_step:
        projection.whole_step_distance = lambda *a: None
    try:
        _speed(G, face, settings, steps, dtype, block, compiled, whole_step)
    finally:
        projection.whole_step_distance = real


def _speed(G, face, settings, steps, dtype, block, compiled, whole_step) -> None:
    t0 = time.perf_counter()
    # warm-up: weights, mean latent, oneDNN packing (and compiling)
    project(G, face, **{**settings, "steps": 5}, dtype=dtype)
    warm_up = time.perf_counter() - t0
    stamps = []

    def stamp(step: int, loss: float) -> None:
        sync(G.device)
        stamps.append(time.perf_counter())

    project(G, face, **{**settings, "steps": steps}, dtype=dtype, progress=stamp)
    gaps = np.diff(stamps)  # [steps - 1]: the first step (target features, set-up) is left out
    blocks = gaps[: len(gaps) // block * block].reshape(-1, block).mean(1) if len(gaps) >= block else gaps[None].mean(1)
    per_step = float(np.median(blocks))
    size = loss_side(G, settings["loss_size"])
    layers = settings["loss_layers"] or auto_layers(settings["loss"], size)
    lp = load_lpips(settings["loss"], G.device, dtype=dtype, backend=Backend.EAGER)
    target = lp.target(resize(prepare_target(face, G.device, G.framing), size), layers)
    G_compute = G.compute_copy(dtype)
    latent = G.mean_latent().clone()
    forward, backward, gen_args = G_compute.synthesis_vjp()  # the step's two halves, as it runs them (eagerly)
    lpips_args = lp.loss_args(target)
    image = forward(latent, *gen_args)[0]

    def gen_step():
        img, tape = forward(latent, *gen_args)
        backward(torch.ones_like(img), tape, *gen_args)

    t_gen = timed(gen_step, 20, G.device)
    t_loss = timed(lambda: image_value_and_grad(image, *lpips_args, False), 20, G.device)
    rest = max(per_step - t_gen - t_loss, 0.0)
    name = str(dtype).removeprefix("torch.")
    where = torch.cuda.get_device_name(G.device) if G.device.type == "cuda" else f"threads {torch.get_num_threads()}"
    how = f"compiled (first call {warm_up:.0f} s)" if compiled else "eager" if whole_step else "eager, autograd"
    print(f"{name} {how}: {where}, LPIPS-{settings['loss']} at {size} px, layers 1-{layers}, {steps} timed steps, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {1 / per_step:6.1f} steps/s   {per_step * 1000:6.1f} ms/step (median of {len(blocks)} blocks of "
          f"{min(block, len(gaps))} steps; {blocks.min() * 1000:.1f}-{blocks.max() * 1000:.1f})   "
          f"1000-step subject: {per_step * 1000:.1f} s (goal < 20 s)")
    if compiled:  # one graph: its parts are not timed apart; the eager halves below are what compiling fuses
        print(f"  (eager halves alone: generator {t_gen * 1000:.1f} ms, loss {t_loss * 1000:.1f} ms)")
    elif whole_step:
        print(f"  generator {t_gen / per_step:5.1%}   loss {t_loss / per_step:5.1%}   rest {rest / per_step:5.1%}")


def quality(G, faces: dict[str, np.ndarray], settings: dict, steps: int, dtype: torch.dtype) -> None:
    lp = load_lpips("vgg", G.device)
    print(f"\nquality after {steps} steps in {str(dtype).removeprefix('torch.')} (final frame vs aligned photo; LPIPS-VGG at 256 px, dlib identity distance, "
          "lower is better; < 0.6 is dlib's same-person threshold)")
    print(f"  {'subject':12s} {'LPIPS plus':>10s} {'LPIPS z':>8s} {'ident plus':>10s} {'ident z':>8s}")
    rows = []
    for name, face in faces.items():
        photo = resample(to_uint8(prepare_target(face, torch.device("cpu"), G.framing))[0], 256)
        row = []
        for space in ("plus", "single"):
            result = project(G, face, **{**settings, "steps": steps, "space": space}, dtype=dtype)
            frame = resample(synthesize(G, result.final)[0], 256, "lanczos")
            d = lp(prepare_target(frame, G.device), prepare_target(photo, G.device)).item()
            row.append((d, identity_distance(frame, photo)))
        rows.append(row)
        (lp_plus, id_plus), (lp_z, id_z) = row
        print(f"  {name:12s} {lp_plus:10.4f} {lp_z:8.4f} {id_plus:10.4f} {id_z:8.4f}")
    arr = np.array(rows)  # [subjects, space, metric]
    mean = np.nanmean(arr, axis=0)
    print(f"  {'mean':12s} {mean[0, 0]:10.4f} {mean[1, 0]:8.4f} {mean[0, 1]:10.4f} {mean[1, 1]:8.4f}")
    better = mean[0, 0] < mean[1, 0] and mean[0, 1] < mean[1, 1]
    print(f"  layer-wise latent better on both: {'yes' if better else 'NO'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="embedded",
                    help="embedded, or stylegan2-256 / stylegan2-1024 / stylegan3-t-256 / stylegan3-r-256")
    ap.add_argument("--steps", type=int, default=1000, help="projection steps for the quality table")
    ap.add_argument("--speed-steps", type=int, default=200, help="steps timed for speed")
    ap.add_argument("--subjects", nargs="*", default=list(DEMO), help="demo subjects for the quality table")
    ap.add_argument("--no-quality", action="store_true", help="speed only")
    ap.add_argument("--device", default="cpu", help="cpu (the issues' figures), cuda, or auto")
    ap.add_argument("--loss-layers", type=int, default=None, metavar="N",
                    help="LPIPS layers of the loss, 1-5 (default: config.toml's loss_layers, 0 = auto)")
    args, unknown = ap.parse_known_args()
    if args.arch == "embedded" and unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")

    if args.arch != "embedded":
        from bench.stylegan_step import main as stylegan_main

        argv, rest = [], iter(sys.argv[1:])  # every other flag goes to bench/stylegan_step.py as given
        for a in rest:
            if a == "--arch":
                next(rest, None)
            elif not a.startswith("--arch="):
                argv.append(a)
        return stylegan_main([args.arch, *argv])

    cfg = load_config()
    G = load_generator("embedded", resolve_device(args.device))
    settings = projection_settings(cfg)
    settings.pop("every"), settings.pop("steps")
    settings["every"] = 10
    if args.loss_layers is not None:
        settings["loss_layers"] = args.loss_layers
    subjects = ROOT / "sequences" / "subjects"
    faces = {name: align_file(subjects / DEMO[name], cfg.align).image for name in args.subjects}
    dtype = resolve_dtype(cfg.general.dtype, G.device)  # what a render uses (config.toml: dtype = "auto")
    face = next(iter(faces.values()))
    for dt in dict.fromkeys((torch.float32, dtype)):
        speed(G, face, settings, args.speed_steps, dt)
    for _ in range(2):  # the written-out step against autograd, eagerly, interleaved (the machine's speed drifts)
        speed(G, face, settings, args.speed_steps, dtype, whole_step=False)
        speed(G, face, settings, args.speed_steps, dtype)
    if compiler.available(G.device):  # what a render of AUTO_MIN_WHOLE_STEPS steps or more runs
        speed(G, face, settings, args.speed_steps, dtype, backend=Backend.COMPILED)
    if settings["loss_layers"] != 5:  # the standard metric's five layers, for comparison
        speed(G, face, {**settings, "loss_layers": 5}, args.speed_steps, dtype)
    if not args.no_quality:
        quality(G, faces, settings, args.steps, dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
