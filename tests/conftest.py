"""Shared fixtures: the demo photos (skipped with a clear reason when absent) and a temporary-image writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SUBJECTS = Path(__file__).resolve().parent.parent / "sequences" / "subjects"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one torch thread is faster, and far faster when other processes share the cores. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def subjects_dir() -> Path:
    """sequences/subjects/, holding the demo photos that set-up fetches; skips the test if they are absent."""
    if not SUBJECTS.is_dir() or not any(SUBJECTS.iterdir()):
        pytest.skip(f"demo photos missing in {SUBJECTS} (run the set-up command in README.md)")
    return SUBJECTS


@pytest.fixture(scope="session")
def subject_photo(subjects_dir):
    """subject_photo("obama.jpg") -> its Path; skips the test if that photo is absent."""

    def get(name: str) -> Path:
        path = subjects_dir / name
        if not path.is_file():
            pytest.skip(f"demo photo {path} missing (run the set-up command in README.md)")
        return path

    return get


@pytest.fixture
def tmp_image(tmp_path):
    """tmp_image(array_or_pil, "name.png", **save_kwargs) -> Path of the image saved in the test's temporary folder."""

    def save(img, name: str = "image.png", **save_kwargs) -> Path:
        path = tmp_path / name
        pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
        pil.save(path, **save_kwargs)
        return path

    return save


@pytest.fixture(scope="session", autouse=True)
def no_auto_upscale():
    """render.upscale = "auto" (the default) upscales nothing in these tests: with the weights installed it would add
    a quarter of a second a frame to every small render. Tests of the upscaler name "realesrgan-x4", or set
    render.latent.upscale.AUTO_MAX_RESOLUTION back themselves. (Renders in a subprocess are not reached: their configs
    say upscale = "none".)"""
    try:
        import render.latent.upscale as upscale
    except ImportError:  # a set-up without torch: nothing renders
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upscale, "AUTO_MAX_RESOLUTION", 0)
        yield
