"""Face attributes measured from dlib's 68 landmarks and pixel statistics (numpy + PIL, no torch).

    lm = landmarks_of(img)                   # [68,2] in img pixels (render.faces.align)
    a = measure(img, lm)                     # {"mouth_open": 0.12, "smile": 0.03, ..., "hair_darkness": 0.71}

Geometry is measured in the *face frame*: origin at the midpoint of the eyes, `u` along the eye line (toward the
image right), `v` perpendicular to it pointing down the face, so a tilted head does not read as a smile or an open
mouth. Lengths are divided by the eye-to-mouth distance `s` (or the eye distance `e`), so attributes do not depend on
the image size. Every value is a float; a pixel statistic whose region holds too few pixels is nan.

Landmark indices (dlib, 0-based): jaw 0-16, brows 17-21 / 22-26, nose bridge 27-30, nose bottom 31-35, eyes 36-41 /
42-47 (36-41 on the image left), outer lips 48-59 (corners 48, 54), inner lips 60-67.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# name -> what a larger value means (printed in the directions report)
ATTRIBUTES: dict[str, str] = {
    "mouth_open": "inner lips apart (gap / eye-to-mouth)",
    "smile": "mouth corners raised above the lip centre (/ eye-to-mouth)",
    "mouth_width": "mouth corners apart (/ eye distance)",
    "eye_open": "eye aspect ratio (lid gap / eye width)",
    "brow_raise": "brows above the eyes (/ eye-to-mouth)",
    "yaw": "nose tip right of the jaw's centre: face turned to the image right",
    "pitch": "nose tip high between eyes and mouth: chin up",
    "roll": "eye line rotated clockwise in the image (degrees)",
    "face_width": "jaw width at the ears (/ eye-to-mouth)",
    "chin_length": "chin below the mouth (/ eye-to-mouth)",
    "nose_width": "nostrils apart (/ eye distance)",
    "skin_brightness": "median luma of cheeks and nose (0..1)",
    "hair_darkness": "1 - median luma above the forehead (0..1)",
}

_MIN_PIXELS = 6  # a pixel region with fewer pixels than this gives nan


@dataclass(frozen=True)
class FaceFrame:
    """Origin (midpoint of the eyes), unit vectors u (eye line) and v (down the face), and the scales s and e."""

    origin: np.ndarray  # [2]
    u: np.ndarray  # [2]
    v: np.ndarray  # [2]
    s: float  # eye-to-mouth distance, pixels
    e: float  # eye-to-eye distance, pixels

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        """Image pixels [..., 2] -> face-frame coordinates [..., 2] (u, v) in pixels."""
        d = np.asarray(pts, np.float64) - self.origin
        return np.stack([d @ self.u, d @ self.v], axis=-1)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Face-frame coordinates [..., 2] -> image pixels [..., 2]."""
        uv = np.asarray(uv, np.float64)
        return self.origin + uv[..., :1] * self.u + uv[..., 1:2] * self.v


def face_frame(lm: np.ndarray) -> FaceFrame:
    lm = np.asarray(lm, np.float64)
    eye_r, eye_l = lm[36:42].mean(0), lm[42:48].mean(0)  # image left, image right
    origin = (eye_r + eye_l) / 2
    e = float(np.hypot(*(eye_l - eye_r)))
    u = (eye_l - eye_r) / max(e, 1e-9)
    v = np.array([-u[1], u[0]])  # u turned a quarter clockwise in image coordinates (y down): points down the face
    mouth = (lm[48] + lm[54]) / 2
    s = float(np.hypot(*(mouth - origin)))
    return FaceFrame(origin, u, v, max(s, 1e-9), max(e, 1e-9))


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(*(np.asarray(a) - np.asarray(b))))


def geometry(lm: np.ndarray) -> dict[str, float]:
    """The landmark-only attributes."""
    lm = np.asarray(lm, np.float64)
    f = face_frame(lm)
    p = f.to_face(lm)  # [68,2] (u, v)
    u, v = p[:, 0], p[:, 1]
    eye_v = (v[36:48]).mean()
    mouth_v = (v[48] + v[54]) / 2
    lip_centre_v = (v[51] + v[57] + v[62] + v[66]) / 4
    gaps = [_dist(lm[a], lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))]
    ear = [(_dist(lm[a + 1], lm[a + 5]) + _dist(lm[a + 2], lm[a + 4])) / (2 * max(_dist(lm[a], lm[a + 3]), 1e-9))
           for a in (36, 42)]
    half_jaw = max((u[16] - u[0]) / 2, 1e-9)
    return {
        "mouth_open": float(np.mean(gaps)) / f.s,
        "smile": float(lip_centre_v - (v[48] + v[54]) / 2) / f.s,
        "mouth_width": _dist(lm[48], lm[54]) / f.e,
        "eye_open": float(np.mean(ear)),
        "brow_raise": float(eye_v - v[17:27].mean()) / f.s,
        "yaw": float(u[30] - (u[0] + u[16]) / 2) / half_jaw,
        "pitch": 0.5 - float((v[30] - eye_v) / max(mouth_v - eye_v, 1e-9)),
        "roll": float(np.degrees(np.arctan2(f.u[1], f.u[0]))),
        "face_width": _dist(lm[0], lm[16]) / f.s,
        "chin_length": float(v[8] - mouth_v) / f.s,
        "nose_width": _dist(lm[31], lm[35]) / f.e,
    }


def polygon_mask(shape: tuple[int, int], polygons: list[np.ndarray], scale: int = 4) -> np.ndarray:
    """Boolean [H,W] mask of pixels whose centre lies inside any of the polygons ([K,2] image pixels each).

    Rasterised at `scale` x and reduced by majority, so regions of a 64 px face are not off by a pixel.
    """
    h, w = shape
    im = Image.new("L", (w * scale, h * scale), 0)
    draw = ImageDraw.Draw(im)
    for poly in polygons:
        pts = (np.asarray(poly, np.float64) + 0.5) * scale  # pixel centres -> continuous coordinates
        draw.polygon([tuple(q) for q in pts], fill=255)
    big = np.asarray(im, np.float32).reshape(h, scale, w, scale).mean(axis=(1, 3))
    return big >= 127.5


def luma(img: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] -> float [H,W] in 0..1 (Rec. 601)."""
    return (np.asarray(img, np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0


def skin_mask(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """Both cheeks (jaw to nose side, below the eye, above the mouth corner) and the nose."""
    lm = np.asarray(lm, np.float64)
    cheeks = [lm[[1, 2, 3, 48, 31, 40, 41]], lm[[15, 14, 13, 54, 35, 47, 46]], lm[[27, 31, 33, 35]]]
    return polygon_mask(shape, cheeks)


def hair_mask(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """Above the forehead: between 0.45 and 0.9 eye-to-mouth distances above the brows, as wide as the jaw."""
    lm = np.asarray(lm, np.float64)
    f = face_frame(lm)
    p = f.to_face(lm)
    top = p[17:27, 1].min()
    lo, hi = p[0, 0], p[16, 0]
    quad = np.array([[lo, top - 0.9 * f.s], [hi, top - 0.9 * f.s], [hi, top - 0.45 * f.s], [lo, top - 0.45 * f.s]])
    return polygon_mask(shape, [f.to_image(quad)])


def pixels(img: np.ndarray, lm: np.ndarray) -> dict[str, float]:
    """The pixel-statistic attributes (nan where a region has fewer than a few pixels inside the image)."""
    y = luma(img)
    skin, hair = skin_mask(y.shape, lm), hair_mask(y.shape, lm)
    return {
        "skin_brightness": float(np.median(y[skin])) if skin.sum() >= _MIN_PIXELS else float("nan"),
        "hair_darkness": 1.0 - float(np.median(y[hair])) if hair.sum() >= _MIN_PIXELS else float("nan"),
    }


def measure(img: np.ndarray, lm: np.ndarray) -> dict[str, float]:
    """Every attribute of ATTRIBUTES for one face: img uint8 [H,W,3], lm [68,2] in img pixels."""
    out = {**geometry(lm), **pixels(img, lm)}
    return {name: out[name] for name in ATTRIBUTES}
