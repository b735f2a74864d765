"""Projection: optimise a generator's latent until its image matches a target photo.

The schedule follows the StyleGAN2 projector (Karras et al. 2020, `projector.py` in stylegan2-ada-pytorch): Adam with
a learning-rate warm-up and cosine ramp-down, and Gaussian noise added to the latent that ramps down to zero over the
first part of the run. Unlike that projector we keep the generator's noise constant (so frames never flicker) and
optimise the layer-wise latent ("plus": W+ for StyleGAN, z + BatchNorm styles for the embedded DCGAN) or one vector
("single": w or z).

    result = project(G, target, start=prev.final, steps=1000, every=10, seed=3)
    result.latents   # [K, D] the latent every `every` steps, result.latents[0] is `start`
    result.final     # [1, D]

Every step is deterministic for a given seed, device and thread count, so an interrupted render can recompute a
subject and get the same trajectory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from render.faces.degradation import Restore
from render.kernels.step import WholeStep
from render.latent.degrade import degrader
from render.models.base import Generator
from render.models.lpips import LPIPS, Target, auto_layers, load_lpips


class ProjectionError(ValueError):
    """A projection cannot go on: its loss is no longer a number."""


@dataclass
class Projection:
    latents: torch.Tensor  # [K, D] float32 on CPU: the start, then the latent after every `every` steps, and the last
    steps: np.ndarray  # [K] int: how many steps had been taken when each latent was kept
    losses: np.ndarray  # [steps] total loss of each step
    distances: np.ndarray  # [steps] the LPIPS part of each step's loss

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1:]  # [1, D]


def learning_rate(t: float, lr: float, rampup: float, rampdown: float) -> float:
    """The StyleGAN2 projector's schedule at progress t in [0, 1): linear warm-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return lr * ramp


def noise_strength(t: float, initial: float, ramp: float) -> float:
    """Latent noise (in units of the latent's spread) at progress t: quadratic ramp from `initial` to 0."""
    if ramp <= 0:
        return 0.0
    return initial * max(0.0, 1.0 - t / ramp) ** 2


def prepare_target(image: np.ndarray | torch.Tensor, device: torch.device, framing: float = 1.0) -> torch.Tensor:
    """Aligned face, uint8 [H,W,3] or float [1,3,H,W] in -1..1 -> [1,3,h,w] in -1..1 on device, centre-cropped to
    `framing` of its side (see Generator.framing)."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 127.5 - 1
    image = image.to(device=device, dtype=torch.float32)
    if framing < 1.0:
        h, w = image.shape[-2:]
        ch, cw = round(h * framing), round(w * framing)
        top, left = (h - ch) // 2, (w - cw) // 2
        image = image[..., top : top + ch, left : left + cw]
    return image


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Area-faithful resize of [N,3,H,W] to size x size (antialiased when shrinking).

    On CUDA the same resampling runs as two matrix products: the antialiased kernel's backward has no deterministic
    CUDA implementation (it sums with atomics), and projections must repeat to the bit (render/kernels/device.py)."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    if img.is_cuda:
        rows = resize_matrix(img.shape[-2], size, img.device, img.dtype)  # [size, H]
        cols = resize_matrix(img.shape[-1], size, img.device, img.dtype)  # [size, W]
        return rows @ img @ cols.t()  # [N, 3, size, size]
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@functools.cache
def resize_matrix(n: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[size, n]: the antialiased bilinear resampling from n to size samples along one axis, as a matrix (the
    resampling of an identity image along that axis; the other axis keeps its size, which is exactly the identity)."""
    eye = torch.eye(n, dtype=torch.float64)[None, None]  # [1, 1, n, n]
    m = F.interpolate(eye, size=(size, n), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    return m.to(device, dtype)


# Part of every projection's cache key (render/pipeline/cache.py): raise it when a change makes the same settings give another
# trajectory, so that renders and caches do not mix results of the two. 2: the embedded generator's whole step
# (render/kernels/step.py), and two LPIPS layers at 64 px.
ALGORITHM_VERSION = 2

MAX_AUTO_LOSS_SIDE = 256  # as the StyleGAN2 projector, which compares its images at 256 px


def loss_side(G: Generator, loss_size: int = 0) -> int:
    """The side at which the LPIPS loss compares images: config `loss_size`, or 0 for the generator's resolution,
    at least 64 (what VGG's LPIPS heads were trained on) and at most 256 (a 1024 px generator's images are compared
    at 256 px, 16x less VGG work)."""
    return loss_size or min(max(G.resolution, 64), MAX_AUTO_LOSS_SIDE)


def takes_whole_step(G: Generator, loss_size: int = 0, mse_weight: float = 0.0) -> bool:
    """Whether `project` runs G's steps through `whole_step_distance`: a generator with `synthesis_vjp` (the embedded
    DCGAN on a fast backend), the loss at its own side, and no pixel loss (which needs the image itself)."""
    return not mse_weight and loss_side(G, loss_size) == G.resolution and G.synthesis_vjp() is not None


def whole_step_distance(G: Generator, lpips: LPIPS, target: Target, size: int):
    """latent [1, D] float32 -> LPIPS distance [1] of G's image to target, differentiable, computed as one function
    (render/kernels/step.py: one graph on a compiled backend); None where that does not apply: a generator without
    `synthesis_vjp` (the StyleGANs, or any on the reference backend), a loss compared at another size than G's
    images, or a target of several images."""
    if not takes_whole_step(G, size) or target.weighted[0].shape[0] != 1:
        return None
    forward, backward, generator_args = G.synthesis_vjp()
    lpips_args = lpips.loss_args(target)
    compiled = G.backend_for(G.device).compiled
    return lambda latent: WholeStep.apply(latent, (forward, backward), generator_args, lpips_args, compiled)


def project(
    G: Generator,
    target: np.ndarray | torch.Tensor,
    *,
    start: torch.Tensor | None = None,
    steps: int = 1000,
    every: int = 10,
    lr: float = 0.1,
    lr_rampup: float = 0.05,
    lr_rampdown: float = 0.25,
    initial_noise: float = 0.05,
    noise_ramp: float = 0.75,
    loss: str = "vgg",
    loss_size: int = 0,
    loss_layers: int = 0,
    mse_weight: float = 0.0,
    reg_weight: float = 0.01,
    space: str = "plus",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    restore: Restore | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> Projection:
    """Project `target` (aligned face, uint8 [H,W,3] or [1,3,H,W] in -1..1) into G's latent space.

    `start` ([1, D], default G.mean_latent()) is where the optimisation begins: chaining passes the previous subject's
    final latent. `progress(step, loss)` is called after every step. `dtype` other than float32 (render.kernels.device's
    resolve_dtype picks it): the generator runs on `G.compute_copy(dtype)` and LPIPS in that dtype, while the latent,
    Adam and the loss sums stay float32. G's backend (render.kernels.backend) runs the generator and LPIPS: the
    reference path, the fast one, or the fast one compiled (the whole step for the embedded DCGAN, the element-wise
    work between convolutions otherwise). `loss_layers`: how many of LPIPS's five layers the loss sums (0:
    render.models.lpips.auto_layers, two for VGG at 64 px). `restore` (render/faces/degradation.py): compare G's
    image with the target only through the photo's degradations (render/latent/degrade.py), so G restores what the
    photo lost; the kept latents are G's full pictures. It takes the autograd path, as a pixel loss does.
    """
    if space not in ("plus", "single"):
        raise ValueError(f"space must be 'plus' or 'single', not {space!r}")
    device = G.device
    size = loss_side(G, loss_size)
    lpips = load_lpips(loss, device, dtype=dtype, backend=G.backend_for(device))
    target = resize(prepare_target(target, device, G.framing), size)  # [1,3,S,S]
    degrade = degrader(restore or Restore(), size, G.framing)
    if degrade is not None:
        target = degrade(target)  # [1,3,S,S]: a gray photo stays itself, a lowres one loses its enlargement
    with torch.no_grad():
        lpips_target = lpips.target(target, loss_layers or auto_layers(loss, size))

    start = (G.mean_latent() if start is None else start).to(device=device, dtype=torch.float32).detach()
    std = G.latent_std().to(device)  # [D]
    if space == "single":
        width = G.layout.sizes[0]
        param = start[:, :width].clone()  # [1, width]: z or w
        to_latent = G.expand
        std = std[:width]
    else:
        param = start.clone()  # [1, D]
        to_latent = None
    param.requires_grad_(True)
    opt = torch.optim.Adam([param], lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    G_compute = G.compute_copy(dtype)  # G itself in float32; a copy with its weights in bf16/fp16 otherwise
    # The embedded DCGAN's step as one function of the latent (faster, and compiled as one graph), unless a pixel
    # loss needs the image itself
    distance = None if mse_weight or degrade else whole_step_distance(G_compute, lpips, lpips_target, size)

    kept, kept_steps = [start.cpu()[0] if space == "plus" else G.expand(param.detach()).cpu()[0]], [0]
    losses, distances = np.zeros(steps, np.float32), np.zeros(steps, np.float32)
    for step in range(steps):
        t = step / steps
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, lr, lr_rampup, lr_rampdown)
        sigma = noise_strength(t, initial_noise, noise_ramp)
        noise = torch.randn(param.shape, generator=gen).to(device) * (std * sigma)
        noisy = param + noise
        latent = to_latent(noisy) if to_latent else noisy  # [1, D]
        if distance is not None:
            dist = distance(latent)  # [1]
        else:
            img = G_compute.synthesis(latent.to(dtype)).float()  # [1,3,R,R] in -1..1
            img = resize(img, size)
            dist = lpips.distance_to(degrade(img) if degrade else img, lpips_target)  # [1]
        total = dist.float().sum()
        if mse_weight:
            total = total + mse_weight * ((degrade(img) if degrade else img).float() - target).square().mean()
        if reg_weight:
            total = total + reg_weight * G.regularizer(latent).sum()
        if degrade is not None and hasattr(degrade, "penalty"):
            total = total + degrade.penalty(img)  # what the degradation hides and the prior must hold
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses[step], distances[step] = total.item(), dist.detach().float().sum().item()
        if not math.isfinite(losses[step]):  # NaN or inf: every later latent is NaN too, and every frame black
            raise ProjectionError(f"projection diverged: the loss is {losses[step]} at step {step + 1} "
                                  f"(generator {G.name}; try a lower projection.lr)")
        if (step + 1) % every == 0 or step + 1 == steps:
            with torch.no_grad():
                clean = to_latent(param) if to_latent else param
            kept.append(clean.detach().cpu()[0].clone())
            kept_steps.append(step + 1)
        if progress is not None:
            progress(step + 1, losses[step])
    return Projection(torch.stack(kept), np.array(kept_steps), losses, distances)
