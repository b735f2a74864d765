"""Feature montage: build a face from the forehead, eyes, nose and mouth of different candidates.

The forensic-artist workflow: look at numbered candidates feature by feature, pick one of each, blend the picked
bands into a composite, then *harmonise* it by projecting the composite into the generator, so the result is one
coherent face rather than a collage.

    cands = sample_candidates(G, 10, seed=0, truncation_psi=0.8)
    comp = compose([c.image for c in cands], [c.landmarks for c in cands], {"forehead": 2, "eyes": 6, ...})
    result = project(G, comp.image, steps=300)          # render.latent.project: the harmonised face is result.final

Bands follow each face's 68 landmarks in its face frame (`render.faces.attributes.face_frame`: v runs down the face,
perpendicular to the eye line): forehead | eyes between the brows and the eye tops; eyes | nose a third of the way
from the lower lids to the nostrils; nose | mouth halfway between the nostrils and the top of the upper lip. Each
picked source is first moved onto a common geometry (the mean of the picked faces' landmarks) by the similarity
transform that best aligns its band's landmarks, and the bands meet in linear alpha ramps (feathered seams).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from render.faces.attributes import FaceFrame, face_frame
from render.faces.degradation import luma
from sequences.config import MontageConfig

log = logging.getLogger(__name__)

FEATURES = ("forehead", "eyes", "nose", "mouth")
BROWS, EYE_TOPS, EYE_BOTTOMS = list(range(17, 27)), [37, 38, 43, 44], [40, 41, 46, 47]
NOSTRILS, UPPER_LIP_TOP = list(range(31, 36)), [49, 50, 51, 52, 53]
EYES = list(range(36, 48))
# landmarks that place each feature (the similarity transform of a picked source is fitted on these)
BAND_POINTS = {
    "forehead": BROWS + EYES,
    "eyes": BROWS + EYES,
    "nose": list(range(27, 36)),
    "mouth": list(range(48, 68)) + [6, 7, 8, 9, 10],
}


class MontageError(ValueError):
    """A bad --pick, or no usable candidates; one line."""


@dataclass
class Candidate:
    number: int  # 1-based, as shown in the grids
    label: str  # "seed 17" or the photo's name
    latent: torch.Tensor  # [1, D] on CPU
    image: np.ndarray  # uint8 [R,R,3], the generator's output
    landmarks: np.ndarray  # [68,2] in image pixels


@dataclass
class Composite:
    image: np.ndarray  # uint8 [R,R,3], the feathered blend
    landmarks: np.ndarray  # [68,2] the common geometry (mean of the picked faces)
    weights: np.ndarray  # [4,R,R] float32, one alpha per feature, summing to 1
    warped: np.ndarray  # [4,R,R,3] uint8, each picked source moved onto the common geometry
    bounds: np.ndarray  # [3] band boundaries (v in pixels, face frame of `landmarks`)


# ---------------------------------------------------------------------------------------------------------- bands


def band_bounds(lm: np.ndarray) -> tuple[FaceFrame, np.ndarray]:
    """The face frame and the three band boundaries [3] (v offsets in pixels, increasing down the face)."""
    f = face_frame(lm)
    v = f.to_face(lm)[:, 1]  # [68]
    b1 = (v[BROWS].max() + v[EYE_TOPS].min()) / 2  # forehead | eyes
    lids, nostrils = v[EYE_BOTTOMS].max(), v[NOSTRILS].min()
    b2 = lids + (nostrils - lids) / 3  # eyes | nose
    b3 = (v[NOSTRILS].max() + v[UPPER_LIP_TOP].min()) / 2  # nose | mouth
    return f, np.maximum.accumulate(np.array([b1, b2, b3]))


def down_the_face(frame: FaceFrame, shape: tuple[int, int]) -> np.ndarray:
    """[H,W] float64: each pixel centre's v (pixels down the face from the eyes' midpoint) in `frame`."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return (xs - frame.origin[0]) * frame.v[0] + (ys - frame.origin[1]) * frame.v[1]


def band_weights(frame: FaceFrame, bounds: np.ndarray, shape: tuple[int, int], feather: float) -> np.ndarray:
    """[4,H,W] float32 alphas (forehead, eyes, nose, mouth) that sum to 1, with linear ramps `feather` px wide."""
    vv = down_the_face(frame, shape)  # [H,W]
    ramps = [np.clip((vv - b) / max(feather, 1e-6) + 0.5, 0.0, 1.0) for b in bounds]  # 0 above, 1 below
    edges = [np.ones_like(vv)] + ramps + [np.zeros_like(vv)]
    return np.stack([edges[i] - edges[i + 1] for i in range(4)]).astype(np.float32)


def hard_masks(weights: np.ndarray) -> np.ndarray:
    """[4,H,W] booleans: the feature that dominates each pixel."""
    return weights == weights.max(axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------------------- warping


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[2,3] least-squares similarity transform (scale, rotation, shift) taking points src [K,2] onto dst [K,2]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = (a**2).sum()
    U, S, Vt = np.linalg.svd(b.T @ a)  # Umeyama 1991
    d = np.array([1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ np.diag(d) @ Vt
    scale = (S * d).sum() / max(var, 1e-12)
    A = scale * R
    return np.concatenate([A, (md - A @ ms)[:, None]], axis=1)


def warp(img: np.ndarray, A: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] moved by the [2,3] transform A (pixel centres), bilinear, edges extended -> uint8 [H,W,3]."""
    h, w = img.shape[:2]
    inv = np.linalg.inv(np.vstack([A, [0, 0, 1]]))[:2]  # target pixel -> source pixel
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    grid = torch.from_numpy(np.stack([(sx + 0.5) / w * 2 - 1, (sy + 0.5) / h * 2 - 1], -1)).float()[None]
    src = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()  # [1,3,H,W] 0..255
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def move_onto(img: np.ndarray, lm: np.ndarray, target: np.ndarray, feature: str) -> np.ndarray:
    """A face moved so that its `feature` landmarks best match `target`'s."""
    pts = BAND_POINTS[feature]
    return warp(img, similarity(np.asarray(lm)[pts], np.asarray(target)[pts]))


# ---------------------------------------------------------------------------------------------------------- blending


def compose(images: list[np.ndarray], landmarks: list[np.ndarray], pick: dict[str, int], *,
            feather: float = 0.25) -> Composite:
    """Blend the picked bands. `pick` maps every feature to a 0-based index into images / landmarks; `feather` is
    the seam width as a fraction of the eye-to-mouth distance."""
    idx = [pick[f] for f in FEATURES]
    target = np.mean([np.asarray(landmarks[i], np.float64) for i in idx], axis=0)  # [68,2]
    frame, bounds = band_bounds(target)
    shape = images[idx[0]].shape[:2]
    weights = band_weights(frame, bounds, shape, feather * frame.s)  # [4,H,W]
    warped = np.stack([move_onto(images[i], landmarks[i], target, f) for f, i in zip(FEATURES, idx)])  # [4,H,W,3]
    blend = (weights[..., None] * warped.astype(np.float32)).sum(axis=0)  # [H,W,3] 0..255
    return Composite(np.clip(np.rint(blend), 0, 255).astype(np.uint8), target, weights, warped, bounds)


def parse_pick(text: str, count: int) -> dict[str, int]:
    """"forehead=3,eyes=7,nose=1,mouth=9" (1-based candidate numbers) -> {"forehead": 2, ...} (0-based)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in FEATURES:
            raise MontageError(f"--pick: {part!r} is not FEATURE=NUMBER with FEATURE one of {', '.join(FEATURES)}")
        try:
            number = int(value)
        except ValueError:
            raise MontageError(f"--pick: {part!r}: {value.strip()!r} is not a candidate number") from None
        if not 1 <= number <= count:
            raise MontageError(f"--pick: {name}={number} is out of range: candidates are numbered 1..{count}")
        if name in out:
            raise MontageError(f"--pick: {name} is given twice ({name}={out[name] + 1} and {name}={number})")
        out[name] = number - 1
    missing = [f for f in FEATURES if f not in out]
    if missing:
        raise MontageError(f"--pick: no candidate given for {', '.join(missing)} "
                           f"(e.g. --pick forehead=1,eyes=2,nose=3,mouth=4)")
    return out


def pick_tag(pick: dict[str, int]) -> str:
    """{"forehead": 2, ...} -> "forehead3-eyes7-nose1-mouth9" (1-based), a folder name for the result."""
    return "-".join(f"{f}{pick[f] + 1}" for f in FEATURES)


# ---------------------------------------------------------------------------------------------------------- candidates


def sample_candidates(G, count: int, seed: int, truncation_psi: float, *, max_tries: int | None = None
                      ) -> list[Candidate]:
    """`count` generated faces from seeds seed, seed+1, ...; a face without detectable landmarks is replaced by
    the next seed."""
    from render.faces.align import landmarks_of
    from render.latent.frames import synthesize

    out: list[Candidate] = []
    s = seed
    limit = seed + (max_tries or 5 * count + 10)
    while len(out) < count and s < limit:
        latent = G.sample(1, s, truncation_psi).float().cpu()  # [1, D]
        img = synthesize(G, latent)[0]  # uint8 [R,R,3]
        lm = landmarks_of(img)
        if lm is None:
            log.info("seed %d: no face found in the generated image; trying the next seed", s)
        else:
            out.append(Candidate(len(out) + 1, f"seed {s}", latent, img, lm))
        s += 1
    if len(out) < count:
        raise MontageError(f"only {len(out)} of {count} candidates have a detectable face after {s - seed} seeds")
    return out


# ---------------------------------------------------------------------------------------------------------- seams


def seam_rows(frame: FaceFrame, bounds: np.ndarray, shape: tuple[int, int], half: float = 2.0) -> np.ndarray:
    """[H,W] booleans: the pixels within `half` px (down the face) of a band border, across the whole picture (the
    bands, and so their seams, run from edge to edge)."""
    vv = down_the_face(frame, shape)  # [H,W]
    return np.min([np.abs(vv - b) for b in bounds], axis=0) <= half


def vertical_gradient(img: np.ndarray, rows: np.ndarray) -> float:
    """Mean absolute vertical step (0..255 levels, averaged over RGB) of uint8 [H,W,3] at the pixels of `rows` [H,W]
    (each pixel's step to the one below it)."""
    a = np.asarray(img, np.float32)
    g = np.abs(np.diff(a, axis=0)).mean(-1)  # [H-1,W]
    m = rows[:-1]
    return float(g[m].mean()) if m.any() else float("nan")


def seam_ratio(img: np.ndarray, samples: list[np.ndarray], comp: Composite, half: float = 2.0) -> float:
    """Seam visibility of `img` (a composite or a harmonised face): the mean vertical gradient on the band-border
    rows of `comp`'s geometry, over the same rows' mean in the generator's own `samples` (1: no more edge there than
    in a generated face; a hard seam: well above 1)."""
    rows = seam_rows(face_frame(comp.landmarks), comp.bounds, img.shape[:2], half)
    return vertical_gradient(img, rows) / max(np.mean([vertical_gradient(x, rows) for x in samples]), 1e-6)


def border_steps(img: np.ndarray, comp: Composite, width: float) -> float:
    """The broad brightness step at the band borders of `comp`'s geometry in uint8 [H,W,3] `img`: per border and
    picture column, the mean luma of the `width` px above the border against the `width` px below it (0..255
    levels), averaged over columns and borders. A seam spread over several rows has little gradient on any one
    row but keeps its step."""
    h, w = img.shape[:2]
    vv = down_the_face(face_frame(comp.landmarks), (h, w))  # [H,W]
    y = luma(img)  # [H,W]
    cols = np.broadcast_to(np.arange(w), (h, w))
    steps = []
    for b in comp.bounds:
        sides = []
        for mask in ((vv >= b - width) & (vv < b), (vv > b) & (vv <= b + width)):
            n = np.bincount(cols[mask], minlength=w)
            sides.append((np.bincount(cols[mask], weights=y[mask], minlength=w), n))
        (sa, na), (sb, nb) = sides
        both = (na > 0) & (nb > 0)
        if both.any():
            steps.append(np.abs(sa[both] / na[both] - sb[both] / nb[both]).mean())
    return float(np.mean(steps)) if steps else float("nan")


STEP_WIDTH = 0.375  # step_ratio's strips either side of a border, as a fraction of the eye-to-mouth distance (6 px
# on the embedded generator's 64 px faces)


def step_ratio(img: np.ndarray, samples: list[np.ndarray], comp: Composite, width: float = STEP_WIDTH) -> float:
    """border_steps of `img`, over strips `width` x the eye-to-mouth distance wide, over the same measure in the
    generator's own `samples` (1: a brightness change across the borders no larger than a generated face's there)."""
    px = width * face_frame(comp.landmarks).s
    return border_steps(img, comp, px) / max(np.mean([border_steps(x, comp, px) for x in samples]), 1e-6)


# ---------------------------------------------------------------------------------------------------------- harmonising

SHADING = MontageConfig.shading  # config montage.shading, defined once there: the broad light replaced, as a
# fraction of the eye-to-mouth distance. 0.1, 0.15, 0.25, 0.5 and none took the broad step at the borders (step_ratio
# over 6 px strips) to 0.98 / 1.09 / 1.10 / 1.20 / 1.36 over 20 picks with the same band fidelity (bench/RESULTS.md)


def seam_free_target(comp: Composite, face: np.ndarray, width: float, image: np.ndarray | None = None) -> np.ndarray:
    """uint8 [R,R,3]: the composite (or `image` on its geometry), with its band borders replaced by `face` (a
    coherent generated face) in soft stripes `width` px wide (cosine shoulders), so a projection toward it takes its
    features from the bands and its borders from a real face."""
    vv = down_the_face(face_frame(comp.landmarks), face.shape[:2])  # [H,W]
    d = np.min([np.abs(vv - b) for b in comp.bounds], axis=0) / max(width, 1e-6)  # [H,W] 0 on a border
    m = np.where(d < 0.5, 1.0, np.where(d < 1.0, 0.5 + 0.5 * np.cos((d - 0.5) * 2 * np.pi), 0.0))[..., None]
    base = (comp.image if image is None else image).astype(np.float64)
    mixed = base * (1 - m) + np.asarray(face, np.float64) * m
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def reshade(comp: Composite, sigma: float) -> np.ndarray:
    """uint8 [R,R,3]: the composite with its light and colour broader than a Gaussian of `sigma` px taken from the
    mean of the picked faces, each whole and moved onto the common geometry. Bands cut from differently lit faces
    keep their features and lose the steps between them; the mean of whole faces has no band borders."""
    from render.latent.degrade import blur

    def low(x: np.ndarray) -> np.ndarray:  # [...,H,W,3] -> its part broader than the Gaussian, float64
        t = torch.from_numpy(np.asarray(x, np.float64).reshape(-1, *x.shape[-3:])).permute(0, 3, 1, 2)
        return blur(t, sigma).permute(0, 2, 3, 1).numpy().reshape(x.shape)

    img = comp.image.astype(np.float64)
    out = img - low(img) + low(comp.warped).mean(axis=0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def harmonise(G, comp: Composite, *, steps: int, every: int, seed: int = 0, seam_width: float = 0.5,
              shading: float = SHADING, **settings):
    """Pull the composite onto the generator's faces, coarse to fine, so the bands end as one face (issue #22):

    0. with `shading` > 0, the composite's light and colour broader than a Gaussian of `shading` x the eye-to-mouth
       distance are replaced by those of the picked faces' mean (`reshade`): the bands keep their features and
       lose their brightness steps, which a single latent would otherwise draw as a lit band across the face;
    1. a third of the steps in one latent vector (space "single": z or w), which cannot draw a band seam, toward
       the composite: a coherent face with the picked features roughly in place;
    2. the rest in the layer-wise latent from there, toward the composite whose border stripes (`seam_width` x the
       eye-to-mouth distance wide) show the step-1 face instead: features from the bands, borders from a real face.

    Returns render.latent.project's Projection of both stages (the latents of step 2 follow those of step 1)."""
    from render.latent.frames import synthesize
    from render.latent.project import Projection, project

    settings = {k: v for k, v in settings.items() if k not in ("space", "start")}
    first = max(1, steps // 3)
    s = face_frame(comp.landmarks).s
    image = reshade(comp, shading * s) if shading > 0 else comp.image
    coarse = project(G, image, steps=first, every=every, seed=seed, space="single", **settings)
    face = synthesize(G, coarse.final)[0]
    target = seam_free_target(comp, face, seam_width * s, image)
    fine = project(G, target, start=coarse.final, steps=steps - first, every=every, seed=seed + 1, space="plus",
                   **settings)
    return Projection(torch.cat([coarse.latents, fine.latents[1:]]),
                      np.concatenate([coarse.steps, fine.steps[1:] + first]),
                      np.concatenate([coarse.losses, fine.losses]), np.concatenate([coarse.distances, fine.distances]))


# ---------------------------------------------------------------------------------------------------------- metrics


def band_lpips(lp, a: np.ndarray, b: np.ndarray, mask: np.ndarray, size: int = 64) -> float:
    """LPIPS between two uint8 [H,W,3] faces inside `mask` [H,W] (outside it both are mid-grey)."""
    def tensor(img):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1,3,H,W]
        x = x * torch.from_numpy(mask.astype(np.float32))[None, None]
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    dev = next(iter(lp.parameters()), torch.empty(0)).device
    with torch.no_grad():
        return float(lp(tensor(a).to(dev), tensor(b).to(dev)).sum())


def feature_fidelity(lp, face: np.ndarray, comp: Composite, images: list[np.ndarray], landmarks: list[np.ndarray],
                     pick: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per feature: LPIPS inside its band between `face` (the harmonised result) and the picked source, and the
    mean over the other candidates (each moved onto the composite's geometry the same way). Lower is closer."""
    masks = hard_masks(comp.weights)
    out = {}
    for k, f in enumerate(FEATURES):
        picked = band_lpips(lp, face, comp.warped[k], masks[k])
        others = [band_lpips(lp, face, move_onto(images[i], landmarks[i], comp.landmarks, f), masks[k])
                  for i in range(len(images)) if i != pick[f]]
        out[f] = {"picked": round(picked, 4), "others": round(float(np.mean(others)), 4) if others else float("nan")}
    return out


# ---------------------------------------------------------------------------------------------------------- pictures


def feature_grid(candidates: list[Candidate], feature: str, *, cell: int = 128, cols: int = 5) -> np.ndarray:
    """uint8 sheet: every candidate with its `feature` band lit and the rest dimmed, numbered as in --pick."""
    from PIL import Image, ImageDraw

    from render.latent.frames import resample

    k = FEATURES.index(feature)
    pad, title, cols = 6, 22, min(cols, len(candidates))
    rows = -(-len(candidates) // cols)
    sheet = Image.new("RGB", (pad + cols * (cell + pad), title + pad + rows * (cell + pad)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), f"{feature}: pick a number  (--pick {feature}=N)", fill=(230, 230, 230))
    for j, c in enumerate(candidates):
        frame, bounds = band_bounds(c.landmarks)
        w = band_weights(frame, bounds, c.image.shape[:2], 0.0)[k]  # [R,R] hard band
        lit = c.image.astype(np.float32) * (0.3 + 0.7 * w[..., None])
        tile = Image.fromarray(resample(np.clip(np.rint(lit), 0, 255).astype(np.uint8), cell, "lanczos"))
        x, y = pad + (j % cols) * (cell + pad), title + pad + (j // cols) * (cell + pad)
        sheet.paste(tile, (x, y))
        draw.rectangle((x, y, x + 22, y + 15), fill=(0, 0, 0))
        draw.text((x + 4, y + 2), str(c.number), fill=(255, 220, 120))
    return np.asarray(sheet)


def page_html(title: str, sections: list[tuple[str, list[tuple[str, str]]]], note: str = "") -> str:
    """A plain HTML page: sections of (heading, [(image file, caption)])."""
    from html import escape

    parts = [f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title>",
             "<style>body{background:#181818;color:#ddd;font:15px sans-serif;margin:24px}"
             "figure{display:inline-block;margin:0 16px 16px 0;vertical-align:top}img{image-rendering:auto}"
             "code{background:#333;padding:2px 5px}</style>", f"<h1>{escape(title)}</h1>"]
    if note:
        parts.append(f"<p>{note}</p>")
    for heading, figures in sections:
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts += [f"<figure><img src='{escape(src)}' alt='{escape(cap)}'><figcaption>{escape(cap)}</figcaption>"
                  "</figure>" for src, cap in figures]
    return "\n".join(parts) + "\n"
