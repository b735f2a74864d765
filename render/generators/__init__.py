"""Generators behind one interface (`base.Generator`): the embedded DCGAN and the StyleGAN backends.

    G = load_generator("embedded", device)      # or a path to a .pkl / .pt / .uncanny.pt file
"""

from __future__ import annotations

from pathlib import Path

import torch

from render.generators.base import Generator, LatentLayout

__all__ = ["Generator", "LatentLayout", "load_generator"]


def load_generator(spec: str, device: torch.device | str = "cpu") -> Generator:
    """"embedded" -> the 64 px DCGAN shipped with gan-face-generate; anything else is a generator file."""
    if spec == "embedded":
        from render.generators.dcgan import load_embedded

        return load_embedded(device)
    from render.generators.loading import load_generator_file

    return load_generator_file(Path(spec), device)
