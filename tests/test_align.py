"""FFHQ alignment of real photos, EXIF orientation, every image mode we accept, and the dlib identity metric."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from render.faces.align import align_face, align_file, ffhq_quad, landmarks_of, load_image
from render.faces.identity import SAME_PERSON, identity_distance, identity_embedding
from sequences.config import AlignConfig

CFG = AlignConfig()  # the shipped defaults: 256 px crop, one up-sampling pass
FAST = AlignConfig(upsample=0)  # the astronaut's face is found without up-sampling, four times faster


@pytest.fixture(scope="session")
def aligned(subject_photo):
    """aligned("obama.jpg", cfg=CFG) -> AlignedFace, computed once per session."""
    cache = {}

    def get(name: str, cfg: AlignConfig = CFG):
        if (name, cfg) not in cache:
            cache[name, cfg] = align_file(subject_photo(name), cfg)
        return cache[name, cfg]

    return get


@pytest.fixture(scope="session")
def astronaut(subject_photo) -> np.ndarray:
    return load_image(subject_photo("astronaut.png"), max_pixels=CFG.max_pixels)  # [512,512,3]


@pytest.fixture(scope="session")
def astronaut_fast(subject_photo):
    return align_file(subject_photo("astronaut.png"), FAST)


def _eyes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[36:42].mean(0), landmarks[42:48].mean(0)  # image-left eye, image-right eye


@pytest.mark.parametrize("name", ["astronaut.png", "obama.jpg"])
def test_eyes_land_where_ffhq_puts_them(aligned, name):
    face, s = aligned(name), CFG.size
    assert face.image.shape == (s, s, 3) and face.image.dtype == np.uint8
    assert (face.faces_found, face.note) == (1, "")
    # The recipe applied to the mapped landmarks gives back the whole frame: the crop square became the image.
    frame = np.array([[0, 0], [0, s], [s, s], [s, 0]]) - 0.5  # pixel centres at integers
    np.testing.assert_allclose(ffhq_quad(face.landmarks), frame, atol=1e-6)
    # The pixels moved with the landmarks: dlib finds the face again where they say it is.
    found = landmarks_of(face.image)
    assert found is not None
    assert np.abs(found - face.landmarks).mean() < 0.01 * s
    left, right = _eyes(found)
    assert abs(right[1] - left[1]) < 0.05 * (right[0] - left[0])  # eyes level (within 3 degrees)
    assert 0.34 * s < left[0] < 0.41 * s and 0.59 * s < right[0] < 0.66 * s  # FFHQ: 0.375 and 0.625 of the width
    assert 0.43 * s < left[1] < 0.50 * s and 0.43 * s < right[1] < 0.50 * s  # FFHQ: about 0.47 of the height


@pytest.mark.parametrize("name, size", [("astronaut.png", 512), ("obama.jpg", 64)])  # obama at 64 px: shrink first
def test_output_size_honoured(aligned, name, size):
    face = aligned(name)
    img = load_image(face.source, max_pixels=CFG.max_pixels)
    image, landmarks = align_face(img, face.source_landmarks, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    np.testing.assert_allclose((landmarks + 0.5) / size, (face.landmarks + 0.5) / CFG.size, atol=1e-3)
    resized = np.asarray(Image.fromarray(face.image).resize((size, size), Image.Resampling.LANCZOS), np.float32)
    assert np.abs(image.astype(np.float32) - resized).mean() < 6  # the same crop at another resolution


_UNDO = {  # the transposition that, undone by the EXIF orientation tag, gives back the original
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _tagged(img: Image.Image, orientation: int) -> tuple[Image.Image, Image.Exif]:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return img.transpose(_UNDO[orientation]), exif


@pytest.mark.parametrize("orientation", sorted(_UNDO))
def test_exif_orientation_is_applied(astronaut, tmp_image, orientation):
    original = Image.fromarray(astronaut).resize((96, 64))  # not square, so a missed rotation changes the shape
    stored, exif = _tagged(original, orientation)
    path = tmp_image(stored, f"o{orientation}.png", exif=exif)
    np.testing.assert_array_equal(load_image(path, max_pixels=10**6), np.asarray(original))


def test_exif_rotated_jpeg_aligns_like_the_original(astronaut, astronaut_fast, tmp_image):
    stored, exif = _tagged(Image.fromarray(astronaut), 6)  # how a phone held sideways saves it
    face = align_file(tmp_image(stored, "phone.jpg", exif=exif, quality=95), FAST)
    assert np.abs(face.landmarks - astronaut_fast.landmarks).mean() < 1.5
    assert np.abs(face.image.astype(np.float32) - astronaut_fast.image).mean() < 4


def _png48(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)  # filter type 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_modes_load_to_rgb(astronaut, tmp_image, tmp_path):
    rgb = astronaut
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    gray3 = np.repeat(gray[..., None], 3, axis=2)

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, :32, 3] = 0  # a transparent strip: composited on white
    loaded = load_image(tmp_image(rgba, "rgba.png"), max_pixels=10**6)
    assert (loaded[:, :32] == 255).all() and (loaded[:, 32:] == rgb[:, 32:]).all()

    np.testing.assert_array_equal(load_image(tmp_image(gray, "gray.png"), max_pixels=10**6), gray3)
    palette = Image.fromarray(rgb).quantize(256)
    np.testing.assert_array_equal(load_image(tmp_image(palette, "p.png"), max_pixels=10**6),
                                  np.asarray(palette.convert("RGB")))
    gray16 = Image.fromarray(gray.astype(np.uint16) * 257)  # mode I;16
    np.testing.assert_array_equal(load_image(tmp_image(gray16, "gray16.png"), max_pixels=10**6), gray3)
    (tmp_path / "rgb48.png").write_bytes(_png48(rgb.astype(np.uint16) * 257))
    np.testing.assert_array_equal(load_image(tmp_path / "rgb48.png", max_pixels=10**6), rgb)
    cmyk = load_image(tmp_image(Image.fromarray(rgb).convert("CMYK"), "cmyk.jpg", quality=95), max_pixels=10**6)
    assert cmyk.shape == rgb.shape and np.abs(cmyk.astype(np.float32) - rgb).mean() < 4


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "RGB48"])
def test_modes_align(astronaut, astronaut_fast, tmp_image, tmp_path, mode):
    pil = Image.fromarray(astronaut)
    if mode == "I;16":
        path = tmp_image(Image.fromarray(np.asarray(pil.convert("L")).astype(np.uint16) * 257), "face.png")
    elif mode == "RGB48":
        path = tmp_path / "face.png"
        path.write_bytes(_png48(astronaut.astype(np.uint16) * 257))
    else:
        path = tmp_image(pil.convert(mode), "face.jpg" if mode == "CMYK" else "face.png")
    face = align_file(path, FAST)
    assert face.image.shape == (FAST.size, FAST.size, 3) and face.faces_found == 1
    assert np.abs(face.landmarks - astronaut_fast.landmarks).mean() < 2.0


def test_identity_same_person_is_closer(aligned):
    names = ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.png")
    obama, obama2, biden, astronaut = (aligned(n, FAST).image for n in names)  # all found without up-sampling
    e = identity_embedding(obama)
    assert e.shape == (128,)
    same = identity_distance(e, obama2)
    assert same < SAME_PERSON < min(identity_distance(e, biden), identity_distance(e, astronaut))
    assert identity_distance(obama, obama2) == pytest.approx(same)  # images or embeddings, the same distance


def test_identity_of_a_small_face_and_of_no_face(aligned):
    obama = aligned("obama.jpg", FAST).image
    small = np.asarray(Image.fromarray(obama).resize((64, 64), Image.Resampling.LANCZOS))  # generator-sized
    assert identity_distance(small, obama) < 0.4
    gradient = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 64, axis=0).repeat(3, axis=2)
    assert identity_embedding(gradient) is None
    assert np.isnan(identity_distance(gradient, obama)) and np.isnan(identity_distance(None, obama))
