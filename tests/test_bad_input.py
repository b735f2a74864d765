"""Each kind of unusable photo is refused in one line naming the file; several faces: the largest, with a note."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from render.faces.align import ImageInputError, align_file, face_size, load_image
from sequences.config import AlignConfig

CFG = AlignConfig()


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels and holds none: decoding it would fail, so refusing it proves no decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _half(src):
    return src.read_bytes()[: src.stat().st_size // 2]


# name -> (make the file in tmp_path, max_pixels, words the reason must contain)
FILES = {
    "missing": (lambda d, photo: d / "nobody.jpg", CFG.max_pixels, "not found"),
    "zero-byte": (lambda d, photo: _write(d / "zero.jpg", b""), CFG.max_pixels, "empty"),
    "directory": (lambda d, photo: _mkdir(d / "folder.jpg"), CFG.max_pixels, "not a file"),
    "text as jpg": (lambda d, photo: _write(d / "notes.jpg", b"not a photo\n"), CFG.max_pixels, "not an image"),
    "truncated jpeg": (lambda d, photo: _write(d / "cut.jpg", _half(photo("obama.jpg"))), CFG.max_pixels, "truncated"),
    "truncated png": (lambda d, photo: _write(d / "cut.png", _half(photo("astronaut.png"))), CFG.max_pixels,
                      "truncated"),
    "bomb over max_pixels": (lambda d, photo: _write(d / "bomb.png", _png_header(9000, 9000)), CFG.max_pixels,
                             "align.max_pixels"),
    "bomb over PIL's limit": (lambda d, photo: _write(d / "bomb.png", _png_header(100_000, 100_000)), 10**12,
                              "decompression bomb"),
    "real image over max_pixels": (lambda d, photo: _save(d / "big.png", np.zeros((1200, 1000, 3), np.uint8)),
                                   1_000_000, "decompression bomb"),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _mkdir(path):
    path.mkdir()
    return path


def _save(path, array):
    Image.fromarray(array).save(path)
    return path


def _assert_one_line_naming(err: ImageInputError, path, words: str) -> None:
    msg = str(err)
    assert isinstance(err, ValueError)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert words in msg


@pytest.mark.parametrize("case", list(FILES))
def test_unusable_file_is_refused_in_one_line(case, tmp_path, subject_photo):
    make, max_pixels, words = FILES[case]
    path = make(tmp_path, subject_photo)
    with pytest.raises(ImageInputError) as info:
        align_file(path, dataclasses.replace(CFG, max_pixels=max_pixels))
    _assert_one_line_naming(info.value, path, words)


def test_no_face(tmp_image):
    gradient = np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], 256, axis=0).repeat(3, axis=2)
    path = tmp_image(gradient, "gradient.png")
    with pytest.raises(ImageInputError) as info:
        align_file(path, CFG)
    _assert_one_line_naming(info.value, path, "no face found")


@pytest.fixture(scope="module")
def astronaut(subject_photo) -> Image.Image:
    return Image.fromarray(load_image(subject_photo("astronaut.png"), max_pixels=CFG.max_pixels))  # 512 px


def test_face_too_small(astronaut, tmp_image):
    path = tmp_image(astronaut.resize((282, 282), Image.Resampling.LANCZOS), "far.png")  # 20 px eyes to mouth
    with pytest.raises(ImageInputError) as info:  # the detector still finds it with one up-sampling pass
        align_file(path, CFG)
    _assert_one_line_naming(info.value, path, "face too small")
    assert re.search(r"face too small: \d+\.\d px", str(info.value))  # 23.6, not "24 px ... min_face is 24"


def test_several_faces_use_the_largest_with_a_note(astronaut, tmp_image):
    big = np.asarray(astronaut.crop((100, 20, 360, 280)))  # [260,260,3] around the face
    small = np.asarray(Image.fromarray(big).resize((156, 156), Image.Resampling.LANCZOS))
    group = np.full((260, 430, 3), 200, np.uint8)
    group[:, :260], group[60:216, 270:426] = big, small  # the same face at 100% and 60%, side by side
    face = align_file(tmp_image(group, "group.png"), CFG)
    assert face.faces_found == 2 and face.note == "2 faces found; using the largest"
    assert face.source_landmarks[:, 0].max() < 260  # the big one
    assert face_size(face.source_landmarks) > 30  # 37 px in the original; the small copy has 22
