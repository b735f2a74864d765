"""Latents to pictures: generator output as uint8 frames, resampled to the output size.

    small = synthesize(G, latents)               # uint8 [K, R, R, 3] at the generator's resolution
    big = resample(small[0], 512, "lanczos")     # uint8 [512, 512, 3]
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in -1..1 -> uint8 [N,H,W,3]."""
    return (img.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
            .permute(0, 2, 3, 1).cpu().numpy())


@torch.no_grad()
def synthesize(G, latents: torch.Tensor, *, batch: int = 16) -> np.ndarray:
    """latents [K, D] -> uint8 [K, R, R, 3], in batches on G's device."""
    out = [to_uint8(G.synthesis(latents[i : i + batch].to(G.device, torch.float32)))
           for i in range(0, len(latents), batch)]
    return np.concatenate(out) if out else np.zeros((0, G.resolution, G.resolution, 3), np.uint8)


def resample(frame: np.ndarray, size: int, filter: str = "lanczos") -> np.ndarray:
    """uint8 [H,W,3] -> uint8 [size,size,3] with the named filter (a no-op at the same size)."""
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize((size, size), FILTERS[filter]))
