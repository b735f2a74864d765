"""What an old or difficult photo has lost, measured so that projection can compare through it (issue #22).

numpy + PIL only. Three losses are measured when a photo is aligned (render/faces/align.py keeps the figures on its
AlignedFace) and turned into a `Restore` for one generator by `resolve_restore`:

    grayscale  the colour channels are one function of brightness (black and white, or a sepia / toned print): the
               colour residual left after predicting R, G and B linearly from the luma is a few levels at most
    lowres     the face carries detail over fewer pixels than the generator draws: its crop's side in the photo (the
               FFHQ square of the landmarks, before alignment), or less where the aligned face holds no detail
               beyond a smaller size (a small photo enlarged before it reached us)
    jpeg       strong 8x8 block edges: the mean jump across one column (row) phase of 8 stands far above the others

    face = align_file("grandma.jpg", cfg.align)
    r = resolve_restore("auto", face, G.resolution)   # Restore(kinds=("grayscale", "lowres"), native=21.3, ...)
    r.describe()                                     # "grayscale (colour residual 0.4), lowres (21 px across)"

Projection (render/latent/degrade.py) then compares degrade(G(latent)) with the photo: the grayscale of the
picture, the picture reduced to `native` pixels across, or (JPEG) its block edges softened; grayscale and JPEG
restores also hold the picture's colour to broad areas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sequences.config import RESTORE_KINDS as KINDS, parse_restore

GRAY_RESIDUAL = 3.0  # RMS colour residual (0..255 levels) under which a photo is monochrome: gray and toned demo faces
# measure under 2, the colour ones 10 or more (bench/RESULTS.md)
JPEG_BLOCKING = 1.8  # strongest 8-phase's mean jump over the others' median: the demo photos measure 1.0-1.4, their
# faces saved at JPEG quality 8 2.7-3.5
BLOCK = 8  # JPEG's block side in pixels
DETAIL_SIDES = (12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128)  # sides tried for the detail a face holds
DETAIL_LOSS = 0.03  # a side keeps the detail when the round trip through it loses under this share of the
# detail variance (what the round trip through 8 px loses)


@dataclass(frozen=True)
class Condition:
    """The figures measured on a photo when it is aligned."""

    colour_residual: float  # RMS levels of colour not explained by brightness (0: gray or toned)
    blocking: float  # JPEG block-edge ratio (1: none)
    scale: float  # side of the face's FFHQ crop in source pixels (the landmarks' scale before alignment)
    detail: float  # side in pixels at which the aligned face keeps its detail (at most its aligned side)


@dataclass(frozen=True)
class Restore:
    """The degradations a projection compares through, and their sizes."""

    kinds: tuple[str, ...] = ()
    native: float = 0.0  # lowres: pixels across the aligned crop that carry detail
    block: float = 0.0  # jpeg: the block side as a share of the aligned crop's side
    figures: str = ""  # what was measured, for the log

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def settings(self) -> dict:
        """What of it shapes a projection (part of its cache key; {} when nothing is restored)."""
        if not self.kinds:
            return {}
        return {"kinds": list(self.kinds), "native": round(self.native, 2), "block": round(self.block, 5),
                "version": RESTORE_VERSION}

    def describe(self) -> str:
        return (", ".join(self.kinds) or "none") + (f" ({self.figures})" if self.figures else "")


NO_RESTORE = Restore()
# Part of a restored projection's cache key: raise it when the same Restore gives another trajectory. 2: the
# grayscale restore's chroma prior and the lowres restore's kept share of the full picture (render/latent/degrade.py);
# 3: the JPEG restore's chroma prior, and no blur for blocks under 3 px; 4: the JPEG blur an eighth of a block at
# every size, not half a block from 3 px.
RESTORE_VERSION = 4


def luma(img: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 -> [H,W] float64 BT.601 luma in 0..255."""
    return np.asarray(img, np.float64) @ np.array([0.299, 0.587, 0.114])


def colour_residual(img: np.ndarray) -> float:
    """RMS (0..255 levels) of what is left of R, G and B after predicting each linearly from the luma: ~0 for a
    gray or sepia photo (one tone curve per channel), several levels for a colour one."""
    a = np.asarray(img, np.float64).reshape(-1, 3)
    if len(a) > 200_000:
        a = a[:: len(a) // 200_000]
    y = a @ np.array([0.299, 0.587, 0.114])
    X = np.stack([y, np.ones_like(y)], 1)  # [N,2]
    coef, *_ = np.linalg.lstsq(X, a, rcond=None)
    return float(np.sqrt(np.mean((a - X @ coef) ** 2)))


def blocking(img: np.ndarray) -> float:
    """JPEG blockiness of [H,W,3] uint8: per axis, the mean absolute jump between neighbouring pixels at each of the
    8 phases (x mod 8); the strongest phase over the median of the others, averaged over both axes. Any phase counts,
    so a cropped or quarter-turned JPEG measures the same. ~1 without blocking."""
    y = luma(img)
    ratios = []
    for d in (np.abs(np.diff(y, axis=1)).mean(0), np.abs(np.diff(y, axis=0)).mean(1)):  # per column, per row
        if len(d) < 4 * BLOCK:
            return 1.0
        phases = np.array([d[p::BLOCK].mean() for p in range(BLOCK)])
        k = int(np.argmax(phases))
        ratios.append(phases[k] / max(np.median(np.delete(phases, k)), 1e-6))
    return float(np.mean(ratios))


def detail_side(img: np.ndarray, sides=DETAIL_SIDES) -> float:
    """The smallest side (of `sides`, else the image's) through which [S,S,3] uint8 makes a round trip (down, then
    back up) losing under DETAIL_LOSS of the detail variance that a round trip through 8 px loses."""
    y = luma(img).astype(np.float32)
    s = y.shape[0]
    pil = Image.fromarray(y, mode="F")

    def loss(side: int) -> float:
        small = pil.resize((side, side), Image.Resampling.BOX if side * 2 <= s else Image.Resampling.BILINEAR,
                           reducing_gap=None)
        back = np.asarray(small.resize((s, s), Image.Resampling.BICUBIC))
        return float(np.mean((back - y) ** 2))

    total = loss(8)
    for side in sides:
        if side >= s:
            break
        if loss(side) < DETAIL_LOSS * total:
            return float(side)
    return float(s)


def measure(img: np.ndarray, quad: np.ndarray, aligned: np.ndarray) -> Condition:
    """The Condition of a photo [H,W,3] uint8 whose face's FFHQ crop square is `quad` [4,2] (source pixels) and
    whose aligned face is `aligned` [S,S,3]. Colour and blocking are measured on the crop's bounding box."""
    h, w = img.shape[:2]
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    box = img[max(lo[1], 0): min(hi[1], h), max(lo[0], 0): min(hi[0], w)]
    if box.shape[0] < 16 or box.shape[1] < 16:
        box = img
    scale = float(np.hypot(*(quad[3] - quad[0])))
    return Condition(colour_residual(box), blocking(box), scale, detail_side(aligned))


def resolve_restore(spec, condition: Condition | None, resolution: int) -> Restore:
    """The Restore of a face for a generator of `resolution` px: `spec` "none" -> none; "auto" -> what the
    Condition shows; an explicit list -> those kinds (sized by the Condition where it is known)."""
    choice = parse_restore(spec)  # "auto", "none" or a tuple of kinds
    if choice == "none" or (condition is None and choice == "auto"):
        return NO_RESTORE
    c = condition or Condition(0.0, 1.0, float(resolution), float(resolution))
    native = min(c.scale, c.detail)
    block_px = BLOCK / c.scale * resolution  # a JPEG block's side in the generator's pixels
    figures = {"grayscale": f"colour residual {c.colour_residual:.1f}", "lowres": f"{native:.0f} px across",
               "jpeg": f"blocking {c.blocking:.2f}, {block_px:.1f} px blocks"}
    if choice == "auto":
        found = {"grayscale": c.colour_residual < GRAY_RESIDUAL, "lowres": native < resolution,
                 "jpeg": c.blocking > JPEG_BLOCKING}
        kinds = tuple(k for k in KINDS if found[k])
    else:
        kinds = choice
    if not kinds:
        return NO_RESTORE
    native = native if "lowres" not in kinds or native < resolution else resolution / 2
    return Restore(kinds, native if "lowres" in kinds else 0.0, BLOCK / c.scale if "jpeg" in kinds else 0.0,
                   "; ".join(figures[k] for k in kinds))


def colourfulness(img: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness of [H,W,3] uint8: 0 for gray, ~30-60 for ordinary colour photos."""
    a = np.asarray(img, np.float64)
    rg, yb = a[..., 0] - a[..., 1], 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))
