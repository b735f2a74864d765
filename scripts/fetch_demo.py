#!/usr/bin/env python3
"""Fetch the demo's public-domain portraits into sequences/subjects/ (idempotent, and self-repairing).

scikit-image's astronaut.png (Eileen Collins, NASA) comes out of the scikit-image wheel; the portraits of Barack Obama
and Joe Biden (official US government photos) come out of the face-recognition==1.3.0 source distribution's
tests/test_images/. Both are fetched from PyPI with pip, the only network this project needs.

Each photo is checked against its SHA-256, so one that is missing, empty or half-written (an interrupted fetch, a
full disk) is fetched again rather than silently dropping a subject from the demo; each is written under a temporary
name and renamed, so an interruption leaves the old file or none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "sequences" / "subjects"
FROM_WHEEL = {"astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"}
FROM_SDIST = {
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    "obama_partial_face.jpg": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    "32bit.png": "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627",
}


def pip_download(tmp: Path, *args: str, tries: int = 3, pause: float = 30.0) -> Path:
    """Download one package file into the empty folder `tmp`, trying again (past pip's cache) after a failure:
    a download cut short or a registry's passing error should not fail a fresh machine's set-up."""
    for attempt in range(1, tries + 1):
        cache = ["--no-cache-dir"] if attempt > 1 else []
        # -qq: errors only; pip warns of each configured local package folder that lacks the package
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-qq", *cache, "-d", str(tmp), *args]
        if subprocess.run(command).returncode == 0:
            (found,) = [p for p in tmp.iterdir() if p.is_file()]
            return found
        for p in tmp.iterdir():  # what the failed try left
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        if attempt < tries:
            print(f"fetch_demo: pip download {args[-1]} failed (try {attempt} of {tries}); trying again in "
                  f"{pause:.0f} s", file=sys.stderr)
            time.sleep(pause)
    raise SystemExit(f"fetch_demo: pip download {args[-1]} failed {tries} times")


def intact(name: str, sha256: str) -> bool:
    path = DEST / name
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def store(name: str, data: bytes, sha256: str) -> None:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SystemExit(f"{name}: the package's copy is not the photo the demo expects (SHA-256 differs)")
    part = DEST / f".{name}.part"
    part.write_bytes(data)
    os.replace(part, DEST / name)


def main() -> int:
    DEST.mkdir(parents=True, exist_ok=True)
    wanted = {name: sha for name, sha in FROM_WHEEL.items() if not intact(name, sha)}
    if wanted:
        with tempfile.TemporaryDirectory() as d:
            wheel = pip_download(Path(d), "--only-binary=:all:", "scikit-image==0.26.0")
            with zipfile.ZipFile(wheel) as z:
                for name, sha in wanted.items():
                    store(name, z.read(f"skimage/data/{name}"), sha)
    wanted = {name: sha for name, sha in FROM_SDIST.items() if not intact(name, sha)}
    if wanted:
        with tempfile.TemporaryDirectory() as d:
            sdist = pip_download(Path(d), "--no-binary=:all:", "face-recognition==1.3.0")
            with tarfile.open(sdist) as t:
                for name, sha in wanted.items():
                    member = t.getmember(f"face_recognition-1.3.0/tests/test_images/{name}")
                    store(name, t.extractfile(member).read(), sha)
    print(f"demo photos in {DEST}: {', '.join(sorted({**FROM_WHEEL, **FROM_SDIST}))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
