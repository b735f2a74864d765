"""`run.py text | edit`: a face from words, and a photo's face edited by words or by named directions.

Torch and open_clip are imported only inside the handlers, so `run.py --help` stays fast.

    python run.py text "a smiling old man with round glasses"       -> media/text/<prompt>/
    python run.py edit FACE.jpg "with round glasses" --strength 1.5   -> media/edit/<photo>-<prompt>/
    python run.py edit FACE.jpg --smile 1.5 --yaw -0.5                -> media/edit/<photo>-smile+1.5-yaw-0.5/

Text needs CLIP ([clip] model and checkpoint, or --clip-model/--clip-checkpoint). Without it, a prompt is mapped
onto the edit-direction vocabulary of render/latent/directions.py ("smiling", "open mouth", "looking left", ...), and the
command says so. Outputs: `text` writes face.png, start.png, optimisation.mp4 and latent.npy; `edit` writes
photo.png (the aligned photo), before.png (its projection), after.png, compare.png (the three side by side),
edit.mp4 (before -> after -> before) and latents.npz; both write settings.json (the arguments, resolved values and
figures: CLIP similarities, dlib identity distances) and config.toml (the resolved config).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from pathlib import Path

from render.commands import common
from render.commands.common import cache_option, config_option, generator_option, out_option, seed_option

log = logging.getLogger("text")


def _direction_names() -> tuple[str, ...]:
    try:
        from render.faces.attributes import ATTRIBUTES  # numpy + PIL only
    except ImportError:
        return ()
    return tuple(ATTRIBUTES)


def _common(p: argparse.ArgumentParser) -> None:
    config_option(p, "--steps", "clip.steps", "text-steering steps (clip.steps)", type=int)
    config_option(p, "--every", "clip.every", "keep a video frame every N steps (clip.every)", type=int)
    config_option(p, "--lr", "clip.lr", "peak step in units of the latent's spread (clip.lr)", type=float)
    config_option(p, "--crops", "clip.crops", "augmented views scored by CLIP per step (clip.crops)", type=int)
    config_option(p, "--size", "render.size", "output image / frame side in pixels (render.size)", type=int)
    config_option(p, "--fps", "render.fps", "video frame rate (render.fps)", type=int)
    seed_option(p)
    generator_option(p)
    config_option(p, "--clip-model", "clip.model", 'open_clip architecture, e.g. "ViT-B-32", or a model-config .json '
                                                   "(clip.model)")
    config_option(p, "--clip-checkpoint", "clip.checkpoint", "local CLIP weights file (clip.checkpoint); nothing is "
                                                             "downloaded")
    out_option(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "text", help="a face from a description (CLIP)",
        description="Start from the best (by CLIP similarity) of --candidates random faces and optimise it toward "
                    "the prompt, scoring randomly cropped and augmented views each step. Writes face.png, "
                    "optimisation.mp4 (a frame every --every steps), latent.npy and settings.json to "
                    "media/text/<prompt>/. Without CLIP the prompt is mapped onto the edit-direction vocabulary.")
    p.add_argument("prompt", help='what the face should look like, e.g. "a smiling old man with round glasses"')
    config_option(p, "--candidates", "clip.candidates", "random faces to start from, the best is kept "
                                                         "(clip.candidates)", type=int)
    _common(p)
    p.set_defaults(func=run_text)

    names = _direction_names()
    p = subparsers.add_parser(
        "edit", help="edit a photo's face by text (CLIP) or by named directions (--smile 1.5 --yaw -0.5)",
        description="Align and project the photo (through the shared projection cache), then move its latent: "
                    "toward the prompt with CLIP while an LPIPS term and a latent pull keep the person "
                    "recognisable, and/or along fitted edit directions (`run.py directions` fits them). Writes "
                    "photo.png, before.png, after.png, compare.png (photo | before | after), edit.mp4 (before -> after -> "
                    "before, a loop), latents.npz and settings.json with dlib identity distances before and after.")
    p.add_argument("photo", type=Path, help="photo with a face")
    p.add_argument("prompt", nargs="?", help='the edit, e.g. "with round glasses" (optional with directions)')
    config_option(p, "--strength", "clip.strength", "weight of the text term; scales vocabulary amounts without "
                  "CLIP and is the amount of a bare --directions-file (clip.strength)", type=float)
    for name in names:
        p.add_argument(f"--{name.replace('_', '-')}", type=float, dest=f"dir_{name}", metavar="AMOUNT",
                       help=f"move along the '{name}' direction")
    p.add_argument("--direction", action="append", default=[], metavar="NAME=AMOUNT",
                   help="move along a direction by name (repeatable); names of --directions-file files are their stems")
    p.add_argument("--directions-file", action="append", default=[], type=Path, metavar="FILE.npy",
                   help="your own direction, [D] or one w (repeatable); applied with --strength unless --direction "
                        "STEM=AMOUNT gives its amount")
    config_option(p, "--project-steps", "render.steps", "projection steps for the photo (render.steps)", type=int)
    config_option(p, "--restore", "projection.restore", "old photos: restore \"auto\" | \"none\" | grayscale,lowres,jpeg: compare through the photo's degradation (projection.restore)")
    cache_option(p)
    _common(p)
    p.set_defaults(func=run_edit)


# ------------------------------------------------------------------------------------------------- shared set-up


def _clip_or_none(cfg, device):
    """The configured CLIP model, or None after saying in one line why not and what to do when none is configured
    (a prompt then falls back on the edit-direction vocabulary). A CLIP that is configured (or named by --clip-model
    or --clip-checkpoint) and cannot be loaded raises its ClipUnavailable line: the user asked for it, and a face
    made without it would pass for one made with it."""
    from render.latent.clip_text import ClipUnavailable, load_clip

    try:
        t0 = time.perf_counter()
        clip = load_clip(cfg.clip.model, cfg.clip.checkpoint, device, precision=cfg.clip.precision)
    except ClipUnavailable as e:
        if cfg.clip.model or cfg.clip.checkpoint:
            raise
        log.warning("%s", e)
        return None
    log.info("CLIP %s from %s (%.1f s)", clip.name, cfg.clip.checkpoint, time.perf_counter() - t0)
    return clip


def _directions(G, cfg, args) -> dict:
    from render.latent.directions import load_directions

    fit = "python run.py directions"  # the command that fits them for this very generator, into this cache_dir
    if getattr(args, "config", None):
        fit += f" --config {shlex.quote(str(args.config))}"
    if cfg.general.generator != "embedded":
        fit += f" --generator {shlex.quote(cfg.general.generator)}"
    return load_directions(G, cache_dir=Path(cfg.directions.cache_dir), fit=fit)


def _vocabulary_amounts(prompt: str, scale: float) -> dict[str, float] | None:
    """Direction amounts for the prompt's vocabulary phrases, announced plainly; None (after an error) if none."""
    from render.latent.clip_text import match_vocabulary
    from render.latent.directions import VOCABULARY

    amounts = {k: v * scale for k, v in match_vocabulary(prompt, VOCABULARY).items()}
    if not amounts:
        log.error("without CLIP only the edit-direction vocabulary is understood, and %r contains none of it: %s",
                  prompt, ", ".join(sorted(VOCABULARY)))
        return None
    log.warning("without CLIP, %r is mapped onto the edit-direction vocabulary: %s", prompt,
                ", ".join(f"{k} {v:+g}" for k, v in amounts.items()))
    return amounts


def _eased(start, directions: dict, amounts: dict, n: int):
    """[n, D] latents moving from start [1, D] to start + amounts * directions along an ease-in-out curve."""
    import torch

    from render.latent.directions import apply_directions
    from render.latent.morph import ease_in_out

    return torch.cat([apply_directions(start, directions, {k: v * float(t) for k, v in amounts.items()})
                      for t in ease_in_out(max(n, 2))])


def _progress_bar(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=quiet, dynamic_ncols=True)

    def progress(step: int, loss: float, sim: float) -> None:
        bar.update(1)
        if step % 10 == 0 or step == total:
            bar.set_postfix(similarity=f"{sim:.3f}")

    return bar, progress


def _finish(out: Path, cfg, args: argparse.Namespace, G, info: dict, t0: float) -> None:
    info = {"clip": {k: getattr(cfg.clip, k) for k in cfg.clip.__dataclass_fields__}, **info}
    common.write_settings(out, args.command, args, cfg, G, info, t0)


def _write_frames(out: Path, name: str, G, latents, cfg) -> int:
    from render.latent.frames import synthesize
    from render.latent.upscale import output_frames
    from sequences.video import write_video

    r = cfg.render
    frames = synthesize(G, latents)  # uint8 [K, R, R, 3]
    return write_video(out / name, output_frames(frames, r), r.fps, crf=r.crf, preset=r.preset)


def _save_arrays(path: Path, array=None, **arrays) -> None:
    """One array as .npy, or named arrays as .npz, written atomically."""
    import io

    import numpy as np

    from sequences.atomic import write_atomic

    buf = io.BytesIO()
    if array is not None:
        np.save(buf, array)
    else:
        np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------- text


def run_text(args: argparse.Namespace) -> int:
    from render.latent.clip_text import best_of, similarity, slug, steer
    from render.latent.frames import synthesize
    from render.latent.upscale import output_still
    from render.pipeline.report import save_png

    t0 = time.perf_counter()
    cfg, device, dtype, G = common.load(args)
    c, r = cfg.clip, cfg.render
    out = common.output_folder(args, cfg, "text", slug(args.prompt))
    clip = _clip_or_none(cfg, device)
    if clip is not None:
        text = clip.encode_text([args.prompt])  # [1, E]
        start, candidates = best_of(G, clip, text, candidates=c.candidates, seed=cfg.general.seed,
                                    truncation_psi=c.truncation)
        log.info("best of %d random faces: CLIP similarity %.3f (worst %.3f)", len(candidates), candidates.max(),
                 candidates.min())
        bar, progress = _progress_bar(c.steps, "text", args.quiet)
        with bar:
            run = steer(G, clip, text, start=start, steps=c.steps, every=c.every, lr=c.lr, crops=c.crops,
                        crop_scale=c.crop_scale, augment=c.augment, space=c.space, reg_weight=c.reg_weight,
                        seed=cfg.general.seed, dtype=dtype, progress=progress)
        latents = run.latents
        sims = similarity(G, clip, text, latents[[0, -1]])
        log.info("CLIP similarity of the whole face: %.3f -> %.3f", sims[0], sims[1])
        info = {"mode": "clip", "prompt": args.prompt, "candidate_similarity": candidates.round(4).tolist(),
                "similarity_start": round(float(sims[0]), 4), "similarity_end": round(float(sims[1]), 4),
                "similarity_per_step": run.similarity.round(4).tolist(), "frame_steps": run.steps.tolist()}
    else:
        amounts = _vocabulary_amounts(args.prompt, 1.0)
        if amounts is None:
            return 2
        start = G.sample(1, cfg.general.seed, c.truncation)  # [1, D]
        latents = _eased(start, _directions(G, cfg, args), amounts, c.steps // c.every + 1)
        info = {"mode": "vocabulary", "prompt": args.prompt, "directions": amounts}

    face = synthesize(G, latents[-1:])[0]  # uint8 [R, R, 3]
    save_png(out / "face.png", output_still(face, r))
    save_png(out / "start.png", output_still(synthesize(G, latents[:1])[0], r))
    info["frames"] = _write_frames(out, "optimisation.mp4", G, latents, cfg)
    _save_arrays(out / "latent.npy", latents[-1:].numpy())
    _finish(out, cfg, args, G, info, t0)
    return 0


# ------------------------------------------------------------------------------------------------- edit


MAX_AMOUNT = 100.0  # in standard deviations of the attribute: past a few, a face is no longer a face


def _requested_amounts(args: argparse.Namespace) -> dict[str, float]:
    """{direction: amount} from --smile-style flags and --direction NAME=AMOUNT; ValueError (one line) for a malformed
    item, a direction given twice (which one was meant?), or an amount that is no number or absurd (NaN or 1e30
    would draw a black face and still "succeed")."""
    amounts = {k[4:]: v for k, v in vars(args).items() if k.startswith("dir_") and v is not None}
    for item in args.direction:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            amount = float(value)
        except ValueError:
            raise ValueError(f"--direction {item!r}: expected NAME=AMOUNT, e.g. smile=1.5") from None
        if not sep or not name:
            raise ValueError(f"--direction {item!r}: expected NAME=AMOUNT, e.g. smile=1.5")
        if name in amounts:
            raise ValueError(f"--direction {item!r}: {name} is given twice; give each direction once")
        amounts[name] = amount
    for name, amount in amounts.items():
        if not -MAX_AMOUNT <= amount <= MAX_AMOUNT:  # NaN fails too
            raise ValueError(f"{name} {amount}: an amount is a number from {-MAX_AMOUNT:g} to {MAX_AMOUNT:g}")
    return amounts


def run_edit(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from render.pipeline.cache import project_photo
    from render.latent.clip_text import similarity, slug, steer
    from render.latent.frames import resample, synthesize
    from render.latent.upscale import output_still
    from render.faces.identity import identity_distance, identity_embedding
    from render.pipeline.report import save_png

    t0 = time.perf_counter()
    requested = _requested_amounts(args)
    if not (args.prompt or requested or args.directions_file):
        log.error("edit needs a prompt or directions: e.g. `edit FACE.jpg \"smiling\"` or `edit FACE.jpg --smile "
                  "1.5`, --direction NAME=AMOUNT, --directions-file FILE.npy")
        return 2
    cfg, device, dtype, G = common.load(args)
    c, r = cfg.clip, cfg.render
    name = slug(" ".join([args.prompt or ""] + [f"{k}{v:+g}" for k, v in requested.items()]
                         + [f.stem for f in args.directions_file]))
    out = common.output_folder(args, cfg, "edit", f"{slug(args.photo.stem, 30)}-{name}")
    amounts = dict(requested)
    clip = _clip_or_none(cfg, device) if args.prompt else None
    if args.prompt and clip is None:  # the fallback is decided before the (slow) projection
        vocab = _vocabulary_amounts(args.prompt, c.strength)
        if vocab is None:
            return 2
        for k, v in vocab.items():
            amounts[k] = amounts.get(k, 0.0) + v
    directions: dict = {}
    for file in args.directions_file:
        from render.latent.directions import load_user_direction

        directions[file.stem] = load_user_direction(file, G)
        amounts.setdefault(file.stem, c.strength)
    if set(amounts) - set(directions):
        directions = {**_directions(G, cfg, args), **directions}
    unknown = sorted(set(amounts) - set(directions))
    if unknown:  # said before the projection, not after it
        from render.latent.directions import DirectionsError

        raise DirectionsError(f"unknown direction {unknown[0]!r} (known: {', '.join(sorted(directions))})")

    face, proj = project_photo(G, args.photo, cfg, cache_dir=common.projection_cache(args, cfg), quiet=args.quiet,
                               dtype=dtype)  # through the projection cache shared with morph, variations, montage
    before = proj.final  # [1, D]
    path = [before]  # latents from before to after
    info: dict = {"mode": "clip" if clip is not None else "directions", "prompt": args.prompt,
                  "directions": amounts, "projection_lpips": round(float(proj.distances[-1]), 4)}
    if amounts:
        path.append(_eased(before, directions, amounts, max(r.fps, 2))[1:])
    if clip is not None:
        from render.models.lpips import load_lpips
        from render.latent.project import loss_side

        text = clip.encode_text([args.prompt])  # [1, E]
        lpips = load_lpips(cfg.projection.loss, device) if c.lpips_weight > 0 else None
        bar, progress = _progress_bar(c.steps, "edit", args.quiet)
        with bar:
            run = steer(G, clip, text, start=path[-1][-1:], steps=c.steps, every=c.every, lr=c.lr, crops=c.crops,
                        crop_scale=c.crop_scale, augment=c.augment, space=c.space, strength=c.strength,
                        reg_weight=c.reg_weight, identity_weight=c.identity_weight, lpips=lpips,
                        lpips_weight=c.lpips_weight,
                        lpips_size=loss_side(G, cfg.projection.loss_size), seed=cfg.general.seed, dtype=dtype,
                        progress=progress)
        path.append(run.latents[1:])
        sims = similarity(G, clip, text, torch.cat([before, run.final]))
        log.info("CLIP similarity to %r: %.3f -> %.3f", args.prompt, sims[0], sims[1])
        info.update(similarity_before=round(float(sims[0]), 4), similarity_after=round(float(sims[1]), 4),
                    similarity_per_step=run.similarity.round(4).tolist())
    latents = torch.cat(path)  # [K, D]: before ... after
    after = latents[-1:]

    small = synthesize(G, torch.cat([before, after]))  # uint8 [2, R, R, 3]
    e_photo, e_before, e_after = (identity_embedding(img) for img in (face.image, *small))  # [128] or None
    ids = {"photo_before": identity_distance(e_photo, e_before), "photo_after": identity_distance(e_photo, e_after),
           "before_after": identity_distance(e_before, e_after)}
    info["identity_distance"] = {k: (None if np.isnan(v) else round(v, 4)) for k, v in ids.items()}
    log.info("identity distance (dlib; < 0.6 is usually the same person): photo-before %.3f, photo-after %.3f, "
             "before-after %.3f", ids["photo_before"], ids["photo_after"], ids["before_after"])

    big = [resample(face.image, r.size, r.filter), *(output_still(f, r) for f in small)]  # the photo, the faces
    for file, img in zip(("photo.png", "before.png", "after.png"), big):
        save_png(out / file, img)
    gap = np.full((r.size, max(r.size // 32, 2), 3), 24, np.uint8)
    save_png(out / "compare.png", np.concatenate([big[0], gap, big[1], gap, big[2]], axis=1))
    loop = torch.cat([latents, latents.flip(0)[1:-1]]) if len(latents) > 2 else latents  # there and back again
    info["frames"] = _write_frames(out, "edit.mp4", G, loop, cfg)
    _save_arrays(out / "latents.npz", before=before.numpy(), after=after.numpy())
    _finish(out, cfg, args, G, info, t0)
    return 0
