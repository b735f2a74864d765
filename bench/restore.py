#!/usr/bin/env python3
"""Old and difficult photos (issue #22): projection with restore off and on, measured against the clean photo.

    python bench/restore.py                       # the four demo faces, 240 steps, sheet in /tmp/restore-bench.png
    python bench/restore.py --steps 360 --subjects obama biden --sheet restore.png

Each demo face is aligned, then degraded three ways (grayscale; reduced to 24 px and enlarged back; saved at JPEG
quality 8), written as a PNG (no EXIF, no JPEG file type: the blocks must be found in the pixels) and taken through
the whole path: alignment of the degraded photo, auto detection (render/faces/degradation.py), projection with
restore "none" and with what auto found. Both results are measured against the *clean* aligned face: LPIPS-VGG at
256 px and dlib identity distance (lower is better), plus Hasler-Suesstrunk colourfulness for the grayscale case
(the clean face's in brackets). Goal: restore better than off on both figures for every degradation and subject.
The projection's seed alone moves identity by up to 0.05 (bench/RESULTS.md), more than restore does, so each figure
is the mean over `--seeds` projections (seeds 0..N-1; the spread, max - min over seeds, is printed beside it) and the
sheet shows seed 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render.faces.align import align_file  # noqa: E402
from render.faces.degradation import NO_RESTORE, colourfulness, resolve_restore  # noqa: E402
from render.faces.identity import identity_distance  # noqa: E402
from render.kernels.backend import resolve as resolve_backend  # noqa: E402
from render.kernels.device import set_threads  # noqa: E402
from render.latent.frames import resample, synthesize  # noqa: E402
from render.latent.project import prepare_target, project  # noqa: E402
from render.models import load_generator  # noqa: E402
from render.models.lpips import load_lpips  # noqa: E402
from render.pipeline.chain import projection_settings  # noqa: E402
from render.pipeline.report import labelled_grid, save_png, to_uint8  # noqa: E402
from sequences.config import load_config  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from test_restore import degraded  # noqa: E402  the same degradations the detection tests use

PHOTOS = {"astronaut": "astronaut.png", "obama": "obama.jpg", "biden": "biden.jpg", "obama2": "obama2.jpg"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--seeds", type=int, default=3, help="projections per row and setting, averaged (default 3)")
    ap.add_argument("--subjects", nargs="+", default=list(PHOTOS))
    ap.add_argument("--sheet", type=Path, default=Path(tempfile.gettempdir()) / "restore-bench.png")
    args = ap.parse_args()
    set_threads(0)
    cfg = load_config()
    G = load_generator("embedded")
    G.backend = resolve_backend("auto", G.device, G.resolution, 0)
    settings = {**projection_settings(cfg), "steps": args.steps, "every": args.steps, "seed": 0}
    lp = load_lpips("vgg", G.device)
    cpu = torch.device("cpu")
    print(f"restore bench: {args.steps} steps, mean of {args.seeds} seeds, embedded {G.resolution} px; LPIPS-VGG at 256 px and dlib identity "
          "distance to the clean aligned face (lower is better); colour: colourfulness (clean face's in brackets)")
    print(f"  {'subject':10s} {'degradation':11s} {'auto found':22s} {'LPIPS off':>9s} {'on':>6s} "
          f"{'ident off':>9s} {'on':>6s} {'colour off':>10s} {'on':>6s}")
    rows, wins = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.subjects:
            clean = align_file(ROOT / "sequences" / "subjects" / PHOTOS[name], cfg.align).image
            truth = resample(to_uint8(prepare_target(clean, cpu, G.framing))[0], 256)  # what G is asked to draw
            for kind in ("grayscale", "lowres", "jpeg"):
                path = Path(tmp) / f"{name}-{kind}.png"
                degraded(clean, kind).save(path)
                face = align_file(path, cfg.align)
                found = resolve_restore("auto", face.condition, G.resolution)
                pictures, figures, spreads = [], [], []
                for restore in (NO_RESTORE, found):
                    seeds = []
                    for seed in range(args.seeds):
                        result = project(G, face.image, restore=restore, **{**settings, "seed": seed})
                        frame = resample(synthesize(G, result.final)[0], 256, "lanczos")
                        d = lp(prepare_target(frame, G.device), prepare_target(truth, G.device)).item()
                        seeds.append((d, identity_distance(frame, truth), colourfulness(frame)))
                        if seed == 0:
                            pictures.append(frame)
                    seeds = np.array(seeds)  # [seeds, 3]
                    figures.append(seeds.mean(0))
                    spreads.append(np.ptp(seeds, 0))
                (l0, i0, c0), (l1, i1, c1) = figures
                colour = f"{c0:10.1f} {c1:6.1f} ({colourfulness(truth):.0f})" if kind == "grayscale" else ""
                spread = "  spread LPIPS {:.3f}/{:.3f} ident {:.3f}/{:.3f}".format(
                    spreads[0][0], spreads[1][0], spreads[0][1], spreads[1][1]) if args.seeds > 1 else ""
                print(f"  {name:10s} {kind:11s} {found.describe()[:22]:22s} {l0:9.4f} {l1:6.4f} {i0:9.4f} {i1:6.4f} "
                      f"{colour}{spread}", flush=True)
                wins.append((l1 < l0, i1 < i0))
                photo = resample(to_uint8(prepare_target(face.image, cpu, G.framing))[0], 256)
                rows.append((f"{name}\n{kind}", [truth, photo, *pictures],
                             ["clean", "degraded", "restore off", "restore on"] if not rows else []))
    wins = np.array(wins)
    print(f"  restore better than off: LPIPS {wins[:, 0].sum()}/{len(wins)}, identity {wins[:, 1].sum()}/{len(wins)}")
    save_png(args.sheet, labelled_grid(rows, cell=128))
    print(f"  sheet: {args.sheet}")


if __name__ == "__main__":
    main()
