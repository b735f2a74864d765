"""Perceptual path length of morph paths between the demo subjects: lerp vs slerp vs style (vs channel).

    python bench/morph_ppl.py                                    # embedded generator, quick settings
    python bench/morph_ppl.py --steps 300 --samples 256          # closer to the paper's protocol (slow on CPU)

For each consecutive pair of the demo subjects (astronaut, obama, biden, obama2, and back to astronaut) both photos
are projected (through the shared projection cache, so a second run starts at once), then the PPL of the A -> B path
of each mode is measured with render.latent.ppl.path_length: epsilon 1e-4, LPIPS VGG16, stratified uniform t, the mean
within the 1st..99th percentile (see render/latent/ppl.py). The style and channel paths go A -> mix -> B (one side of the
split moves, then the other), the path their loop videos take. Lower PPL = a smoother, more even morph.

The defaults are deliberately small (few projection steps, few samples of t) so the bench runs in minutes on a
2-core CPU; the output says which settings were used. Figures vary with the projections, so compare modes within a
run, and report the settings with the numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBJECTS = ("astronaut.png", "obama.jpg", "biden.jpg", "obama2.jpg")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="embedded", help='"embedded" or a generator file')
    ap.add_argument("--steps", type=int, default=60, help="projection steps per photo (quick: 60)")
    ap.add_argument("--samples", type=int, default=32, help="samples of t per path (paper: 100 000 random pairs)")
    ap.add_argument("--modes", default="lerp,slerp,style,channel")
    ap.add_argument("--pairs", type=int, default=4, help="how many consecutive subject pairs (at most 4)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "projections", help="projection cache folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import torch

    from render.pipeline.cache import project_photo
    from render.kernels.device import resolve_device
    from render.models import load_generator
    from render.models.lpips import load_lpips
    from render.latent.morph import MODES, path_latents
    from render.latent.ppl import EPSILON, path_length
    from sequences.config import load_config

    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"unknown mode {bad[0]!r} (known: {', '.join(MODES)})")
    photos = [ROOT / "sequences" / "subjects" / name for name in SUBJECTS]
    if missing := [p for p in photos if not p.exists()]:
        print(f"demo photo {missing[0]} missing (run the set-up command in README.md)")
        return 2
    cfg = load_config(None, {"generator": args.generator, "seed": args.seed,
                             "render": {"steps": args.steps, "every": max(1, args.steps // 10)}})
    device = resolve_device(cfg.general.device)
    G = load_generator(cfg.general.generator, device)
    lp = load_lpips("vgg", device)
    print(f"generator {G.name} ({G.layout.summary()}) on {device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"quick settings: {args.steps} projection steps per photo, {args.samples} stratified samples of t per "
          f"path, epsilon {EPSILON:g}, LPIPS VGG16 on the central face crop (see render/latent/ppl.py)")

    t0 = time.perf_counter()
    latents = {}
    for p in photos:
        _, proj = project_photo(G, p, cfg, cache_dir=args.cache, quiet=True)
        latents[p.stem] = proj.final.double()  # [1, D] on the CPU: paths in float64, images on `device`
        print(f"  projected {p.name:14s} final LPIPS {proj.distances[-1]:.3f}")
    print(f"projections: {time.perf_counter() - t0:.1f} s (cached ones are instant)")

    names = [p.stem for p in photos]
    pairs = [(names[i], names[(i + 1) % len(names)]) for i in range(min(args.pairs, len(names)))]
    center = G.mean_latent().double().cpu()
    table = {m: [] for m in modes}
    print(f"\n{'pair':24s}" + "".join(f"{m:>10s}" for m in modes))
    t0 = time.perf_counter()
    for a_name, b_name in pairs:
        a, b = latents[a_name], latents[b_name]
        row = []
        for m in modes:
            res = path_length(G, lambda t: path_latents(a, b, t, m, G.layout, center=center), samples=args.samples,
                              seed=args.seed, lpips=lp)
            table[m].append(res.ppl)
            row.append(res.ppl)
        print(f"{a_name + ' -> ' + b_name:24s}" + "".join(f"{v:10.1f}" for v in row))
    print(f"{'mean':24s}" + "".join(f"{np.mean(table[m]):10.1f}" for m in modes))
    print(f"\nPPL: {time.perf_counter() - t0:.1f} s for {len(pairs)} pairs x {len(modes)} modes x {args.samples} "
          f"samples. Lower = smoother morph. Few projection steps and samples: indicative figures, not the paper's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
