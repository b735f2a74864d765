"""Networks and their weights: the generators behind one interface (`base.Generator`: the embedded DCGAN,
StyleGAN2, StyleGAN3), LPIPS, Real-ESRGAN (the learned upscaler), and the loading of checkpoint files without
executing anything inside them.

    G = load_generator("embedded", device)      # or a path to a .pkl / .pt / .uncanny.pt file

Imports: torch, numpy, `render.kernels` (for the fast halves and the backend switch); never the faces, latent,
pipeline or commands rooms, nor `sequences`. This __init__ imports nothing heavy (the commands import it at
start-up); import the interface itself from `render.models.base`.
"""

from __future__ import annotations

from pathlib import Path


def load_generator(spec: str, device="cpu"):
    """"embedded" -> the 64 px DCGAN shipped with gan-face-generate; anything else is a generator file."""
    if spec == "embedded":
        from render.models.dcgan import load_embedded

        return load_embedded(device)
    from render.models.loading import load_generator_file

    return load_generator_file(Path(spec), device)
