#!/usr/bin/env python3
"""Montage seams (issue #22): how visible the band borders are, composite against harmonised.

    python bench/montage_seams.py                   # 20 random picks of 10 candidates, 300 steps, sheet in /tmp
    python bench/montage_seams.py --picks 6 --steps 150 --plain

Seam ratio (render/latent/montage.py's seam_ratio): the mean vertical gradient on the rows within 2 px of each band
border over the same rows of the generator's own samples (the candidates); 1 = no more edge there than in a
generated face. Step ratio (step_ratio): the broad brightness step across each border (mean luma of a strip 0.375 x
the eye-to-mouth distance above against one below, per column: about 6 px at 64 px) over the samples'; a
brightness band blurred over several rows passes the seam ratio and not this one. Per pick: the composite, the
harmonised face (`harmonise`: the composite's broad light from the picked faces' mean, then one latent vector, then
the layer-wise latent toward the composite with its border stripes taken from that first face), and with --plain
the old harmonisation (one layer-wise projection of the composite, as before #22); --shading sets config
montage.shading. Band fidelity: LPIPS inside each band to its picked candidate (moved onto the composite's
geometry), harmonised and composite, mean over the bands.
Goal: harmonised median seam ratio at most 1.2 (the step ratio is held to the same).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render.kernels.backend import resolve as resolve_backend  # noqa: E402
from render.kernels.device import set_threads  # noqa: E402
from render.latent.frames import synthesize  # noqa: E402
from render.latent.montage import (FEATURES, band_lpips, compose, hard_masks, harmonise, sample_candidates,  # noqa: E402
                                   seam_ratio, step_ratio)
from render.latent.project import project  # noqa: E402
from render.models import load_generator  # noqa: E402
from render.models.lpips import load_lpips  # noqa: E402
from render.pipeline.chain import projection_settings  # noqa: E402
from render.pipeline.report import labelled_grid, save_png  # noqa: E402
from sequences.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--picks", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--plain", action="store_true", help="also the plain layer-wise harmonisation (before #22)")
    ap.add_argument("--shading", type=float, default=None, help="montage.shading (default: the config's)")
    ap.add_argument("--sheet", type=Path, default=Path(tempfile.gettempdir()) / "montage-seams.png")
    args = ap.parse_args()
    if args.candidates < len(FEATURES) or args.picks < 1 or args.steps < 1:
        ap.error(f"--candidates must be at least {len(FEATURES)} (a pick takes one per feature), --picks and --steps "
                 "at least 1")
    set_threads(0)
    cfg = load_config()
    G = load_generator("embedded")
    G.backend = resolve_backend("auto", G.device, G.resolution, 0)
    settings = {**projection_settings(cfg), "steps": args.steps, "every": args.steps, "seed": 0}
    shading = cfg.montage.shading if args.shading is None else args.shading
    lp = load_lpips("vgg", G.device)
    cands = sample_candidates(G, args.candidates, 0, cfg.montage.truncation)
    images, lms = [c.image for c in cands], [c.landmarks for c in cands]
    rng = np.random.default_rng(0)
    print(f"montage seams: {args.picks} random picks of {args.candidates} candidates (seed 0), {args.steps} steps, "
          f"shading {shading:g}")
    print(f"  {'pick':12s} {'seam: composite':>15s} {'harmonised':>10s}" + (f" {'plain':>6s}" if args.plain else "")
          + f"   {'step: composite':>15s} {'harmonised':>10s}" + (f" {'plain':>6s}" if args.plain else "")
          + f"   {'band LPIPS harm.':>16s} {'comp.':>6s}")
    ratios, rows = [], []
    for p in range(args.picks):
        idx = rng.choice(args.candidates, 4, replace=False)
        pick = {f: int(i) for f, i in zip(FEATURES, idx)}
        comp = compose(images, lms, pick, feather=cfg.montage.feather)
        face = synthesize(G, harmonise(G, comp, shading=shading, **settings).final)[0]
        pictures = [comp.image, face]
        if args.plain:
            pictures.append(synthesize(G, project(G, comp.image, **settings).final)[0])
        seam = [seam_ratio(x, images, comp) for x in pictures]
        step = [step_ratio(x, images, comp) for x in pictures]
        masks = hard_masks(comp.weights)
        band = [np.mean([band_lpips(lp, x, comp.warped[k], masks[k]) for k in range(4)]) for x in (face, comp.image)]
        ratios.append(seam + step + band)
        tag = "-".join(str(pick[f] + 1) for f in FEATURES)
        print(f"  {tag:12s} {seam[0]:15.2f} {seam[1]:10.2f}" + (f" {seam[2]:6.2f}" if args.plain else "")
              + f"   {step[0]:15.2f} {step[1]:10.2f}" + (f" {step[2]:6.2f}" if args.plain else "")
              + f"   {band[0]:16.3f} {band[1]:6.3f}", flush=True)
        if p < 8:
            rows.append((tag, pictures, (["composite", "harmonised"] + (["plain"] if args.plain else [])) if not p
                         else []))
    med = np.median(np.array(ratios), axis=0)
    n = 3 if args.plain else 2
    seam, step = med[:n], med[n:2 * n]
    print(f"  {'median':12s} {seam[0]:15.2f} {seam[1]:10.2f}" + (f" {seam[2]:6.2f}" if args.plain else "")
          + f"   {step[0]:15.2f} {step[1]:10.2f}" + (f" {step[2]:6.2f}" if args.plain else "")
          + f"   {med[-2]:16.3f} {med[-1]:6.3f}")
    print(f"  goal (harmonised median seam ratio <= 1.2): {'met' if seam[1] <= 1.2 else 'NOT met'}; step ratio "
          f"{'also' if step[1] <= 1.2 else 'NOT'} <= 1.2; sheet: {args.sheet}")
    save_png(args.sheet, labelled_grid(rows, cell=128))


if __name__ == "__main__":
    main()
