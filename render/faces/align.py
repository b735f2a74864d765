"""Photo in, FFHQ-aligned face out: safe image loading, dlib landmarks, the FFHQ crop.

numpy + PIL + dlib only (no torch), so contact sheets, metrics and checks can use it cheaply.

    img = load_image("subjects/obama.jpg", max_pixels=64_000_000)   # [H,W,3] uint8 RGB, EXIF orientation applied
    faces = detect_faces(img)                                       # [[68,2] landmarks, ...], largest face first
    aligned, lm = align_face(img, faces[0], 256)                    # [256,256,3] uint8, [68,2] in aligned pixels
    face = align_file("subjects/obama.jpg", cfg.align)              # all of the above, with clear errors

Every refusal (missing, unreadable, truncated, not an image, decompression bomb, no face, face too small) is an
`ImageInputError` whose message is one line: `<file>: <reason>`.

Landmarks follow dlib's convention: x, y in pixels with pixel centres at integers; points 36-41 are the subject's
right eye (image left), 42-47 the other eye, 48 and 54 the mouth corners.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from render.faces.degradation import Condition, measure

_DETECT_PIXELS = 1_000_000  # detection runs first on a copy of at most this many pixels (full size if it finds none)
_CONFIDENT = 0.3  # dlib detector score; weaker extra detections (a badge, a pattern) are dropped beside a confident one
_MIN_SIDE = 256  # landmarks_of / identity: smaller images are enlarged to this side first so dlib finds the face


class ImageInputError(ValueError):
    """A photo that cannot be used. `str(e)` is one line: `<file>: <reason>`."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever PIL said
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # pickled as its two fields (a farm worker's error reaches the driver whole)
        return type(self), (str(self.path), self.reason)


# ----------------------------------------------------------------------------------------------------------- loading


def load_image(path: str | Path, *, max_pixels: int) -> np.ndarray:
    """Decode a photo fully into [H,W,3] uint8 RGB, upright according to its EXIF orientation.

    Accepts any mode PIL reads: grayscale, palette, CMYK, 16-bit (I;16, 48-bit PNG), and images with transparency,
    which are composited on white (cut-out portraits are usually shown on white; black would merge with dark hair).
    Refuses a missing, empty, truncated or unreadable file, a non-image, and a decompression bomb: more than
    `max_pixels` pixels according to the header (checked before decoding), or over PIL's own limit
    (Image.MAX_IMAGE_PIXELS, 89.5 Mpx unless changed; PIL checks it on opening, so it also caps `max_pixels`).
    Truncated files are never padded: PIL's LOAD_TRUNCATED_IMAGES is left False and the image is decoded in full.
    """
    path = Path(path)
    if not path.exists():
        raise ImageInputError(path, "file not found")
    if not path.is_file():
        raise ImageInputError(path, "not a file")
    if path.stat().st_size == 0:
        raise ImageInputError(path, "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's bomb warning refuses too
        try:
            with Image.open(path) as im:
                w, h = im.size  # from the header; nothing decoded yet
                if w * h > max_pixels:
                    raise ImageInputError(
                        path, f"{w}x{h} is {w * h} pixels, over align.max_pixels = {max_pixels}: "
                        "refused as a possible decompression bomb")
                im.load()  # full decode: a truncated file raises here
                return _to_rgb(ImageOps.exif_transpose(im))
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageInputError(path, f"refused as a possible decompression bomb ({e})") from None
        except UnidentifiedImageError:
            raise ImageInputError(path, "not an image file (PIL cannot identify its format)") from None
        except MemoryError:
            raise ImageInputError(path, "image too large to decode in memory") from None
        except Exception as e:  # OSError (truncated, broken data stream), SyntaxError, ValueError, struct.error, ...
            raise ImageInputError(path, f"unreadable or truncated image ({type(e).__name__}: {e})") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> [H,W,3] uint8 RGB. 16-bit is scaled to 8 bits, transparency is composited on white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.float64)  # [H,W]; I;16 in 0..65535
        if im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0
        return np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        a = a * 255.0 if a.max(initial=0) <= 1.0 else a  # 0..1 floats, else assume 0..255
        return np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if "A" in im.mode or "a" in im.mode or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)  # [H,W,4] in 0..255
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.array(im.convert("RGB"), dtype=np.uint8)  # L, 1, P, CMYK, YCbCr, LAB, RGB (48-bit PNGs open as RGB)


# ----------------------------------------------------------------------------------------------------------- landmarks


def dlib_model_path(name: str) -> Path:
    """A model file of the face_recognition_models package (located without importing it: it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed (pip install face-recognition-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise RuntimeError(f"{path}: dlib model file missing (reinstall face-recognition-models)")
    return path


@functools.cache
def _dlib_models():
    """(frontal face detector, 68-point shape predictor), loaded once per process."""
    import dlib

    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    return dlib.get_frontal_face_detector(), predictor


def face_size(landmarks: np.ndarray) -> float:
    """Eye-to-mouth distance in pixels: the scale the FFHQ crop follows, and what align.min_face limits."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_avg = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    mouth_avg = (lm[48] + lm[54]) / 2
    return float(np.hypot(*(mouth_avg - eye_avg)))


def detect_faces(img: np.ndarray, *, upsample: int = 1) -> list[np.ndarray]:
    """68 dlib landmarks ([68,2] float, source pixels) of every face in `img` [H,W,3] uint8, largest face first.

    `upsample` is the detector's number of up-sampling passes (each finds faces half as small, at 4x the cost).
    Large photos are searched at about one megapixel first and at full size only if that finds nothing, so a tiny
    extra face beside a large one may go uncounted; landmarks are always fitted at full resolution. Weak detections
    (score < 0.3) are dropped when a confident one exists: they are usually badges or patterns, not faces.
    """
    import dlib

    detector, predictor = _dlib_models()
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    scale = min(1.0, math.sqrt(_DETECT_PIXELS / (h * w)))
    rects, scores, sx, sy = [], [], 1.0, 1.0
    for s in ([scale, 1.0] if scale < 1.0 else [1.0]):
        small = img
        if s < 1.0:
            small = np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)), Image.Resampling.BOX))
        sx, sy = w / small.shape[1], h / small.shape[0]
        rects, scores, _ = detector.run(np.ascontiguousarray(small), upsample, 0.0)
        if len(rects):
            break
    faces = []
    for r, score in zip(rects, scores):
        rect = dlib.rectangle(round(r.left() * sx), round(r.top() * sy), round(r.right() * sx), round(r.bottom() * sy))
        shape = predictor(img, rect)
        faces.append((np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64), float(score)))
    if any(score >= _CONFIDENT for _, score in faces):
        faces = [f for f in faces if f[1] >= _CONFIDENT]
    faces.sort(key=lambda f: -face_size(f[0]))
    return [lm for lm, _ in faces]


def landmarks_of(img: np.ndarray) -> np.ndarray | None:
    """Landmarks [68,2] (in `img` pixels) of the largest face of an already aligned face image, or None if none.

    A black border of 1/8 of the side is added (a tightly cropped face is found far more often with some margin;
    bench/RESULTS.md), and small images (a generated 64 px face) are enlarged to at least 256 px with Lanczos before
    detection.
    """
    p = max(1, round(min(img.shape[:2]) / 8))
    big, k = enlarge_small(np.pad(np.asarray(img, np.uint8), ((p, p), (p, p), (0, 0))))
    faces = detect_faces(big, upsample=0)
    if not faces:
        return None
    return (faces[0] + 0.5) / k - 0.5 - p  # enlarged, padded pixel centres -> img pixel centres


def enlarge_small(img: np.ndarray, min_side: int = _MIN_SIDE) -> tuple[np.ndarray, int]:
    """`img` enlarged (Lanczos) by an integer factor k so its short side is at least `min_side`; (img, 1) if it is."""
    h, w = img.shape[:2]
    k = max(1, math.ceil(min_side / min(h, w)))
    if k == 1:
        return img, 1
    return np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize((w * k, h * k), Image.Resampling.LANCZOS)), k


# ----------------------------------------------------------------------------------------------------------- FFHQ crop


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square [4,2] (top-left, bottom-left, bottom-right, top-right) in source pixels.

    Its centre sits a tenth of the way from the eyes' midpoint to the mouth's; its horizontal axis is the eye line
    tilted by the eye-to-mouth direction turned a quarter turn; its half-side is the larger of twice the eye
    distance and 1.8 eye-to-mouth distances (NVlabs ffhq-dataset, recreate_aligned_images).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])  # eye line + mouth direction turned to the right
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / np.hypot(*x)
    y = np.array([-x[1], x[0]])  # x turned a quarter, pointing down the face
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_face(img: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ-align one face: ([size,size,3] uint8, its 68 landmarks [68,2] in aligned pixels).

    Steps of the recipe: oriented crop square from the eyes and mouth; shrink very large photos first; crop to the
    square plus a border; where the square leaves the photo, pad by reflection, blur the padding progressively and
    fade it toward the median colour; warp the square to an upright image at 4x `size`; downsample with Lanczos.
    """
    quad = ffhq_quad(landmarks)
    lm = np.asarray(landmarks, dtype=np.float64).copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    pil = Image.fromarray(np.asarray(img, dtype=np.uint8))

    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        shrunk = (int(np.rint(pil.width / shrink)), int(np.rint(pil.height / shrink)))
        pil = pil.resize(shrunk, Image.Resampling.LANCZOS)
        quad, lm, qsize = quad / shrink, lm / shrink, qsize / shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, pil.width), min(hi[1] + border, pil.height))  # left, top, right, bottom
    if crop[2] - crop[0] < pil.width or crop[3] - crop[1] < pil.height:
        pil = pil.crop(crop)
        quad, lm = quad - crop[:2], lm - crop[:2]

    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = np.array([max(border - lo[0], 0), max(border - lo[1], 0), max(hi[0] - pil.width + border, 0),
                    max(hi[1] - pil.height + border, 0)])  # left, top, right, bottom
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        pil = _pad_reflect_blur(np.asarray(pil), pad, qsize)
        quad, lm = quad + pad[:2], lm + pad[:2]

    transform_size = min(4 * size, max(4096, size))
    warped = pil.transform((transform_size, transform_size), Image.Transform.QUAD, (quad + 0.5).flatten(),
                           Image.Resampling.BILINEAR)  # +0.5: dlib pixel centres -> PIL's continuous coordinates
    if transform_size != size:
        warped = warped.resize((size, size), Image.Resampling.LANCZOS)

    # The warp is affine (the quad is a square): landmark = quad[0] + a * (top edge) + b * (left edge).
    basis = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)  # [2,2] columns: x edge, y edge
    ab = np.linalg.solve(basis, (lm - quad[0]).T).T  # [68,2] in 0..1 across the square
    return np.asarray(warped, dtype=np.uint8).copy(), ab * size - 0.5


def _pad_reflect_blur(img: np.ndarray, pad: np.ndarray, qsize: float) -> Image.Image:
    """Reflect-pad [H,W,3] by (left, top, right, bottom), blurring and greying the padding more the farther out."""
    a = np.pad(img.astype(np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    h, w = a.shape[:2]
    y, x = np.ogrid[:h, :w]
    x, y = x.astype(np.float32)[..., None], y.astype(np.float32)[..., None]
    mask = np.maximum(1.0 - np.minimum(x / pad[0], (w - 1 - x) / pad[2]),
                      1.0 - np.minimum(y / pad[1], (h - 1 - y) / pad[3]))  # [H,W,1]: <=0 inside, ->1 at the edge
    blur = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255))).filter(ImageFilter.GaussianBlur(qsize * 0.02))
    a += (np.asarray(blur, dtype=np.float32) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")


# ------------------------------------------------------------------------------------------------------- photo -> face


@dataclass(frozen=True, eq=False)
class AlignedFace:
    image: np.ndarray  # [S,S,3] uint8 RGB, FFHQ-aligned
    landmarks: np.ndarray  # [68,2] float, in aligned pixels
    source: Path  # the photo (or "<array>")
    faces_found: int  # faces detected in the photo; the largest was used
    note: str  # "" or e.g. "3 faces found; using the largest"
    source_landmarks: np.ndarray  # [68,2] float, in source-photo pixels (after EXIF orientation and `turn`)
    condition: Condition | None = None  # what the photo has lost (render/faces/degradation.py); None: not measured
    turn: int = 0  # degrees the photo was turned (counter-clockwise) before a face was found: 0, 90, 180 or 270


def align_image(img: np.ndarray, cfg, *, source: str | Path = "<array>") -> AlignedFace:
    """Align the largest face of `img` [H,W,3] uint8 with `cfg` (an AlignConfig: size, min_face, upsample).

    When no face is found upright, the photo is turned by 90, 180 and 270 degrees in turn (a phone photo with a wrong
    or missing orientation tag) and the first turn that shows a face is used: `turn` and `note` say which.
    No face in any turn, or a largest face whose eye-to-mouth distance is under cfg.min_face source pixels:
    ImageInputError. The photo's Condition (grayscale, native scale, JPEG blocking) is measured on the way.
    """
    faces, turn = detect_faces(img, upsample=cfg.upsample), 0
    for quarter in (1, 2, 3):
        if faces:
            break
        turned = np.ascontiguousarray(np.rot90(img, quarter))  # counter-clockwise
        faces = detect_faces(turned, upsample=cfg.upsample)
        if faces:
            img, turn = turned, 90 * quarter
    if not faces:
        raise ImageInputError(source, f"no face found (dlib frontal face detector, align.upsample = {cfg.upsample}; "
                                      "also turned by 90, 180 and 270 degrees)")
    scale = face_size(faces[0])
    if scale < cfg.min_face:
        raise ImageInputError(source, f"face too small: {scale:.1f} px from eyes to mouth, "
                                      f"align.min_face is {cfg.min_face}")
    image, landmarks = align_face(img, faces[0], cfg.size)
    notes = [f"no face upright; turned {turn} degrees counter-clockwise"] if turn else []
    notes += [f"{len(faces)} faces found; using the largest"] if len(faces) > 1 else []
    for a in (image, landmarks, faces[0]):
        a.flags.writeable = False
    return AlignedFace(image, landmarks, Path(source), len(faces), "; ".join(notes), faces[0],
                       measure(img, ffhq_quad(faces[0]), image), turn)


def align_file(path: str | Path, cfg) -> AlignedFace:
    """Load a photo (see load_image) and align its largest face (see align_image); ImageInputError if unusable."""
    return align_image(load_image(path, max_pixels=cfg.max_pixels), cfg, source=path)
