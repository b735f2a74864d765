"""The live inbox under load: a running 4-subject show (sequences/demo.toml), portraits dropped one by one, then a
burst at once. Prints, for each dropped photo, the seconds from the file appearing in the inbox to a new manifest
listing it (p50 / p95 / max) and the steps used; then, for the burst, whether every photo was added or rejected
and the time until the queue was empty. Figures go to bench/RESULTS.md; never a timed test.

    .venv/bin/python bench/live.py                                   # 10 one by one, then 30 at once
    .venv/bin/python bench/live.py --drops 10 --burst 0              # the one-by-one part only
    .venv/bin/python bench/live.py --drops 0 --burst 30 --live-steps 24 --work /tmp/live   # reuse a rendered show
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ROOT / "sequences" / "subjects"
PHOTOS = ("astronaut.png", "obama.jpg", "biden.jpg", "obama2.jpg", "obama3.jpg")
VARIANTS = {  # distinct content for the burst: the photos slightly changed
    "crop95": lambda im: im.crop((im.width // 40, im.height // 40, im.width - im.width // 40, im.height - im.height // 40)),
    "crop90": lambda im: im.crop((im.width // 20, im.height // 20, im.width - im.width // 20, im.height - im.height // 20)),
    "dark": lambda im: ImageEnhance.Brightness(im).enhance(0.85),
    "bright": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "turned": lambda im: im.rotate(4, resample=Image.Resampling.BICUBIC),
    "gray": lambda im: ImageOps.grayscale(im).convert("RGB"),
}


def drop(inbox: Path, image: Image.Image, name: str) -> float:
    """Write as an uploader does (a temporary name, then a rename); returns the moment the file appeared."""
    tmp = inbox / f".{name}.part"
    image.save(tmp, format="PNG" if name.endswith(".png") else "JPEG", quality=95)
    t = time.time()
    os.rename(tmp, inbox / name)
    return t


def visitors(out: Path) -> int:
    try:
        return len(json.loads((out / "live" / "subjects.json").read_text())["visitors"])
    except (OSError, ValueError, KeyError):
        return 0


def subjects(out: Path) -> list[str]:
    try:
        return [s["name"] for s in json.loads((out / "manifest.json").read_text())["subjects"]]
    except (OSError, ValueError, KeyError):
        return []


def drop_image(photos: list, i: int) -> tuple[Image.Image, str, str]:
    """The i-th one-by-one drop: each demo photo as it is, mirrored, then mirrored and changed as VARIANTS change
    them (the burst's variants are not mirrored), so no two drops have the same bytes: the inbox takes a duplicate
    silently, and a wait for it would never end."""
    image, stem, suffix = photos[i % len(photos)]
    round_ = i // len(photos)
    if round_:
        image, stem = ImageOps.mirror(image), f"{stem}-mirror"
    if round_ >= 2:
        variant = list(VARIANTS)[round_ - 2]
        image, stem = VARIANTS[variant](image), f"{stem}-{variant}"
    return image, f"{stem}-{i}", suffix


def wait(until, proc, work: Path, what: str, limit: float = 1800.0) -> None:
    """Poll `until()` while the watcher runs, for at most `limit` seconds."""
    deadline = time.time() + limit
    while not until():
        assert proc.poll() is None, f"watcher exited; see {work / 'watch.out'}"
        if time.time() > deadline:
            sys.exit(f"gave up after {limit:.0f} s waiting for {what}; see {work / 'watch.out'}")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drops", type=int, default=10, help="photos dropped one by one (the demo photos, mirrored)")
    ap.add_argument("--burst", type=int, default=30, help="photos dropped at once afterwards")
    ap.add_argument("--live-steps", type=int, default=0, help="[live] steps; 0 = the show's (demo.toml: 240)")
    ap.add_argument("--work", type=Path, help="working folder (kept; a rendered show there is reused)")
    args = ap.parse_args()
    if not 0 <= args.drops <= len(PHOTOS) * (2 + len(VARIANTS)) or not 0 <= args.burst <= len(PHOTOS) * len(VARIANTS):
        ap.error(f"--drops 0..{len(PHOTOS) * (2 + len(VARIANTS))} and --burst 0..{len(PHOTOS) * len(VARIANTS)}: "
                 "as many different photos as the demo photos give")
    work = args.work or Path(tempfile.mkdtemp(prefix="live-bench-"))
    inbox, out = work / "inbox", work / "out"
    inbox.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.toml"
    cfg.write_text(f'cache_dir = "{work / "cache"}"\n[live]\nsettle = 0.5\npoll = 0.2\nannounce = false\n'
                   f'max_subjects = 0\nsteps = {args.live_steps}\n')
    log = open(work / "watch.out", "a")
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--config", str(cfg), "watch",
                             str(ROOT / "sequences" / "demo.toml"), "--inbox", str(inbox), "--out", str(out)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        # the show's own subjects (live/subjects.json comes with the first visitor)
        wait(lambda: len(subjects(out)) >= 4, proc, work, "the show's first render", limit=7200)
        print(f"show on screen ({len(subjects(out))} subjects) after {time.time() - t0:.0f} s")
        latencies = []
        photos = [(Image.open(SUBJECTS / p).convert("RGB"), Path(p).stem, Path(p).suffix) for p in PHOTOS]
        for i in range(args.drops):
            image, stem, suffix = drop_image(photos, i)
            t = drop(inbox, image, stem + suffix)
            wait(lambda: any(n.startswith(stem + "-") for n in subjects(out)), proc, work,  # noqa: B023
                 f"{stem} in the manifest (dropped before, in this --work folder?)")
            latencies.append(time.time() - t)
            print(f"  {stem}: {latencies[-1]:.1f} s")
        steps = args.live_steps or 240
        if latencies:
            p50, p95 = np.percentile(latencies, [50, 95])
            print(f"{len(latencies)} photos one by one: p50 {p50:.1f} s, p95 {p95:.1f} s, max {max(latencies):.1f} s "
                  f"(visitor steps {steps}, home {round(1.5 * steps)}; goal p95 <= 30 s)")
        if args.burst:
            listed = set(subjects(out))
            names = list(VARIANTS)
            t = time.time()
            for i in range(args.burst):
                image, stem, suffix = photos[i % len(photos)]
                variant = names[i // len(photos) % len(names)]
                drop(inbox, VARIANTS[variant](image), f"burst{i}-{stem}-{variant}{suffix}")
            wait(lambda: not any(p.is_file() for p in inbox.iterdir()) and not any((inbox / "queue").glob("*")),
                 proc, work, "the inbox and its queue to empty", limit=7200)
            # the queue empties when the last photo is aligned; its subject is added when a manifest lists it
            wait(lambda: len(subjects(out)) >= 4 + visitors(out), proc, work, "the last visitor in the manifest")
            added = len(set(subjects(out)) - listed)
            rejected = len(list((inbox / "rejected").glob("burst*.txt"))) if (inbox / "rejected").is_dir() else 0
            print(f"{args.burst} photos at once: {added} added, {rejected} rejected, "
                  f"{args.burst - added - rejected} lost; queue empty after {time.time() - t:.0f} s "
                  f"(visitor steps {steps})")
    finally:
        proc.terminate()
        proc.wait()
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
