"""`run.py morph | variations | child`: faces between two photos, variations of one, children of two.

Torch is imported only inside the handlers, so `run.py --help` stays fast. Each command projects its photos through
the shared projection cache (cache_dir in config.toml), so a second run on the same photo starts at once, and writes its
outputs with settings.json (arguments, resolved values, figures) and config.toml (the resolved config, the command's
options included) beside them. `--seed` seeds only the command's own random choices (variations, children, PPL
samples); projections keep the config's seed, so a new seed never re-projects a cached photo.

    media/morph/<A>--<B>/       morph-<mode>-<amount>.png, loop-<mode>.mp4 (--video), grid.png (--grid)
    media/variations/<face>/    grid.png, loop.mp4
    media/child/<A>--<B>/       grid.png, child-NN.png
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from render.commands import common
from render.commands.common import cache_option, config_option, generator_option, out_option

log = logging.getLogger("morph")


def _common(p: argparse.ArgumentParser) -> None:
    config_option(p, "--steps", "render.steps", "projection steps per photo (render.steps)", type=int)
    config_option(p, "--every", "render.every", "keep a latent every N projection steps (render.every)", type=int)
    config_option(p, "--size", "render.size", "output image / frame side in pixels (render.size)", type=int)
    config_option(p, "--fps", "render.fps", "video frame rate (render.fps)", type=int)
    config_option(p, "--restore", "projection.restore", "old photos: restore \"auto\" | \"none\" | grayscale,lowres,jpeg: compare through the photo's degradation (projection.restore)")
    p.add_argument("--seed", type=common.seed_number,
                   help="seed of this command's random choices (variations, children, PPL samples); projections keep "
                        "the config's seed so the cache serves them")
    generator_option(p)
    out_option(p, "output folder (default media/<command>/<names>/)")
    cache_option(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "morph", help="a face between two photos (still, loop video, comparison grid, path length)",
        description="Project both photos and write the face between them. --amount is the share of face A "
                    "(1 = exactly A, 0 = exactly B). Modes: lerp; slerp (per layer, about the average face); "
                    "style (layers below --crossover take the amount of A, the rest the amount of B: 1 = coarse "
                    "from A, fine from B); channel (the same split across channels inside every layer).")
    p.add_argument("photo_a", type=Path, help="photo of face A")
    p.add_argument("photo_b", type=Path, help="photo of face B")
    config_option(p, "--amount", "morph.amount", "share of face A, 0..1 (morph.amount)", type=float)
    config_option(p, "--mode", "morph.mode", "how to mix (morph.mode)", choices=("lerp", "slerp", "style", "channel"))
    config_option(p, "--crossover", "morph.crossover", "style: first layer from the other side; channel: channel "
                                                       "index; 0 = the middle (morph.crossover)", type=int)
    p.add_argument("--video", action="store_true", help="also write a seamless eased A -> B -> A loop")
    p.add_argument("--grid", action="store_true", help="also write an amount x mode comparison sheet")
    p.add_argument("--ppl", action="store_true", help="measure the perceptual path length of the A -> B path")
    _common(p)
    p.set_defaults(func=run_morph)

    p = subparsers.add_parser(
        "variations", help="the same face with some layers resampled from random faces",
        description="Project the photo, keep its other layers and take the chosen ones from random latents: "
                    "the same person in different atmospheres. Writes a grid and a loop video through them.")
    p.add_argument("photo", type=Path, help="photo of the face")
    config_option(p, "--n", "morph.variations", "how many variations (morph.variations)", type=int)
    config_option(p, "--layers", "morph.layers", "coarse | middle | fine (thirds of the layers) | A-B inclusive "
                                                 "(morph.layers)")
    config_option(p, "--truncation", "morph.truncation", "truncation psi of the random latents (morph.truncation)",
                  type=float)
    _common(p)
    p.set_defaults(func=run_variations)

    p = subparsers.add_parser(
        "child", help="children of two faces: each layer (or channel group) from one parent by a random mask",
        description="Project both photos; every child takes each layer (or channel group, morph.child_unit) from "
                    "one parent or the other by a coin flip from --seed, optionally blended (--blend).")
    p.add_argument("photo_a", type=Path, help="photo of parent A")
    p.add_argument("photo_b", type=Path, help="photo of parent B")
    config_option(p, "--n", "morph.children", "how many children (morph.children)", type=int)
    config_option(p, "--blend", "morph.child_blend", "share of the other parent in every inherited part, 0..0.5",
                  type=float)
    config_option(p, "--unit", "morph.child_unit", "inherit whole layers or channel groups",
                  choices=("layer", "channel"))
    _common(p)
    p.set_defaults(func=run_child)


# ------------------------------------------------------------------------------------------------- shared set-up


class Session:
    """Config, generator, device and cache for one command. The command's own options set morph.* keys, so the
    config validates them like the file's keys and config.toml records them."""

    def __init__(self, args: argparse.Namespace, command: str, names: list[str]):
        self.cfg, self.device, self.dtype, self.G = common.load(args)
        self.cache_dir = common.projection_cache(args, self.cfg)
        self.out = common.output_folder(args, self.cfg, command, "--".join(names))
        self.quiet = args.quiet
        self.seed = self.cfg.general.seed if args.seed is None else args.seed  # this command's random choices only
        self.args, self.command, self.t0 = args, command, time.perf_counter()
        self.faces: dict = {}  # photo path -> its AlignedFace, from `align` (not aligned twice without a cache)

    def align(self, *paths: Path) -> None:
        """Align every photo first: a second photo without a usable face is one line now, not after the first
        photo's projection (with the cache on, project() then finds each aligned face there)."""
        from render.pipeline.cache import cached_align

        self.faces = {Path(path): cached_align(Path(path), self.cfg.align, self.cache_dir) for path in paths}

    def project(self, path: Path):
        from render.pipeline.cache import project_photo

        face, result = project_photo(self.G, path, self.cfg, cache_dir=self.cache_dir, quiet=self.quiet,
                                     dtype=self.dtype, face=self.faces.get(Path(path)))
        return face, result

    def frames(self, latents, size: int | None = None, *, video: bool = False):
        """latents [K, D] -> uint8 [K, S, S, 3] at render.size, upscaled as render.upscale says (a video's frames as
        one steadied stream, other faces each on its own), or resampled to `size` (grid tiles) without upscaling."""
        import numpy as np

        from render.latent.frames import resample, synthesize
        from render.latent.upscale import output_frames, output_still

        r = self.cfg.render
        small = synthesize(self.G, latents)
        if size:
            return np.stack([resample(f, size, r.filter) for f in small])
        return np.stack(list(output_frames(small, r)) if video else [output_still(f, r) for f in small])

    def video(self, name: str, latents) -> dict:
        from render.pipeline.loop import seam_ratio
        from sequences.video import write_video

        r = self.cfg.render
        frames = self.frames(latents, video=True)
        n = write_video(self.out / name, frames, r.fps, crf=r.crf, preset=r.preset)
        ratio = seam_ratio(frames)
        log.info("%s: %d frames, seam ratio %.2f", self.out / name, n, ratio)
        return {"file": name, "frames": n, "seam_ratio": round(ratio, 4)}

    def finish(self, info: dict) -> None:
        """settings.json (with the projection settings, whose seed is the config's) and config.toml."""
        from render.pipeline.chain import projection_settings

        info = {"projection": {**projection_settings(self.cfg), "seed": self.cfg.general.seed}, **info}
        common.write_settings(self.out, self.command, self.args, self.cfg, self.G, info, self.t0, seed=self.seed)


# ------------------------------------------------------------------------------------------------- morph


def run_morph(args: argparse.Namespace) -> int:
    import torch

    from render.latent.morph import MODES, amount_grid, check_crossover, loop_keys, loop_path, morph, path_latents
    from render.pipeline.report import labelled_grid, save_png

    s = Session(args, "morph", [args.photo_a.stem, args.photo_b.stem])
    m, G = s.cfg.morph, s.G
    mode, amount, crossover = m.mode, m.amount, m.crossover or None  # crossover 0 = the middle
    check_crossover(crossover, mode, G.layout)
    grid_modes = list(m.grid_modes)
    if bad := [x for x in grid_modes if x not in MODES]:
        raise ValueError(f"morph.grid_modes: unknown mode {bad[0]!r} (known: {', '.join(MODES)})")
    amounts = amount_grid(m.grid_amounts)

    s.align(args.photo_a, args.photo_b)
    face_a, proj_a = s.project(args.photo_a)
    face_b, proj_b = s.project(args.photo_b)
    a, b = proj_a.final.to(G.device), proj_b.final.to(G.device)  # [1, D] each
    center = G.mean_latent().float()
    kw = dict(crossover=crossover, center=center)
    info: dict = {"mode": mode, "amount": amount, "crossover": crossover, "layout": G.layout.summary(),
                  "photos": {"a": str(args.photo_a), "b": str(args.photo_b)},
                  "final_lpips": {"a": float(proj_a.distances[-1]), "b": float(proj_b.distances[-1])}}

    still = f"morph-{mode}-{amount:.2f}.png"
    save_png(s.out / still, s.frames(morph(a, b, amount, mode, G.layout, **kw))[0])
    info["still"] = still
    if args.video:
        count = max(8, round(m.video_seconds * s.cfg.render.fps))
        path = loop_path(loop_keys(a, b, mode, G.layout, crossover=crossover), count, mode, G.layout, center=center)
        info["video"] = s.video(f"loop-{mode}.mp4", path)
    if args.grid:
        rows = [("photos", [face_a.image, s.frames(a, 128)[0], s.frames(b, 128)[0], face_b.image],
                 ["photo A", "A projected", "B projected", "photo B"])]
        header = [f"amount {v:.2f}" for v in amounts]  # the share of A (of the first side for style/channel)
        t = torch.tensor(amounts)[:, None]  # [K, 1]
        for x in grid_modes:  # --crossover applies to its own mode's row; the other split mode uses its middle
            lat = morph(a, b, t, x, G.layout, crossover=crossover if x == mode else None, center=center)
            label = x
            if x in ("style", "channel"):
                k = crossover if x == mode else None
                where = (f"layer {k if k else G.layout.num_layers // 2}" if x == "style"
                         else f"channel {k}" if k else "mid-layer")
                label = f"{x}\nsplit at\n{where}"
            rows.append((label, list(s.frames(lat, 128)), header if len(rows) == 1 else None))
        save_png(s.out / "grid.png", labelled_grid(rows))
        info["grid"] = {"file": "grid.png", "rows": ["photos: A, A projected, B projected, B"] + grid_modes,
                        "amounts": amounts}
    if args.ppl:
        from render.latent.ppl import path_length

        a64, b64, c64 = a.double().cpu(), b.double().cpu(), center.double().cpu()  # float64 (not on MPS): CPU
        res = path_length(G, lambda t: path_latents(a64, b64, t, mode, G.layout, crossover=crossover, center=c64),
                          samples=m.ppl_samples, seed=s.seed)
        log.info("perceptual path length (%s, A -> B, %d samples, eps %g): %.1f (plain mean %.1f)", mode,
                 m.ppl_samples, res.epsilon, res.ppl, res.mean)
        info["ppl"] = {"mode": mode, "ppl": res.ppl, "mean": res.mean, "samples": m.ppl_samples,
                       "epsilon": res.epsilon, "sampling": "stratified uniform t in [0, 1 - eps)"}
    s.finish(info)
    return 0


# ------------------------------------------------------------------------------------------------- variations


def run_variations(args: argparse.Namespace) -> int:
    import torch

    from render.latent.morph import loop_path, parse_layers, random_latents, resample_layers
    from render.pipeline.report import labelled_grid, save_png

    s = Session(args, "variations", [args.photo.stem])
    m, G = s.cfg.morph, s.G
    n, psi = m.variations, m.truncation
    layers = parse_layers(m.layers, G.layout.num_layers)
    face, proj = s.project(args.photo)
    latent = proj.final.to(G.device)  # [1, D]
    randoms = random_latents(G, n, s.seed, psi)  # [n, D]
    varied = resample_layers(latent, randoms, G.layout.layer_mask(layers))  # [n, D]

    tiles = list(s.frames(torch.cat([latent, varied]), 128))
    rows = [("face", [face.image, tiles[0]], ["photo", "projected"])] + [
        (f"{i + 1}-{min(i + 4, n)}", tiles[1 + i : 1 + i + 4]) for i in range(0, n, 4)]
    save_png(s.out / "grid.png", labelled_grid(rows))
    per_leg = max(2, round(m.video_seconds / 2 * s.cfg.render.fps))
    keys = [latent] + [v[None] for v in varied]
    video = s.video("loop.mp4", loop_path(keys, per_leg * len(keys), "lerp", G.layout))
    s.finish({"photo": str(args.photo), "n": n, "layers": [G.layout.names[i] for i in layers],
              "layer_indices": layers, "truncation": psi, "grid": "grid.png", "video": video,
              "final_lpips": float(proj.distances[-1])})
    return 0


# ------------------------------------------------------------------------------------------------- child


def run_child(args: argparse.Namespace) -> int:
    import torch

    from render.latent.morph import child_latents, child_masks
    from render.pipeline.report import labelled_grid, save_png

    s = Session(args, "child", [args.photo_a.stem, args.photo_b.stem])
    m, G = s.cfg.morph, s.G
    n, blend, unit = m.children, m.child_blend, m.child_unit
    masks = child_masks(G.layout, n, s.seed, unit=unit, groups=m.child_groups)  # [n, D]
    s.align(args.photo_a, args.photo_b)
    _, proj_a = s.project(args.photo_a)
    _, proj_b = s.project(args.photo_b)
    a, b = proj_a.final.to(G.device), proj_b.final.to(G.device)
    kids = child_latents(a, b, masks.to(G.device), blend)  # [n, D]
    frames = s.frames(kids)
    children = []
    for k, frame in enumerate(frames):
        name = f"child-{k + 1:02d}.png"
        save_png(s.out / name, frame)
        share = [float(masks[k, G.layout.slice(i)].mean()) for i in range(G.layout.num_layers)]
        from_a = [nm for nm, x in zip(G.layout.names, share) if x == 1.0]
        label = "A: " + ",".join(from_a) if unit == "layer" else f"{sum(share) / len(share):.0%} A"
        children.append({"file": name, "share_of_a_per_layer": dict(zip(G.layout.names, share)), "from_a": label})
    parents = s.frames(torch.cat([a, b]), 128)
    rows = [("parents", [parents[0], parents[1]], ["A projected", "B projected"])] + [
        (f"{i + 1}-{min(i + 4, n)}", list(frames[i : i + 4]), [c["from_a"] for c in children[i : i + 4]])
        for i in range(0, n, 4)]
    save_png(s.out / "grid.png", labelled_grid(rows))
    s.finish({"photos": {"a": str(args.photo_a), "b": str(args.photo_b)}, "n": n, "blend": blend, "unit": unit,
              "groups": m.child_groups, "children": children, "grid": "grid.png"})
    return 0
