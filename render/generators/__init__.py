"""Generators behind one interface (`base.Generator`): the embedded DCGAN and the StyleGAN backends.

    G = load_generator("embedded", device)      # or a path to a .pkl / .pt / .uncanny.pt file

This package's __init__ imports nothing heavy, so command modules under it (cli.py) can be imported by `run.py`
without pulling in torch; import the interface itself from `render.generators.base`.
"""

from __future__ import annotations

from pathlib import Path


def load_generator(spec: str, device="cpu"):
    """"embedded" -> the 64 px DCGAN shipped with gan-face-generate; anything else is a generator file."""
    if spec == "embedded":
        from render.generators.dcgan import load_embedded

        return load_embedded(device)
    from render.generators.loading import load_generator_file

    return load_generator_file(Path(spec), device)
