"""Identity metric: dlib's face-recognition ResNet (face_recognition_models), numpy + dlib only.

    e = identity_embedding(img)              # [128] float, or None if no face is found
    d = identity_distance(frame, aligned)    # Euclidean distance of embeddings; nan if either has no face

dlib's model maps a face to a 128-d vector; photos of the same person are usually closer than 0.6 (dlib's
threshold, ~99.4% accuracy on LFW), different people farther. Lower is more alike. Faces are found with the same
detector and 68-point landmarks as alignment (`render.faces.align.landmarks_of`), after enlarging small images (a 64 px
generated face) to at least 256 px, so a generated frame and its aligned target are measured the same way.
"""

from __future__ import annotations

import functools

import numpy as np

from render.faces.align import dlib_model_path, enlarge_small, landmarks_of

SAME_PERSON = 0.6  # dlib's threshold: distances below it are usually the same person


@functools.cache
def _recognizer():
    import dlib

    return dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))


def identity_embedding(img: np.ndarray) -> np.ndarray | None:
    """dlib face descriptor [128] float64 of the largest face in `img` [H,W,3] uint8 RGB; None if no face is found."""
    import dlib

    big, _ = enlarge_small(np.asarray(img, dtype=np.uint8))  # [h*k, w*k, 3], short side >= 256
    big = np.ascontiguousarray(big)
    lm = landmarks_of(big)  # [68,2] in `big` pixels
    if lm is None:
        return None
    points = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
    (x0, y0), (x1, y1) = np.floor(lm.min(0)).astype(int), np.ceil(lm.max(0)).astype(int)
    shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), points)
    return np.array(_recognizer().compute_face_descriptor(big, shape), dtype=np.float64)


def identity_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Euclidean distance between the identities of `a` and `b`: images [H,W,3] uint8, or embeddings [128] from
    identity_embedding (pass those to avoid recomputing a fixed target). ~0.6 is dlib's same-person threshold.
    float('nan') when either has no face (None, or an image where none is found)."""
    ea = a if a is None or np.ndim(a) == 1 else identity_embedding(a)
    eb = b if b is None or np.ndim(b) == 1 else identity_embedding(b)
    if ea is None or eb is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(ea, np.float64) - np.asarray(eb, np.float64)))
