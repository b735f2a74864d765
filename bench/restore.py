#!/usr/bin/env python3
"""Old and difficult photos (issue #22): projection with restore off and on, measured against the clean photo.

    python bench/restore.py                       # the four demo faces, 240 steps, sheet in /tmp/restore-bench.png
    python bench/restore.py --steps 360 --subjects obama biden --sheet restore.png
    python bench/restore.py --kinds lowres --seeds 3       # one degradation, fewer seeds
    python bench/restore.py --generator ffhq-256.pkl   # your own StyleGAN: restoring needs a prior that can draw
    python bench/restore.py --subjects --photos faces/*.png   # other faces than the demo's, one face a file

Each demo face is aligned, then degraded three ways (grayscale; reduced to 24 px and enlarged back; saved at JPEG
quality 8), written as a PNG (no EXIF, no JPEG file type: the blocks must be found in the pixels) and taken through
the whole path: alignment of the degraded photo, auto detection (render/faces/degradation.py), projection with
restore "none" and with what auto found. Both results are measured against the *clean* aligned face: LPIPS-VGG at
256 px and dlib identity distance (lower is better), plus Hasler-Suesstrunk colourfulness for the grayscale case
(the clean face's in brackets). Goal: restore better than off on both figures for every degradation and subject.
The projection's seed alone moves identity by up to 0.09 (bench/RESULTS.md), more than restore does, so each figure
is the mean over `--seeds` projections (seeds 0..N-1; the spread, max - min over seeds, is printed beside it) and the
sheet shows seed 0.

The ceiling: each subject's *clean* photo projected the same way ("clean" columns). Restoring can at best bring a
degraded photo's result to what the generator makes of the clean one; where restore off is already there (identity
at the embedded 64 px generator, bench/RESULTS.md) the photo lost nothing the generator could draw. A row whose auto
detection restores nothing is projected once and marked "same".

Four faces are few: a variant tuned on them can win there and lose elsewhere. `--photos` measures other faces (one
face a file, named by the file's stem) the same way, as a held-out set (bench/RESULTS.md says which were used).
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

from render.faces.align import ImageInputError, align_file  # noqa: E402
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
    ap.add_argument("--seeds", type=int, default=6, help="projections per row and setting, averaged (default 6)")
    ap.add_argument("--subjects", nargs="*", default=list(PHOTOS), choices=list(PHOTOS),
                    help="demo faces measured (default: all four; none with an empty list)")
    ap.add_argument("--photos", nargs="+", type=Path, default=[], help="more face photos, one face a file")
    ap.add_argument("--kinds", nargs="+", default=["grayscale", "lowres", "jpeg"],
                    choices=["grayscale", "lowres", "jpeg"], help="the degradations measured (default: all three)")
    ap.add_argument("--sheet", type=Path, default=Path(tempfile.gettempdir()) / "restore-bench.png")
    ap.add_argument("--generator", default="embedded", help="a generator spec as `run.py --generator` takes")
    args = ap.parse_args()
    if not args.subjects and not args.photos:
        ap.error("nothing to measure: name --subjects or --photos")
    sources = {name: ROOT / "sequences" / "subjects" / PHOTOS[name] for name in args.subjects}
    for path in args.photos:  # named by stem: two files of one name would share a row
        if path.stem in sources:
            ap.error(f"{path}: a face named {path.stem!r} is already measured; rename the file")
        sources[path.stem] = path
    set_threads(0)
    cfg = load_config()
    G = load_generator(args.generator)
    G.backend = resolve_backend("auto", G.device, G.resolution, 0)
    settings = {**projection_settings(cfg), "steps": args.steps, "every": args.steps, "seed": 0}
    lp = load_lpips("vgg", G.device)
    cpu = torch.device("cpu")
    print(f"restore bench: {args.steps} steps, mean of {args.seeds} seeds, {args.generator} {G.resolution} px; LPIPS-VGG "
          "at 256 px and dlib identity distance to the clean aligned face (lower is better); colour: colourfulness "
          "(clean face's in brackets); clean: the clean photo projected, the ceiling")
    print(f"  {'subject':10s} {'degradation':11s} {'auto found':22s} {'LPIPS off':>9s} {'on':>6s} {'clean':>6s} "
          f"{'ident off':>9s} {'on':>6s} {'clean':>6s} {'colour off':>10s} {'on':>6s}")
    rows, wins = [], []

    def projected(image, restore, truth):
        """[seeds, 3] figures of `image` projected with `restore` at each seed, and seed 0's frame."""
        seeds, first = [], None
        for seed in range(args.seeds):
            result = project(G, image, restore=restore, **{**settings, "seed": seed})
            frame = resample(synthesize(G, result.final)[0], 256, "lanczos")
            d = lp(prepare_target(frame, G.device), prepare_target(truth, G.device)).item()
            seeds.append((d, identity_distance(frame, truth), colourfulness(frame)))
            first = frame if first is None else first
        return np.array(seeds), first

    with tempfile.TemporaryDirectory() as tmp:
        for name, source in sources.items():
            clean_face = align_file(source, cfg.align)
            clean = clean_face.image
            if own := resolve_restore("auto", clean_face.condition, G.resolution):  # e.g. a black-and-white photo
                print(f"  {name}: the clean photo itself looks {own.describe()}; its figures are against that")
            truth = resample(to_uint8(prepare_target(clean, cpu, G.framing))[0], 256)  # what G is asked to draw
            ceiling = projected(clean, NO_RESTORE, truth)[0].mean(0)  # [3]
            for kind in args.kinds:
                path = Path(tmp) / f"{name}-{kind}.png"
                degraded(clean, kind).save(path)
                try:
                    face = align_file(path, cfg.align)
                except ImageInputError as e:  # a small face can fall below the detector's reach
                    print(f"  {name:10s} {kind:11s} skipped: {e.reason}")
                    continue
                found = resolve_restore("auto", face.condition, G.resolution)
                runs = [projected(face.image, NO_RESTORE, truth)]
                runs.append(projected(face.image, found, truth) if found else runs[0])
                (l0, i0, c0), (l1, i1, c1) = (np.nanmean(seeds, 0) for seeds, _ in runs)
                colour = f"{c0:10.1f} {c1:6.1f} ({colourfulness(truth):.0f})" if kind == "grayscale" else ""
                (sl0, si0), (sl1, si1) = (np.nanmax(s[:, :2], 0) - np.nanmin(s[:, :2], 0) for s, _ in runs)
                spread = f"  spread LPIPS {sl0:.3f}/{sl1:.3f} ident {si0:.3f}/{si1:.3f}" if args.seeds > 1 else ""
                faceless = [int(np.isnan(s[:, 1]).sum()) for s, _ in runs]
                lost = f"  no face found in {faceless[0]}/{faceless[1]} results" if any(faceless) else ""
                print(f"  {name:10s} {kind:11s} {found.describe()[:22]:22s} {l0:9.4f} {l1:6.4f} {ceiling[0]:6.4f} "
                      f"{i0:9.4f} {i1:6.4f} {ceiling[1]:6.4f} {colour}{spread}{lost}", flush=True)
                # identity: the mean over results with a face; fewer results without a face wins first
                ident_won = i1 < i0 if faceless[0] == faceless[1] else faceless[1] < faceless[0]
                wins.append((l1 < l0, ident_won, not found))
                photo = resample(to_uint8(prepare_target(face.image, cpu, G.framing))[0], 256)
                rows.append((f"{name}\n{kind}", [truth, photo, runs[0][1], runs[1][1]],
                             ["clean", "degraded", "restore off", "restore on"] if not rows else []))
    wins = np.array(wins)
    same = int(wins[:, 2].sum())
    print(f"  restore better than off: LPIPS {wins[:, 0].sum()}/{len(wins)}, identity {wins[:, 1].sum()}/{len(wins)}"
          + (f"; {same} row(s) the same: auto restored nothing" if same else ""))
    save_png(args.sheet, labelled_grid(rows, cell=128))
    print(f"  sheet: {args.sheet}")


if __name__ == "__main__":
    main()
