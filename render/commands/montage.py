"""`run.py montage | directions`: a face assembled from picked features, and edit directions fitted without labels.

Torch is imported only inside the handlers, so `run.py --help` stays fast.

    media/montage/<run>/            grid-forehead.png ... grid-mouth.png, index.html, candidates.npz
    media/montage/<run>/<pick>/     composite.png, harmonised.png, sheet.png, harmonise.mp4, latent.npy,
                                    settings.json, config.toml
    media/directions/<generator>/   table.txt, report.json, strips/<direction>.png, settings.json, config.toml
    .cache/directions/<fingerprint>.npz   the fitted directions (`run.py edit --smile 1.5` reads them)
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from render.commands import common
from render.commands.common import config_option, generator_option, out_option, seed_option

log = logging.getLogger("montage")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "montage", help="build a face from the forehead, eyes, nose and mouth of numbered candidates",
        description="Make candidate faces (random seeds, or your photos projected), write one numbered grid per "
                    "feature and an HTML page, take your pick (--pick, or asked at a terminal), blend the picked "
                    "bands with feathered seams and harmonise the composite by projecting it into the generator. "
                    "Without --pick and without a terminal it writes the grids and stops: look at index.html and "
                    "run again with the same --seed and a --pick.")
    config_option(p, "--candidates", "montage.candidates", "how many random candidates (montage.candidates)",
                  type=int)
    seed_option(p, "first candidate seed; faces without landmarks are replaced by the next seed (seed)")
    p.add_argument("--from-photos", type=Path, metavar="DIR", help="candidates from the photos in DIR (aligned and "
                                                                    "projected) instead of random faces")
    p.add_argument("--pick", help="forehead=N,eyes=N,nose=N,mouth=N with the numbers shown in the grids")
    config_option(p, "--steps", "montage.steps", "harmonisation projection steps (montage.steps)", type=int)
    config_option(p, "--photo-steps", "render.steps", "projection steps per photo with --from-photos (render.steps)",
                  type=int)
    config_option(p, "--restore", "projection.restore", "--from-photos: restore \"auto\" | \"none\" | "
                  "grayscale,lowres,jpeg (projection.restore)")
    config_option(p, "--size", "render.size", "side of the written images and video (render.size)", type=int)
    generator_option(p)
    p.add_argument("--name", type=common.run_name, help="run name (default seed<S>, or photos-<DIR>)")
    out_option(p, "output folder (default media/montage/<run>/)")
    p.set_defaults(func=run_montage)

    p = subparsers.add_parser(
        "directions", help="fit edit directions (smile, mouth open, yaw, ...) from measured sample faces",
        description="Sample faces from the generator, measure attributes on each with dlib landmarks and pixel "
                    "statistics, fit one linear direction per attribute (ridge regression), cache them for this "
                    "generator (directions.cache_dir) and report how strongly each attribute responds when a face "
                    "moves along its direction and what else moves with it. `run.py edit` applies them.")
    config_option(p, "--samples", "directions.samples", "faces to sample and measure (directions.samples)", type=int)
    seed_option(p, "sampling seed (seed)")
    generator_option(p)
    out_option(p, "report folder (default media/directions/<generator>/)")
    p.set_defaults(func=run_directions)


# ------------------------------------------------------------------------------------------------------- montage


def _photo_candidates(G, folder: Path, cfg, cache_dir: Path | None, quiet: bool):
    from render.faces.align import ImageInputError, landmarks_of
    from render.pipeline.cache import project_photo
    from render.latent.frames import synthesize
    from render.latent.montage import Candidate, MontageError

    if not folder.is_dir():
        raise MontageError(f"{folder}: --from-photos needs a folder of photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for path in photos:
        try:
            face, result = project_photo(G, path, cfg, cache_dir=cache_dir, quiet=quiet)
        except ImageInputError as e:
            log.warning("skipping %s", e)
            continue
        img = synthesize(G, result.final)[0]  # uint8 [R,R,3]
        lm = landmarks_of(img)
        if lm is None:  # the projection reproduces the aligned photo: use its landmarks, scaled
            log.info("%s: no landmarks found on the projected face; using the photo's", path.name)
            lm = (face.landmarks + 0.5) * (img.shape[0] / face.image.shape[0]) - 0.5
        out.append(Candidate(len(out) + 1, path.stem, result.final.float().cpu(), img, lm))
    if len(out) < 2:
        raise MontageError(f"{folder}: {len(out)} usable face photos found; the montage needs at least 2")
    return out


def _ask_pick(count: int) -> str:
    from render.latent.montage import FEATURES

    print(f"Pick a candidate (1-{count}) for each feature; the grids are in the output folder.")
    return ",".join(f"{f}={input(f'  {f}: ').strip()}" for f in FEATURES)


def again(args: argparse.Namespace, seed: int, candidates: int) -> str:
    """The command that makes the same candidates into the same folder, for a run that ends at the grids: every
    option that chose them (their seed and number, or the photos and how they were projected), the generator, the
    settings file and the folder, shell-quoted; the user adds --pick."""
    words = ["python", "run.py"] + (["--config", str(args.config)] if getattr(args, "config", None) else [])
    words += ["montage", "--seed", str(seed)]  # random candidates' first seed, or the photos' projection seed
    words += ["--from-photos", str(args.from_photos)] if args.from_photos else ["--candidates", str(candidates)]
    given = [("--photo-steps", args.photo_steps if args.from_photos else None),
             ("--restore", args.restore if args.from_photos else None), ("--steps", args.steps),
             ("--size", args.size), ("--generator", args.generator), ("--name", args.name), ("--out", args.out)]
    words += [str(w) for flag, value in given if value is not None for w in (flag, value)]
    return " ".join(shlex.quote(w) for w in words)


def _write_page(out: Path, candidates, command: str) -> None:
    from render.latent.montage import FEATURES, page_html
    from sequences.atomic import write_atomic

    sections = [("Candidates by feature", [(f"grid-{f}.png", f) for f in FEATURES])]
    for res in sorted(p.parent for p in out.glob("*/harmonised.png")):
        sections.append((f"Result {res.name}", [(f"{res.name}/sheet.png", "picked bands | composite | harmonised")]))
    note = (f"{len(candidates)} candidates: " + ", ".join(f"{c.number} = {html.escape(c.label)}" for c in candidates)
            + f".<br>Pick with <code>{html.escape(command)} --pick forehead=N,eyes=N,nose=N,mouth=N</code>")
    write_atomic(out / "index.html", page_html(f"Montage {out.name}", sections, note).encode())


def run_montage(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from render.pipeline.chain import projection_settings
    from render.latent.frames import synthesize
    from render.latent.upscale import output_frames, output_still
    from render.models.lpips import load_lpips
    from render.latent.montage import FEATURES, MontageError, band_lpips, compose, feature_fidelity, feature_grid, \
        harmonise, hard_masks, parse_pick, pick_tag, sample_candidates, seam_ratio, step_ratio
    from render.pipeline.report import labelled_grid, save_png
    from sequences.video import write_video

    t0 = time.perf_counter()
    cfg, _, dtype, G = common.load(args)
    m, r = cfg.montage, cfg.render
    seed = cfg.general.seed
    run = args.name or (f"photos-{args.from_photos.resolve().name}" if args.from_photos else f"seed{seed}")
    out = common.output_folder(args, cfg, "montage", run)
    if args.from_photos:
        candidates = _photo_candidates(G, args.from_photos, cfg, common.projection_cache(args, cfg), args.quiet)
    else:
        candidates = sample_candidates(G, m.candidates, seed, m.truncation)
    hint = again(args, seed, m.candidates)
    for f in FEATURES:
        save_png(out / f"grid-{f}.png", feature_grid(candidates, f, cell=m.cell))
    np.savez_compressed(out / "candidates.npz", latents=np.concatenate([c.latent.numpy() for c in candidates]),
                        labels=np.array([c.label for c in candidates]))
    _write_page(out, candidates, hint)
    log.info("%d candidates: grids and index.html in %s", len(candidates), out)

    text = args.pick
    if text is None:
        if not sys.stdin.isatty():
            raise MontageError(f"no --pick given and no terminal to ask at: look at {out / 'index.html'} and run "
                               f"again: {hint} --pick forehead=N,eyes=N,nose=N,mouth=N")
        text = _ask_pick(len(candidates))
    pick = parse_pick(text, len(candidates))
    images, landmarks = [c.image for c in candidates], [c.landmarks for c in candidates]
    comp = compose(images, landmarks, pick, feather=m.feather)

    settings = {**projection_settings(cfg), "steps": m.steps, "every": m.every, "seed": seed}
    with tqdm(total=m.steps, desc="harmonise", unit="step", leave=False, disable=args.quiet) as bar:
        result = harmonise(G, comp, shading=m.shading, progress=lambda step, loss: bar.update(1), dtype=dtype,
                           **settings)
    frames = synthesize(G, result.latents)  # uint8 [K,R,R,3]
    face = frames[-1]
    lp = load_lpips(cfg.projection.loss, G.device)
    fidelity = feature_fidelity(lp, face, comp, images, landmarks, pick)
    masks = hard_masks(comp.weights)
    for k, f in enumerate(FEATURES):  # the composite's own band is its candidate moved: the blend's feathering only
        fidelity[f]["composite"] = round(band_lpips(lp, comp.image, comp.warped[k], masks[k]), 4)
    seams = {"composite": round(seam_ratio(comp.image, images, comp), 3),
             "harmonised": round(seam_ratio(face, images, comp), 3)}
    steps = {"composite": round(step_ratio(comp.image, images, comp), 3),
             "harmonised": round(step_ratio(face, images, comp), 3)}

    res = out / pick_tag(pick)
    save_png(res / "composite.png", output_still(comp.image, r))
    save_png(res / "harmonised.png", output_still(face, r))
    np.save(res / "latent.npy", result.final.numpy())
    picked = [comp.warped[k] for k in range(len(FEATURES))]
    caps = [f"{f} #{pick[f] + 1}" for f in FEATURES] + ["composite", "harmonised"]
    save_png(res / "sheet.png", labelled_grid([("", picked + [comp.image, face], caps)], cell=m.cell))
    hold = max(1, r.fps // 2)
    video = list(output_frames([comp.image] * hold + list(frames) + [face] * hold, r))  # upscaled: render.upscale
    n = write_video(res / "harmonise.mp4", np.stack(video), r.fps, crf=r.crf, preset=r.preset)
    info = {"pick": {f: {"number": pick[f] + 1, "candidate": candidates[pick[f]].label} for f in FEATURES},
            "candidates": [c.label for c in candidates], "feather": m.feather, "shading": m.shading,
            "harmonisation": settings,
            # to the composite at the start, to its seam-free stripes' target at the end (render/latent/montage.py)
            "lpips_to_target": {"start": float(result.distances[0]), "end": float(result.distances[-1])},
            "feature_lpips": fidelity, "seam_ratio": seams, "step_ratio": steps, "video_frames": n}
    common.write_settings(res, "montage", args, cfg, G, info, t0)
    _write_page(out, candidates, hint)
    for f in FEATURES:
        log.info("%-8s #%-2d band LPIPS to the picked source %.3f (composite %.3f), to the other candidates %.3f", f,
                 pick[f] + 1, fidelity[f]["picked"], fidelity[f]["composite"], fidelity[f]["others"])
    log.info("seam ratio (band borders' vertical gradient over the candidates'): composite %.2f, harmonised %.2f; "
             "step ratio (broad brightness step across them): composite %.2f, harmonised %.2f",
             seams["composite"], seams["harmonised"], steps["composite"], steps["harmonised"])
    log.info("harmonised (LPIPS to the composite %.3f at the start, to the seam-free target %.3f at the end) -> %s",
             result.distances[0], result.distances[-1], res)
    return 0


# ------------------------------------------------------------------------------------------------------- directions


def direction_table(stats: dict) -> str:
    """The report as a fixed-width table: one line per direction."""
    lines = [f"{'direction':16} {'cv_r2':>6} {'response':>9} {'r':>5} {'found':>6}  reliable  "
             "also moves (std per unit)"]
    for name, s in stats.items():
        if name.startswith("_"):
            continue
        if "response" not in s:
            lines.append(f"{name:16} {s.get('note', '')}")
            continue
        also = sorted(((k, v) for k, v in s["side_effects"].items() if v == v and abs(v) >= 0.25),
                      key=lambda kv: -abs(kv[1]))[:4]
        also_txt = ", ".join(f"{k} {v:+.2f}" for k, v in also) or "-"
        lines.append(f"{name:16} {s['cv_r2']:6.2f} {s['response']:+9.2f} {s['response_r']:5.2f} {s['found']:6.2f}  "
                     f"{'yes' if s['reliable'] else 'no':8}  {also_txt}")
    return "\n".join(lines)


def direction_strip(name: str, s: dict, images, amounts, cell: int = 96):
    """uint8 sheet: rows of faces, columns -2..+2 along one direction."""
    from render.pipeline.report import labelled_grid

    caps = [f"{a:+g}" for a in amounts]
    response = "n/a" if s["response"] != s["response"] else f"{s['response']:+.2f} std/unit"  # nan: never measured
    label = f"{name}\n{response}\n{'reliable' if s['reliable'] else 'unreliable'}"
    rows = [(label if i == 0 else "", list(images[i]), caps if i == 0 else []) for i in range(len(images))]
    return labelled_grid(rows, cell=cell)


def run_directions(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from render.models.base import generator_fingerprint
    from render.latent.directions import AMOUNTS, fit_directions, save_directions
    from render.pipeline.report import save_png
    from sequences.atomic import write_atomic

    t0 = time.perf_counter()
    cfg, _, _, G = common.load(args)
    d = cfg.directions
    out = common.output_folder(args, cfg, "directions", f"{G.name}-{generator_fingerprint(G)[:10]}")
    with tqdm(total=d.samples, desc="measure faces", unit="face", leave=False, disable=args.quiet) as bar:
        ds, strips = fit_directions(G, samples=d.samples, seed=cfg.general.seed, truncation_psi=d.truncation,
                                    response_faces=d.response_faces, min_response=d.min_response, min_r=d.min_r,
                                    progress=bar.update)
    path = save_directions(G, d.cache_dir, ds)
    table = direction_table(ds.stats)
    fit = ds.stats["_fit"]
    header = (f"{G.name}: {fit['measured']} of {fit['samples']} sampled faces measured (seed {fit['seed']}, "
              f"truncation {fit['truncation_psi']}); response = the attribute's change per unit amount in standard "
              f"deviations, measured on {fit['response_faces']} held-out faces moved by {list(AMOUNTS)}")
    write_atomic(out / "table.txt", (header + "\n\n" + table + "\n").encode())
    write_atomic(out / "report.json", json.dumps(ds.stats, indent=2) + "\n")
    for name, images in strips.items():
        save_png(out / "strips" / f"{name}.png", direction_strip(name, ds.stats[name], images[:3], AMOUNTS))
    common.write_settings(out, "directions", args, cfg, G, {"cache": str(path), "directions": ds.names}, t0)
    print(header + "\n\n" + table)
    reliable = [n for n in ds.names if ds.stats.get(n, {}).get("reliable")]
    log.info("%d of %d directions respond reliably (%s); cached in %s; report in %s", len(reliable), len(ds.names),
             ", ".join(reliable) or "none", path, out)
    return 0
