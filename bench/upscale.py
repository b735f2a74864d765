"""Learned upscaling of a render's frames (render.upscale): cost, steadiness over time, sharpness, faithfulness.

    .venv/bin/python bench/upscale.py --render /tmp/demo            # a finished demo render (make demo, or --out)
    .venv/bin/python bench/upscale.py --render /tmp/demo --max-frames 40 --pictures /tmp/up

For each subject's segment of the loop (its frames remade from the render's latents), every variant is resampled to
render.size and measured: steadiness (mean change of the high-frequency part between consecutive frames over its
mean magnitude; render/latent/upscale.py), as a ratio to the filter's (today's output: goal at most 1.0), and
sharpness (mean high-frequency magnitude over the filter's: goal at least 2). The final faces (each subject's home)
are compared with the aligned photo: dlib identity distance, and LPIPS-VGG at 256 px, with and without upscaling.
Seconds per frame of the network in float32 and bf16 (batch 4). Figures go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from render.faces.identity import identity_distance  # noqa: E402
from render.latent.frames import resample, synthesize  # noqa: E402
from render.latent.project import Projection  # noqa: E402
from render.latent.upscale import STEADY_SIGMA, STRIDE, Upscaler, detail, steadiness  # noqa: E402
from render.models import load_generator  # noqa: E402
from render.models.lpips import load_lpips  # noqa: E402
from render.models.realesrgan import load_realesrgan  # noqa: E402
from render.pipeline.segments import segment_frames  # noqa: E402
from sequences.config import load_config  # noqa: E402


def projection(path: Path) -> Projection:
    z = np.load(path)
    return Projection(torch.from_numpy(z["latents"]), z["steps"], z["losses"], z["distances"])


def lpips256(a: np.ndarray, b: np.ndarray) -> float:
    lp = load_lpips("vgg", "cpu")
    x = [torch.from_numpy(resample(img, 256, "lanczos")).permute(2, 0, 1)[None].float() / 127.5 - 1 for img in (a, b)]
    with torch.no_grad():
        return float(lp(*x)[0])


def encoded(kept: dict, r, default: str) -> None:
    """Sharpness and steadiness of the filter's and the default's frames as the encoder gives them back (H.264 at
    render.crf, and lossless): 8-bit YUV 4:2:0 alone adds high-frequency noise of its own (rounding, chroma), which
    weighs most on the filter's smooth frames."""
    import tempfile

    from sequences.video import read_video, write_video

    print("\n| frames | filter: detail | default: detail | sharpness (x filter) | steadiness ratio |")
    print("| --- | --- | --- | --- | --- |")
    rows = {"as given to the encoder": lambda x: x}
    for crf in (r.crf, 0):
        def through(x, crf=crf):
            with tempfile.TemporaryDirectory() as tmp:
                write_video(Path(tmp) / "v.mp4", x, r.fps, crf=crf, preset=r.preset)
                return np.stack(list(read_video(Path(tmp) / "v.mp4")))
        rows[f"encoded, crf {crf}" + (" (lossless)" if crf == 0 else "")] = through
    for label, fn in rows.items():
        f, u = (np.concatenate([fn(x) for x in kept[v]]) for v in ("filter (none)", default))
        print(f"| {label} | {detail(f):.3f} | {detail(u):.3f} | {detail(u) / detail(f):.2f} | "
              f"{steadiness(u) / steadiness(f):.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--render", type=Path, required=True, help="a finished render folder (latents/, aligned/)")
    p.add_argument("--max-frames", type=int, default=0, help="frames per segment from its start (0: all)")
    p.add_argument("--pictures", type=Path, help="write before/after PNGs of the final faces here")
    p.add_argument("--speed-frames", type=int, default=8)
    p.add_argument("--speed-only", action="store_true", help="only seconds per frame")
    args = p.parse_args()

    cfg = load_config(args.render / "config.toml")
    r = cfg.render
    G = load_generator(cfg.general.generator, "cpu")
    manifest = json.loads((args.render / "manifest.json").read_text())
    names = [s["name"] for s in manifest["subjects"]]

    # speed
    speed = {}
    x = torch.rand(4, 3, G.resolution, G.resolution)
    for dtype in (torch.float32, torch.bfloat16):
        net = load_realesrgan("cpu", dtype)
        net(x)
        t0 = time.perf_counter()
        for _ in range(max(1, args.speed_frames // 4)):
            net(x)
        speed[str(dtype)] = (time.perf_counter() - t0) / (4 * max(1, args.speed_frames // 4))
    print("seconds per frame:", {k: round(v, 3) for k, v in speed.items()}, flush=True)
    if args.speed_only:
        return

    net = load_realesrgan("cpu", torch.bfloat16)
    default = f"keyframes every {STRIDE}, residual smoothed, sigma {STEADY_SIGMA} (the default)"
    variants = {  # name -> Upscaler (None: the filter alone)
        "filter (none)": None,
        "upscaler": Upscaler(net, r.filter, 1.0, sigma=0),
        "upscaler, strength 0.5": Upscaler(net, r.filter, 0.5, sigma=0),
        "residual smoothed, sigma 1": Upscaler(net, r.filter, 1.0, sigma=1.0, stride=1),
        f"residual smoothed, sigma {STEADY_SIGMA}, no motion gate": Upscaler(net, r.filter, 1.0, tau=0, stride=1),
        f"residual smoothed, sigma {STEADY_SIGMA}": Upscaler(net, r.filter, 1.0, stride=1),
        "residual smoothed, sigma 3": Upscaler(net, r.filter, 1.0, sigma=3.0, stride=1),
        f"keyframes every 2, residual smoothed, sigma {STEADY_SIGMA}": Upscaler(net, r.filter, 1.0, stride=2),
        "the same, residual less its 4x4 block average (the first way)": Upscaler(net, r.filter, 1.0, detail_sigma=0),
        default: Upscaler(net, r.filter, 1.0),
    }
    memo = variants["upscaler"]
    for up in variants.values():
        if up is not None:
            up.memo = memo.memo  # one network run per frame for every variant

    homes = {n: projection(args.render / "latents" / "homes" / f"{n}.npz") for n in names}
    stats = {v: {"steady": [], "detail": [], "n": []} for v in variants}
    kept = {"filter (none)": [], default: []}  # frames of both, encoded below
    finals = {}
    t0 = time.perf_counter()
    for k, name in enumerate(names):
        prev = names[k - 1]
        edge = projection(args.render / "latents" / "edges" / f"{prev}--{name}.npz")
        _, frames = segment_frames(G, edge, homes[name].final, r)
        frames = frames[1:]
        if args.max_frames:
            frames = frames[:args.max_frames]
        for v, up in variants.items():
            big = np.stack([resample(f, r.size, r.filter) for f in (frames if up is None else up.stream(frames))])
            stats[v]["steady"].append(steadiness(big))
            stats[v]["detail"].append(detail(big))
            stats[v]["n"].append(len(big) - 1)
            if v in kept:
                kept[v].append(big)
        finals[name] = synthesize(G, homes[name].final)[0]
        print(f"{name}: {len(frames)} frames, {time.perf_counter() - t0:.0f} s", flush=True)

    base = stats["filter (none)"]
    ref_steady = np.average(base["steady"], weights=base["n"])
    ref_detail = np.average(base["detail"], weights=base["n"])
    print("\n| variant | steadiness | ratio to filter | sharpness (x filter) | per unit of detail |")
    print("| --- | --- | --- | --- | --- |")
    for v, s in stats.items():
        st, de = np.average(s["steady"], weights=s["n"]), np.average(s["detail"], weights=s["n"])
        change = st * de / (ref_steady * ref_detail)
        print(f"| {v} | {st:.4f} | {st / ref_steady:.3f} | {de / ref_detail:.2f} | change x{change:.2f} |")

    block = variants["the same, residual less its 4x4 block average (the first way)"]
    encoded(kept, r, default)
    default = variants[default]
    print("\n| subject | identity none | identity upscaled | identity, block average | LPIPS@256 none | "
          "LPIPS@256 upscaled |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, name in enumerate(names):
        photo = np.asarray(__import__("PIL.Image").Image.open(args.render / "aligned" / f"{i + 1:02d}-{name}.png")
                           .convert("RGB"))
        plain = resample(finals[name], r.size, r.filter)
        upscaled = resample(default.still(finals[name]), r.size, r.filter)
        blocky = resample(block.still(finals[name]), r.size, r.filter)
        print(f"| {name} | {identity_distance(photo, plain):.4f} | {identity_distance(photo, upscaled):.4f} | "
              f"{identity_distance(photo, blocky):.4f} | "
              f"{lpips256(photo, plain):.3f} | {lpips256(photo, upscaled):.3f} |", flush=True)
        if args.pictures:
            from PIL import Image

            args.pictures.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([resample(photo, r.size, "lanczos"), plain, upscaled], 1)).save(
                args.pictures / f"{name}.png")
    print(f"\nnetwork runs: {memo.runs}, total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
