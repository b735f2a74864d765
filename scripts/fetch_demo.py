#!/usr/bin/env python3
"""Fetch the demo's public-domain portraits into sequences/subjects/ (idempotent).

scikit-image's astronaut.png (Eileen Collins, NASA) comes out of the scikit-image wheel; the portraits of Barack Obama
and Joe Biden (official US government photos) come out of the face-recognition==1.3.0 source distribution's
tests/test_images/. Both are fetched from PyPI with pip, the only network this project needs.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "sequences" / "subjects"
FROM_SDIST = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_partial_face.jpg", "32bit.png"]


def pip_download(tmp: Path, *args: str) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), *args], check=True)
    (found,) = [p for p in tmp.iterdir() if p.is_file()]
    return found


def main() -> int:
    DEST.mkdir(parents=True, exist_ok=True)
    if not (DEST / "astronaut.png").exists():
        with tempfile.TemporaryDirectory() as d:
            wheel = pip_download(Path(d), "--only-binary=:all:", "scikit-image==0.26.0")
            with zipfile.ZipFile(wheel) as z:
                (DEST / "astronaut.png").write_bytes(z.read("skimage/data/astronaut.png"))
    if not all((DEST / name).exists() for name in FROM_SDIST):
        with tempfile.TemporaryDirectory() as d:
            sdist = pip_download(Path(d), "--no-binary=:all:", "face-recognition==1.3.0")
            with tarfile.open(sdist) as t:
                for name in FROM_SDIST:
                    member = t.getmember(f"face_recognition-1.3.0/tests/test_images/{name}")
                    (DEST / name).write_bytes(t.extractfile(member).read())
    print(f"demo photos in {DEST}: {', '.join(sorted(p.name for p in DEST.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
