"""Perceptual path length (PPL) of a morph path, as in the StyleGAN paper (Karras et al. 2019, section 4.2, table 3).

    PPL = E_t [ LPIPS(G(p(t)), G(p(t + eps))) / eps^2 ],   eps = 1e-4, LPIPS with the VGG16 trunk

where p(t), t in [0, 1], is the path from face A (t = 0) to face B (t = 1) in the generator's flat latent. LPIPS is a
squared feature distance, so dividing by eps^2 makes the figure independent of eps for a smooth path; it measures
how much the image changes per unit of t, squared, on average: lower is a smoother, more even morph.

Sampling of t: the paper draws t uniformly from [0, 1] for random pairs of latents. Here the pair is fixed (two
projected photos), so the expectation is over t alone and we use *stratified* uniform sampling: t_i = (i + u_i) / n
* (1 - eps) with u_i ~ U(0, 1) from `seed`. It has the same expectation as i.i.d. uniform t, far less variance with a
few dozen samples, and keeps t + eps inside the path. As in NVIDIA's metric code we report the mean over the samples
between the 1st and 99th percentile (`ppl`) as well as the plain mean.

Images are treated as the paper treats FFHQ: the central face crop (rows 3/8..7/8, columns 2/8..6/8 of the frame),
area-downsampled to 256 px when larger; crops smaller than 64 px (the 64 px embedded generator gives 32) are
enlarged to 64 px so VGG16's five stages still see a picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-4


@dataclass
class PPLResult:
    ppl: float  # mean of the samples within the 1st..99th percentile (NVIDIA's metric)
    mean: float  # plain mean of all samples
    t: np.ndarray  # [n] the sampled positions along the path
    values: np.ndarray  # [n] LPIPS / eps^2 at each t
    epsilon: float


def stratified_t(n: int, seed: int, epsilon: float = EPSILON) -> np.ndarray:
    """n positions in [0, 1 - eps): one uniform draw in each of n equal strata."""
    if n < 1:
        raise ValueError(f"PPL needs at least one sample, not {n}")
    u = np.random.default_rng(seed).random(n)
    return (np.arange(n) + u) / n * (1 - epsilon)


def face_crop(img: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] -> the paper's central face crop, at most 256 px (area) and at least 64 px (bilinear)."""
    c = img.shape[2] // 8
    img = img[:, :, c * 3 : c * 7, c * 2 : c * 6]  # [N,3,4c,4c]
    side = img.shape[-1]
    if side > 256:
        img = F.adaptive_avg_pool2d(img, 256)
    elif side < 64:
        img = F.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False)
    return img


@torch.no_grad()
def path_length(G, path: Callable[[torch.Tensor], torch.Tensor], *, samples: int = 64, epsilon: float = EPSILON,
                seed: int = 0, lpips=None, batch: int = 16, crop: bool = True) -> PPLResult:
    """PPL of `path` (t [K, 1] in 0..1 -> latents [K, D]) through generator G, on G's device.

    `lpips` is a loaded LPIPS module (render.models.lpips.load_lpips("vgg", device)); loaded here when None.
    """
    if lpips is None:
        from render.models.lpips import load_lpips

        lpips = load_lpips("vgg", G.device)
    t = stratified_t(samples, seed, epsilon)
    values = []
    for i in range(0, samples, batch):
        t0 = torch.from_numpy(t[i : i + batch]).to(torch.float64)[:, None]  # [B, 1]
        lat = torch.cat([path(t0), path(t0 + epsilon)]).to(G.device, torch.float32)  # [2B, D]
        img = G.synthesis(lat).float()  # [2B,3,R,R] in -1..1
        if crop:
            img = face_crop(img)
        x, y = img.chunk(2)
        d = lpips.distance(lpips.features(x), lpips.features(y))  # [B]
        values.append(d.double().cpu().numpy() / epsilon**2)
    v = np.concatenate(values)
    lo, hi = np.percentile(v, 1, method="lower"), np.percentile(v, 99, method="higher")
    kept = v[(v >= lo) & (v <= hi)]
    return PPLResult(float(kept.mean()), float(v.mean()), t, v, epsilon)
