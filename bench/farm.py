#!/usr/bin/env python3
"""The render farm against a local render, in one run (issue 17): 16 subjects at 200 steps, rendered here with 2
threads, then on a private Ray with one worker per core (`local:2`, 1 thread each). No shared projection cache, so
both run every task.

    python bench/farm.py                  # 16 subjects, 200 steps
    python bench/farm.py --subjects 8 --steps 60

Prints the wall time of each; the farm's own figures per task (compute seconds by kind, how long after submission
a task started, how long its result took to come back); Ray's overhead per task, measured as the farm's wall time
beyond a zero-overhead schedule of the same tasks on the same workers (a list schedule of the measured task times,
each task starting as soon as its inputs exist and a worker is free), spread over the tasks; the critical path; and
the model of wall time for N subjects on K workers with these per-task times. Goals: overhead at most 5 % of a
1,000-step embedded projection per task; the farm's wall time within 15 % of the local render's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name  # noqa: E402
from render.farm import executor  # noqa: E402
from render.pipeline.chain import render_sequence, sequence_config  # noqa: E402
from sequences.config import Config  # noqa: E402
from sequences.sequence import load_sequence  # noqa: E402

SUBJECTS = ROOT / "sequences" / "subjects"
PHOTOS = ["astronaut.png", "obama.jpg", "biden.jpg", "obama2.jpg", "obama3.jpg"]


def photos(folder: Path, n: int) -> list[tuple[str, Path]]:
    """n different photos: the demo photos, their mirror images, and centre crops of both."""
    out = []
    for variant in ("", "mirrored", "crop", "crop-mirrored"):
        for name in PHOTOS:
            img = ImageOps.exif_transpose(Image.open(SUBJECTS / name)).convert("RGB")
            if "mirrored" in variant:
                img = ImageOps.mirror(img)
            if "crop" in variant:
                w, h = img.size
                img = img.crop((w // 20, h // 20, w - w // 20, h - h // 20))
            stem = f"{Path(name).stem}{'-' + variant if variant else ''}"
            path = folder / f"{stem}.png"
            img.save(path)
            out.append((stem, path))
    return out[:n]


def write_sequence(path: Path, subjects: list[tuple[str, Path]]) -> None:
    lines = ['name = "farm"']
    for name, image in subjects:
        lines += ["[[subjects]]", f'name = "{name}"', f'image = "{image}"']
    path.write_text("\n".join(lines) + "\n")


def simulate(timeline: list[dict], deps: dict[str, list[str]], workers: int) -> float:
    """Wall time of the measured tasks on `workers` workers with no overhead: in submission order, each starts when
    its inputs are done and a worker is free."""
    done_at, free = {}, [0.0] * workers
    for t in sorted(timeline, key=lambda t: t["submitted"]):
        ready = max([done_at.get(d, 0.0) for d in deps.get(t["task"], [])], default=0.0)
        k = min(range(workers), key=lambda i: free[i])
        start = max(ready, free[k])
        free[k] = done_at[t["task"]] = start + t["seconds"]
    return max(done_at.values(), default=0.0)


def dependencies(timeline: list[dict]) -> dict[str, list[str]]:
    """task -> the tasks it waits for, from the face graph's shape (render/pipeline/graph.py)."""
    by_id = {t["task"]: t for t in timeline}
    deps = {}
    for tid in by_id:
        prefix, _, rest = tid.rpartition("/")
        kind, _, name = rest.partition(":")
        if kind == "home":
            deps[tid] = [f"{prefix}/align:{name}"]
        elif kind in ("edge", "segment"):
            source, target = name.split("--")
            deps[tid] = ([f"{prefix}/home:{source}", f"{prefix}/align:{target}"] if kind == "edge"
                         else [f"{prefix}/edge:{name}", f"{prefix}/home:{target}"])
    return deps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="farm workers (local:N), one CPU and thread each")
    ap.add_argument("--upscale", default="none",
                    help="render.upscale (default none: the figures in bench/RESULTS.md were taken before it existed, "
                         "and it runs on the driver either way)")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be at least 2 (a frame every min(4, steps // 2) steps)")
    if not 1 <= args.subjects <= 4 * len(PHOTOS):
        ap.error(f"--subjects must be 1..{4 * len(PHOTOS)} (the demo photos, mirrored and cropped)")
    render = {"steps": args.steps, "every": min(4, args.steps // 2), "upscale": args.upscale}
    with tempfile.TemporaryDirectory(prefix="uncanny-farm-") as tmp:
        tmp = Path(tmp)
        seq_path = tmp / "farm.toml"
        write_sequence(seq_path, photos(tmp, args.subjects))
        seq = load_sequence(seq_path)
        print(f"{cpu_name()}, {os.cpu_count()} CPUs; {args.subjects} subjects, {args.steps} steps (homes "
              f"{round(1.5 * args.steps)}), no shared cache")

        local_cfg = {"cache_dir": "", "threads": 0, "render": render}
        t0 = time.perf_counter()
        local = render_sequence(seq, Config(), out_dir=tmp / "local", overrides=local_cfg, quiet=True)
        local_wall = time.perf_counter() - t0
        print(f"  local, one process, {os.cpu_count()} threads: {local_wall:6.1f} s  ({local.summary()})")

        farm_cfg = {"cache_dir": "", "threads": 1, "render": render,
                    "farm": {"engine": "ray", "address": f"local:{args.workers}", "cpus": 1.0}}
        cfg = sequence_config(seq, Config(), farm_cfg)
        farms = []
        original = executor.Farm.run

        def keep(self, jobs):
            farms.append(self)
            return original(self, jobs)

        executor.Farm.run = keep
        t0 = time.perf_counter()
        (report,) = executor.render_on_farm([(seq, cfg, tmp / "farm")], cfg.farm, quiet=True)
        farm_wall = time.perf_counter() - t0
        executor.Farm.run = original
        farm = farms[0]
        timeline, summary = farm.timeline, farm.summary
        print(f"  farm, local:{args.workers}, 1 thread each:  {farm_wall:6.1f} s  ({report.summary()}); "
              f"{farm_wall / local_wall:.0%} of local (goal <= 115 %)")

        by_kind = {}
        for t in timeline:
            by_kind.setdefault(t["kind"], []).append(t["seconds"])
        for kind, secs in by_kind.items():
            print(f"    {kind:8s} {len(secs):3d} tasks, median {statistics.median(secs):6.2f} s, "
                  f"max {max(secs):6.2f} s")
        start_lag = [t["started"] - t["submitted"] for t in timeline]
        return_lag = [t["received"] - t["ended"] for t in timeline]
        print(f"    after submission a task started in median {statistics.median(start_lag):.3f} s (waiting for "
              f"its worker included); its result was back {statistics.median(return_lag) * 1000:.1f} ms (median) "
              f"after it ended")
        first = min(t["submitted"] for t in timeline)
        last = max(t["received"] for t in timeline)
        ideal = simulate(timeline, dependencies(timeline), args.workers)
        overhead = max(0.0, (last - first) - ideal) * args.workers / len(timeline)
        projection = statistics.median(by_kind.get("edge", [1.0])) * 1000 / args.steps  # a 1,000-step edge
        print(f"    tasks ran from first submission to last result in {last - first:.1f} s; a zero-overhead "
              f"schedule of the same tasks: {ideal:.1f} s")
        print(f"    Ray's overhead per task: {overhead:.2f} s = {overhead / projection:.1%} of a 1,000-step "
              f"projection here ({projection:.1f} s at 1 thread; goal <= 5 %)")
        print(f"    start-up (Ray, workers, generator) and assembly on the driver: {farm_wall - (last - first):.1f} s")
        print(f"    critical path {summary.critical_path:.1f} s; {summary.line()}")
        a, h, e, s = (statistics.median(by_kind.get(k, [0.0])) for k in ("align", "home", "edge", "segment"))
        work = a + h + e + s
        print(f"  model: wall(N, K) = start-up + max(a + h + e + s, N (a + h + e + s) / K) + assembly(N), with "
              f"a {a:.2f}, h {h:.2f}, e {e:.2f}, s {s:.2f} s here: {args.subjects} subjects on {args.workers} "
              f"workers -> {max(work, args.subjects * work / args.workers):.1f} s of tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
