"""Text-steered faces: CLIP (through open_clip, from a checkpoint the user supplies) pulls a latent toward a prompt.

    clip = load_clip(cfg.clip.model, cfg.clip.checkpoint, device)     # ClipUnavailable: one line saying what to do
    text = clip.encode_text(["a smiling old man with round glasses"])  # [1, E] unit vectors
    start, sims = best_of(G, clip, text, candidates=16, seed=0)        # the best of 16 random faces, [1, D]
    run = steer(G, clip, text, start=start, steps=200, every=4)        # run.latents [K, D], run.similarity [steps]

Each step renders the face, cuts `crops` randomly cropped, flipped, rotated, colour-jittered views of it (the recipe
of CLIP-guided generation since VQGAN+CLIP: without augmentation CLIP is fooled by adversarial pixel patterns),
scores them against the prompt and moves the latent. The latent is optimised in units of the generator's spread
(`latent = start + delta * std`), so `lr` and the pull back to `start` mean the same for every generator. For an
edit, an LPIPS term to the starting face keeps the person recognisable; dlib's identity distance is measured before
and after but is not differentiable, so it is reported rather than optimised.

Nothing is ever downloaded: the checkpoint must be a local file, loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from render.models.base import Generator
from render.latent.project import learning_rate, resize

HOW_TO = ("no CLIP model configured: set [clip] model (e.g. \"ViT-B-32\") and checkpoint (a local open_clip "
          "weights file, e.g. open_clip_pytorch_model.bin or .safetensors from laion/CLIP-ViT-B-32-laion2B-s34B-b79K) "
          "in config.toml, or pass --clip-model and --clip-checkpoint; nothing is downloaded")
_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class ClipUnavailable(ValueError):
    """CLIP is not configured or its checkpoint cannot be used; the message is one line saying what to do."""


@dataclass
class Clip:
    """An open_clip model with its real tokenizer and its image normalisation, as differentiable tensor ops."""

    model: torch.nn.Module
    tokenizer: Callable
    mean: torch.Tensor  # [1,3,1,1] the model's preprocessing mean (0..1 pixels)
    std: torch.Tensor  # [1,3,1,1]
    image_size: tuple[int, int]  # (H, W) the vision tower expects
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The vision tower's compute dtype (open_clip's low precisions cast only conv and linear weights)."""
        for m in self.model.visual.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                return m.weight.dtype
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> [P, E] float32 unit vectors."""
        tokens = self.tokenizer(prompts).to(self.device)  # [P, context_length] int
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in -1..1 -> the vision tower's input: resized to image_size, (x01 - mean) / std."""
        h, w = self.image_size
        if h == w:
            img = resize(img, h)  # the projection's resampling, deterministic on CUDA too
        elif tuple(img.shape[-2:]) != self.image_size:  # a non-square tower: the plain antialiased resampling
            img = F.interpolate(img, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        x = (img + 1) / 2  # [N,3,h,w] in 0..1
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in -1..1 -> [N, E] float32 unit vectors; differentiable with respect to `img`."""
        x = self.normalize(img.float()).to(self.dtype)  # [N,3,h,w]
        return F.normalize(self.model.encode_image(x).float(), dim=-1)


def _architecture(model: str) -> str:
    """An open_clip architecture name; a path to a model-config .json is registered with open_clip first."""
    import open_clip

    if model.startswith(("hf-hub:", "local-dir:")):
        raise ClipUnavailable(f"[clip] model {model!r}: hub and folder schemas are not supported (they may download); "
                              "give an architecture name or a model-config .json, and the weights in [clip] checkpoint")
    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise ClipUnavailable(f"{path}: CLIP model config not found ([clip] model)")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ClipUnavailable(f"{path}: not a readable open_clip model config ({e})") from None
        if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise ClipUnavailable(f"{path}: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise ClipUnavailable(f"[clip] model {model!r} is not an open_clip architecture (e.g. ViT-B-32, ViT-B-16, "
                              "ViT-L-14, RN50) nor a model-config .json")
    return model


def load_clip(model: str, checkpoint: str, device: torch.device | str = "cpu", *,
              precision: str = "float32") -> Clip:
    """The CLIP model `model` with the weights in the local file `checkpoint`, frozen, in eval mode, on `device`."""
    if not model and not checkpoint:
        raise ClipUnavailable(HOW_TO)
    if not checkpoint:
        raise ClipUnavailable(f"[clip] checkpoint is not set (model {model!r}): give --clip-checkpoint or set it in "
                              "config.toml, a local open_clip weights file; nothing is downloaded")
    if not model:
        raise ClipUnavailable(f"[clip] model is not set (checkpoint {checkpoint!r}): give --clip-model (e.g. "
                              "ViT-B-32) or set it in config.toml")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ClipUnavailable(f"{path}: CLIP checkpoint not found ([clip] checkpoint); nothing is downloaded")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # a text tower from transformers must not fetch either
        os.environ.setdefault(var, "1")
    device = torch.device(device)
    if precision == "float16" and device.type == "cpu":
        precision = "bfloat16"  # float16 matmuls are not supported well on CPU
    if precision == "bfloat16":
        from render.kernels.device import warn_if_emulated_bf16

        warn_if_emulated_bf16("[clip] precision", device, "precision = \"float32\" is faster here")
    import open_clip

    name = _architecture(model)
    logging.disable(logging.INFO)  # open_clip narrates every step on the root logger
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(path), device=device, precision=_PRECISION[precision], weights_only=True)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # open_clip raises RuntimeError, pickle errors, KeyError... for a wrong file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, (KeyError, EOFError, pickle.UnpicklingError)):  # torch.load's words for a text file: "101"
            reason = f"not a weights file torch can read ({type(e).__name__}: {reason})"
        if "TorchScript" in reason or "jit" in reason.lower() or "Weights only load failed" in reason:
            reason = ("not a plain state dict (OpenAI's original TorchScript .pt files are refused because loading "
                      "them can run code; use open_clip's open_clip_pytorch_model.bin or .safetensors)")
        raise ClipUnavailable(f"{path}: cannot load as an open_clip {name} checkpoint: {reason[:300]}") from None
    finally:
        logging.disable(logging.NOTSET)
    net.eval().requires_grad_(False)
    mean, std = _normalisation(preprocess)
    size = getattr(net.visual, "preprocess_cfg", {}).get("size") or getattr(net.visual, "image_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)  # (H, W)
    return Clip(net, tokenizer, mean.view(1, 3, 1, 1).to(device),
                std.view(1, 3, 1, 1).to(device), size, name)


def _normalisation(preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std of the Normalize step of open_clip's own (PIL) preprocessing pipeline."""
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return torch.tensor(t.mean, dtype=torch.float32), torch.tensor(t.std, dtype=torch.float32)
    raise ClipUnavailable("open_clip's preprocessing has no Normalize step; cannot match its image normalisation")


# --- views --------------------------------------------------------------------------------------------------------
def views(img: torch.Tensor, n: int, *, scale: float = 0.7, augment: bool = True,
          gen: torch.Generator | None = None) -> torch.Tensor:
    """`n` random views of img [1,3,H,W] in -1..1 -> [n,3,H,W] in about -1..1, differentiable.

    Each view is a square crop of side scale..1 of the face at a random place; with `augment` also a random mirror,
    a rotation of up to 10 degrees, brightness and contrast jitter and a little pixel noise.
    """
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    u = torch.rand(n, 5, generator=gen)  # [n, 5] in 0..1
    side = scale + (1 - scale) * u[:, 0]  # crop side as a fraction of the image
    tx, ty = (2 * u[:, 1] - 1) * (1 - side), (2 * u[:, 2] - 1) * (1 - side)  # crop centre, inside the image
    angle = (2 * u[:, 3] - 1) * math.radians(10) if augment else torch.zeros(n)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if augment else torch.ones(n)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], -1), torch.stack([sin * flip, cos, ty], -1)], 1)
    theta = theta.to(img.device, img.dtype)  # [n,2,3] output grid -> input coordinates
    grid = F.affine_grid(theta, [n, *img.shape[1:]], align_corners=False)  # [n,H,W,2]
    out = F.grid_sample(img.expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)  # [n,3,H,W]
    if augment:
        jitter = torch.rand(n, 2, generator=gen).to(img.device, img.dtype)  # brightness, contrast
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * (0.8 + 0.4 * jitter[:, 1, None, None, None]) + mean
        out = out + 0.2 * (jitter[:, 0, None, None, None] - 0.5)
        out = out + 0.03 * torch.randn(out.shape, generator=gen).to(img.device, img.dtype)
    return out


# --- starting point and optimisation -------------------------------------------------------------------------------
@torch.no_grad()
def similarity(G: Generator, clip: Clip, text: torch.Tensor, latents: torch.Tensor, *, batch: int = 8) -> np.ndarray:
    """CLIP cosine similarity [K] of each latent's whole face (no augmentation) to the prompt embedding text [1, E]."""
    out = []
    for i in range(0, len(latents), batch):
        img = G.synthesis(latents[i : i + batch].to(G.device, torch.float32))  # [n,3,R,R] in -1..1
        out.append((clip.encode_image(img) @ text.T)[:, 0].cpu())  # [n]
    return torch.cat(out).numpy()


def best_of(G: Generator, clip: Clip, text: torch.Tensor, *, candidates: int = 16, seed: int = 0,
            truncation_psi: float = 0.7) -> tuple[torch.Tensor, np.ndarray]:
    """The random face (of `candidates` drawn with `seed`) most similar to the prompt: latent [1, D], similarities [K]."""
    latents = G.sample(candidates, seed, truncation_psi)  # [K, D]
    sims = similarity(G, clip, text, latents)
    return latents[int(np.argmax(sims))][None].clone(), sims


@dataclass
class Steering:
    latents: torch.Tensor  # [K, D] float32 on CPU: the start, then the latent every `every` steps, and the last
    steps: np.ndarray  # [K] steps taken when each latent was kept
    similarity: np.ndarray  # [steps] mean CLIP similarity of the step's augmented views to the prompt
    losses: np.ndarray  # [steps] total loss

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1:]  # [1, D]


def steer(
    G: Generator,
    clip: Clip,
    text: torch.Tensor,
    *,
    start: torch.Tensor | None = None,
    steps: int = 200,
    every: int = 4,
    lr: float = 0.05,
    crops: int = 8,
    crop_scale: float = 0.7,
    augment: bool = True,
    space: str = "plus",
    strength: float = 1.0,
    reg_weight: float = 0.1,
    identity_weight: float = 0.0,
    lpips=None,
    lpips_weight: float = 0.0,
    lpips_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, float, float], None] | None = None,
) -> Steering:
    """Move the latent `start` ([1, D]; default the mean) toward the prompt embedding `text` ([1, E]).

    space "plus" moves every layer of the latent freely; "single" moves only along the single-vector space
    (G.expand: one w offset shared by every StyleGAN layer, z alone for the DCGAN), which stays closer to faces.
    Loss = strength * (1 - cos(CLIP(views), text)) + reg_weight * G.regularizer + identity_weight * mean(delta^2)
    + lpips_weight * LPIPS(face, starting face), where delta is the move from `start` in units of the latent's
    spread. `lpips` is a module from render.models.lpips.load_lpips (needed only when lpips_weight > 0).
    `progress(step, loss, similarity)` is called after every step.
    """
    device = G.device
    text = text.to(device, torch.float32)
    start = (G.mean_latent() if start is None else start).to(device, torch.float32).detach()  # [1, D]
    if space not in ("plus", "single"):
        raise ValueError(f"space must be 'plus' or 'single', not {space!r}")
    std = G.latent_std().to(device)  # [D]
    width = G.layout.sizes[0] if space == "single" else G.layout.dim
    std = std[:width]
    delta = torch.zeros(1, width, device=device, requires_grad=True)  # [1, width] in units of std
    opt = torch.optim.Adam([delta], lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(seed)
    G_compute = G.compute_copy(dtype)  # as in render.latent.project: the generator on a copy of its weights in `dtype`
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)  # CLIP only
    use_lpips = lpips is not None and lpips_weight > 0
    if use_lpips:
        with torch.no_grad():
            ref = lpips.target(resize(G.synthesis(start).float(), lpips_size))

    kept, kept_steps = [start.cpu()[0]], [0]
    sims, losses = np.zeros(steps, np.float32), np.zeros(steps, np.float32)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step / steps, lr, 0.05, 0.25)
        latent = start + move(G, delta * std, space)  # [1, D]
        img = G_compute.synthesis(latent.to(dtype)).float()  # [1,3,R,R] in -1..1
        small = resize(img, min(img.shape[-1], 2 * max(clip.image_size)))  # no point cropping 1024 px for 224
        with autocast:
            emb = clip.encode_image(views(small, crops, scale=crop_scale, augment=augment, gen=gen))  # [crops, E]
        sim = (emb @ text.T).mean()
        total = strength * (1 - sim)
        if reg_weight:
            total = total + reg_weight * G.regularizer(latent).sum()
        if identity_weight:
            total = total + identity_weight * delta.square().mean()
        if use_lpips:
            face = resize(img, lpips_size)  # [1,3,S,S]
            with autocast:
                total = total + lpips_weight * lpips.distance_to(face, ref).float().sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sims[step], losses[step] = sim.item(), total.item()
        if (step + 1) % every == 0 or step + 1 == steps:
            with torch.no_grad():
                kept.append((start + move(G, delta * std, space)).cpu()[0])
            kept_steps.append(step + 1)
        if progress is not None:
            progress(step + 1, float(losses[step]), float(sims[step]))
    return Steering(torch.stack(kept), np.array(kept_steps), sims, losses)


def move(G: Generator, delta: torch.Tensor, space: str) -> torch.Tensor:
    """A move in the optimised space -> the same move in the flat latent [N, D]. "plus": delta is [N, D] already;
    "single": delta [N, width] is expanded like one w (StyleGAN: to every layer; DCGAN: z alone)."""
    if space == "plus":
        return delta
    return G.expand(delta) - G.expand(torch.zeros_like(delta))  # G.expand is linear up to its value at 0


# --- without CLIP: prompts onto the edit-direction vocabulary -----------------------------------------------------
_NEGATIONS = ("not", "no", "without", "less", "never")


def match_vocabulary(prompt: str, vocabulary: dict[str, tuple[str, float]]) -> dict[str, float]:
    """Direction amounts {name: amount} for the vocabulary phrases found in `prompt`, longest phrases first.

    "a smiling man with an open mouth" -> {"smile": a, "mouth_open": b}. A phrase preceded by not / no / without /
    less flips its amount ("not smiling"). A phrase counts once; matches do not overlap.
    """
    text = " " + re.sub(r"[^a-z0-9]+", " ", prompt.lower()).strip() + " "
    amounts: dict[str, float] = {}
    for phrase in sorted(vocabulary, key=len, reverse=True):
        key = " " + re.sub(r"[^a-z0-9]+", " ", phrase.lower()).strip() + " "
        at = text.find(key)
        if at < 0:
            continue
        name, amount = vocabulary[phrase]
        before = text[:at].split()
        if before and before[-1] in _NEGATIONS:
            amount = -amount
        amounts[name] = amounts.get(name, 0.0) + float(amount)
        text = text[:at] + " | " + text[at + len(key):]  # consumed: shorter phrases inside it do not match again
    return amounts


def slug(text: str, limit: int = 60) -> str:
    """A folder name for a prompt or an edit, at most `limit` bytes of UTF-8: "A smiling old man!" ->
    "a-smiling-old-man", "smile+1.5 yaw-0.5" -> "smile+1.5-yaw-0.5". Letters of any script and the signs of
    amounts stay, so a prompt in Chinese and one in Russian, or an edit and its opposite, never share (and
    overwrite) one folder."""
    s = re.sub(r"[^\w+.]+|_", "-", unicodedata.normalize("NFC", text).lower()).strip("-.")
    while len(s.encode()) > limit:
        s = s[:-1]
    return s.strip("-.") or "face"
