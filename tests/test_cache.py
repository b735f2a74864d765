"""The shared projection cache stays under its size cap, dropping the least recently used entries first."""

from __future__ import annotations

import os

import numpy as np
import torch

from render.pipeline.cache import load_projection, prune_cache, save_projection
from render.latent.project import Projection


def entry(path, mb: float, age: float, key: str = "k") -> None:
    n = int(mb * 2**20 / 4)
    rng = np.random.default_rng(len(str(path)))  # incompressible, so the file really is that big
    result = Projection(torch.from_numpy(rng.random((1, n), dtype=np.float32)), np.array([0]), np.zeros(1, np.float32),
                        np.zeros(1, np.float32))
    save_projection(path, result, key)
    os.utime(path, (1e9 + age, 1e9 + age))


def test_prune_drops_least_recently_used_and_keeps_the_new_entry(tmp_path):
    (tmp_path / "aligned").mkdir()
    entry(tmp_path / "old.npz", 1.0, age=1)
    entry(tmp_path / "aligned" / "mid.npz", 1.0, age=2)
    entry(tmp_path / "used.npz", 1.0, age=0)
    entry(tmp_path / "new.npz", 1.0, age=3)
    assert load_projection(tmp_path / "used.npz", "k") is not None  # a hit makes it the most recently used
    assert prune_cache(tmp_path, 2, keep=tmp_path / "new.npz") == 2
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == ["new.npz", "used.npz"]
    assert prune_cache(tmp_path, 0) == 0 and prune_cache(tmp_path / "absent", 1) == 0


def test_the_entry_just_written_survives_a_cap_smaller_than_itself(tmp_path):
    entry(tmp_path / "a.npz", 1.5, age=1)
    entry(tmp_path / "b.npz", 1.5, age=0)
    prune_cache(tmp_path, 1, keep=tmp_path / "b.npz")
    assert [p.name for p in tmp_path.glob("*.npz")] == ["b.npz"]


def test_prune_touches_only_its_own_entries(tmp_path):
    (tmp_path / "directions").mkdir()
    entry(tmp_path / "directions" / "fitted.npz", 1.0, age=0)  # someone else's file under the same folder
    entry(tmp_path / "a.npz", 1.0, age=1)
    entry(tmp_path / "b.npz", 1.0, age=2)
    prune_cache(tmp_path, 1, keep=tmp_path / "b.npz")
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == ["b.npz", "fitted.npz"]


def test_an_unreadable_photo_is_that_subjects_one_line_error(tmp_path, monkeypatch):
    """With the cache on, the photo's bytes are hashed first: a read error there is an ImageInputError naming the
    file (the render skips that subject), not an OSError that ends the whole sequence."""
    import pathlib

    import pytest

    from render.faces.align import ImageInputError
    from render.pipeline.cache import cached_align
    from sequences.config import AlignConfig

    photo = tmp_path / "locked.jpg"
    photo.write_bytes(b"\xff\xd8 not really read")
    real = pathlib.Path.read_bytes

    def denied(self):
        if self == photo:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)  # chmod 000 does not stop root, who runs CI here
    with pytest.raises(ImageInputError, match="locked.jpg: cannot read the file \\(Permission denied\\)"):
        cached_align(photo, AlignConfig(), tmp_path / "cache")


def test_a_damaged_entry_is_made_again_not_a_crash(tmp_path, caplog, subject_photo):
    """An entry cut short (a full disk, a card pulled) made np.load raise zipfile's BadZipFile, which no reader
    caught: every command using that photo failed, on every rerun, until someone found the file. Now it is read as
    absent, with a warning, and made again."""
    from render.pipeline.cache import align_key, cached_align, lookup_align
    from sequences.config import AlignConfig

    entry(tmp_path / "whole.npz", 0.01, age=0)
    whole = (tmp_path / "whole.npz").read_bytes()
    middle = len(whole) // 2  # bytes flipped inside a member: a failed checksum (zipfile's, or zlib's when compressed)
    damaged = {"cut.npz": whole[:middle], "empty.npz": b"", "zip-header.npz": b"PK\x03\x04" + b"\0" * 64,
               "flipped.npz": whole[:middle] + bytes(b ^ 0xFF for b in whole[middle:middle + 64]) + whole[middle + 64:]}
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
        with caplog.at_level("WARNING"):
            assert load_projection(tmp_path / name, "k") is None
        assert f"{name} is unreadable" in caplog.text

    photo, cache, cfg = subject_photo("obama.jpg"), tmp_path / "cache", AlignConfig()
    face = cached_align(photo, cfg, cache)
    store = cache / "aligned" / f"{align_key(photo, cfg)}.npz"
    store.write_bytes(store.read_bytes()[:1000])
    assert lookup_align(photo, cfg, cache) is None
    again = cached_align(photo, cfg, cache)  # aligned anew, and stored whole again
    assert np.array_equal(again.image, face.image)
    assert np.array_equal(lookup_align(photo, cfg, cache).image, face.image)
