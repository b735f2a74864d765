#!/usr/bin/env python3
"""What a change to a sequence costs with the face graph (issue 16): an 8-subject sequence at the demo's steps,
rendered in full; then one subject added in the middle; then two neighbours swapped; then run again unchanged.
Each render is a `run.py render` process, start-up included, as a user runs it.

    python bench/incremental.py                 # the demo's settings (240 steps, a frame every 4), 512 px output
    python bench/incremental.py --steps 60      # quicker

Subjects: the four demo photos and their mirror images (a different photo to the aligner and the projection), and
obama3 as the added one. Prints wall time, projections run / reused and segments encoded / reused for each, and
each change's time as a share of the full render. Goals: adding a subject at most 30 % of the full render, a
no-change re-run at most 10 %.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ROOT / "sequences" / "subjects"
DEMO = ["astronaut.png", "obama.jpg", "biden.jpg", "obama2.jpg"]
ADDED = "obama3.jpg"


def photos(folder: Path) -> dict[str, Path]:
    """name -> photo: the demo photos, their mirror images, and the subject to add."""
    out = {}
    for name in DEMO:
        stem = Path(name).stem
        out[stem] = SUBJECTS / name
        mirrored = folder / f"{stem}-mirrored.png"
        ImageOps.mirror(ImageOps.exif_transpose(Image.open(SUBJECTS / name)).convert("RGB")).save(mirrored)
        out[f"{stem}-mirrored"] = mirrored
    out["obama3"] = SUBJECTS / ADDED
    return out


def write_sequence(path: Path, names: list[str], images: dict[str, Path], steps: int, every: int,
                   upscale: str) -> None:
    lines = ['name = "incremental"', "[render]", f"steps = {steps}", f"every = {every}", f'upscale = "{upscale}"']
    for name in names:
        lines += ["[[subjects]]", f'name = "{name}"', f'image = "{images[name]}"']
    path.write_text("\n".join(lines) + "\n")


def render(seq: Path, out: Path, config: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", str(config), "render", str(seq),
                           "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"render failed:\n{proc.stdout}\n{proc.stderr}")
    found = re.findall(r"projections: \d+ run, \d+ reused; segments: \d+ encoded, \d+ reused", proc.stderr)
    return seconds, found[-1] if found else "(no summary line)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=240, help="projection steps per subject (the demo's: 240)")
    ap.add_argument("--every", type=int, default=4, help="a frame every N steps (the demo's: 4)")
    ap.add_argument("--upscale", default="none",
                    help="render.upscale (default none, as when the figures in bench/RESULTS.md were taken)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="uncanny-incremental-") as tmp:
        tmp = Path(tmp)
        images = photos(tmp)
        config = tmp / "config.toml"
        config.write_text(f'cache_dir = "{tmp / "cache"}"\n')  # a cache of its own: aligns are shared, as in use
        base = [n for n in images if n != "obama3"]  # 8 subjects
        middle = len(base) // 2
        added = base[:middle] + ["obama3"] + base[middle:]
        swapped = added[:2] + [added[3], added[2]] + added[4:]
        seq, out = tmp / "show.toml", tmp / "out"
        print(f"{cpu_name()}, {os.cpu_count()} CPUs; {len(base)} subjects at {args.steps} steps, a frame every "
              f"{args.every}; output {out}")
        rows = []
        for label, names in (("full render", base), ("one subject added in the middle", added),
                             ("two neighbours swapped", swapped), ("no change", swapped)):
            write_sequence(seq, names, images, args.steps, args.every, args.upscale)
            seconds, summary = render(seq, out, config)
            rows.append((label, seconds, summary))
            share = f"{seconds / rows[0][1]:6.1%} of the full render" if rows[1:] else ""
            print(f"  {label:32s} {seconds:6.1f} s  {summary}  {share}")
        print(f"goals: added <= 30 % ({rows[1][1] / rows[0][1]:.1%}), no change <= 10 % "
              f"({rows[3][1] / rows[0][1]:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
