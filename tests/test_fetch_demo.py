"""scripts/fetch_demo.py, which `make demo` and `make test` run: a demo photo that is missing, empty or half-written
is fetched again (a render would otherwise skip its subject and still succeed), and nothing else is touched."""

from __future__ import annotations

import importlib.util
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "sequences" / "subjects"


@pytest.fixture
def fetch(monkeypatch, tmp_path):
    """The script with its destination in tmp_path (holding intact copies of the photos) and "PyPI" replaced by
    packages built from those copies; `fetch.downloads` lists what was fetched."""
    spec = importlib.util.spec_from_file_location("fetch_demo", ROOT / "scripts" / "fetch_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dest = tmp_path / "subjects"
    dest.mkdir()
    for name in {**module.FROM_WHEEL, **module.FROM_SDIST}:
        shutil.copy(PHOTOS / name, dest / name)
    module.DEST, module.downloads = dest, []

    def pip_download(folder: Path, *args: str) -> Path:
        module.downloads.append(args[-1])
        if args[-1].startswith("scikit-image"):
            path = folder / "scikit_image.whl"
            with zipfile.ZipFile(path, "w") as z:
                z.write(PHOTOS / "astronaut.png", "skimage/data/astronaut.png")
            return path
        path = folder / "face_recognition-1.3.0.tar.gz"
        with tarfile.open(path, "w:gz") as t:
            for name in module.FROM_SDIST:
                t.add(PHOTOS / name, f"face_recognition-1.3.0/tests/test_images/{name}")
        return path

    monkeypatch.setattr(module, "pip_download", pip_download)
    return module


def test_damaged_photos_are_fetched_again_and_intact_ones_left_alone(fetch):
    dest = fetch.DEST
    (dest / "biden.jpg").write_bytes((PHOTOS / "biden.jpg").read_bytes()[:1000])  # an interrupted fetch
    (dest / "astronaut.png").write_bytes(b"")
    (dest / "obama3.jpg").unlink()
    untouched = (dest / "obama.jpg").stat().st_mtime_ns
    assert fetch.main() == 0
    for name in ("biden.jpg", "astronaut.png", "obama3.jpg"):
        assert (dest / name).read_bytes() == (PHOTOS / name).read_bytes()
    assert (dest / "obama.jpg").stat().st_mtime_ns == untouched
    assert sorted(p.name for p in dest.iterdir()) == sorted({**fetch.FROM_WHEEL, **fetch.FROM_SDIST})  # no .part
    fetch.downloads.clear()
    assert fetch.main() == 0 and fetch.downloads == []  # all intact: nothing fetched


def test_a_package_with_another_photo_is_refused_and_the_old_file_kept(fetch, monkeypatch):
    (fetch.DEST / "biden.jpg").write_bytes(b"half")
    monkeypatch.setitem(fetch.FROM_SDIST, "biden.jpg", "0" * 64)  # as if the package's photo had changed
    with pytest.raises(SystemExit, match="biden.jpg: the package's copy is not the photo the demo expects"):
        fetch.main()
    assert (fetch.DEST / "biden.jpg").read_bytes() == b"half"
    assert not list(fetch.DEST.glob(".*"))


def _script():
    spec = importlib.util.spec_from_file_location("fetch_demo_real", ROOT / "scripts" / "fetch_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_download_is_tried_again_past_pips_cache(monkeypatch, tmp_path):
    """pip failing once (a download cut short, a registry's passing error) leaves a partial file; the next try skips
    pip's cache and the partial file is not taken for the package."""
    module, calls = _script(), []

    def run(command):
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        if len(calls) == 1:
            (folder / "cut_short.whl.part").write_bytes(b"x")
            (folder / "build").mkdir()  # a folder left behind too
            return type("Done", (), {"returncode": 1})()
        (folder / "scikit_image.whl").write_bytes(b"wheel")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(module.subprocess, "run", run)
    found = module.pip_download(tmp_path, "--only-binary=:all:", "scikit-image==0.26.0", pause=0)
    assert found == tmp_path / "scikit_image.whl" and found.read_bytes() == b"wheel"
    assert "--no-cache-dir" not in calls[0] and "--no-cache-dir" in calls[1]


def test_a_download_that_keeps_failing_ends_in_one_line(monkeypatch, tmp_path, capsys):
    module = _script()
    monkeypatch.setattr(module.subprocess, "run", lambda command: type("Done", (), {"returncode": 1})())
    with pytest.raises(SystemExit, match=r"pip download face-recognition==1.3.0 failed 3 times"):
        module.pip_download(tmp_path, "--no-binary=:all:", "face-recognition==1.3.0", pause=0)
    assert capsys.readouterr().err.count("trying again") == 2
