"""The generator interface every backend implements (embedded DCGAN, StyleGAN2, StyleGAN3).

A *latent* is one flat tensor per image, `[N, D]`, cut into named layers by a `LatentLayout`: for StyleGAN the
layers are the `num_ws` copies of w (all `w_dim` wide); for the embedded DCGAN they are z followed by each
BatchNorm's per-channel scale and shift. Projection, chaining, loops, morphing and layer crossover all work on this
flat form, so they never need to know which backend they drive.

    latent = G.mean_latent()                 # [1, D]
    img = G.synthesis(latent)                # [1, 3, R, R] in -1..1, constant noise, deterministic
    latent = G.mapping(z, truncation_psi=0.7)  # z [N, z_dim] -> [N, D]
"""

from __future__ import annotations

import copy
import hashlib
import weakref
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from render.kernels.backend import Backend, default_backend


@dataclass(frozen=True)
class LatentLayout:
    """Names and widths of the layers of a flat latent, coarse (near the input) to fine."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.sizes) or not self.names:
            raise ValueError("LatentLayout needs one size per layer name, and at least one layer")

    @property
    def num_layers(self) -> int:
        return len(self.names)

    @cached_property
    def dim(self) -> int:
        return sum(self.sizes)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        out, at = [], 0
        for size in self.sizes:
            out.append(at)
            at += size
        return tuple(out)

    def slice(self, layer: int) -> slice:
        return slice(self.offsets[layer], self.offsets[layer] + self.sizes[layer])

    def split(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """[N, D] -> one [N, size_i] tensor per layer (views)."""
        return list(torch.split(latent, list(self.sizes), dim=-1))

    def layer_mask(self, layers, device=None) -> torch.Tensor:
        """Boolean [D] mask that is True on the entries of the given layer indices."""
        mask = torch.zeros(self.dim, dtype=torch.bool, device=device)
        for i in layers:
            mask[self.slice(i)] = True
        return mask

    def summary(self) -> str:
        if len(set(self.sizes)) == 1:
            return f"{self.num_layers} x {self.sizes[0]} ({self.names[0]}..{self.names[-1]})"
        return " + ".join(f"{n}[{s}]" for n, s in zip(self.names, self.sizes))


class Generator(nn.Module):
    """Base class: subclasses set the attributes in __init__ and implement the four methods below.

    Attributes: `resolution` (output side in pixels), `layout` (LatentLayout), `z_dim`, `name` (for manifests and
    `run.py models`). Generators are always in eval mode with requires_grad off; projection optimises latents only.
    """

    resolution: int
    layout: LatentLayout
    z_dim: int
    name: str = "generator"
    # Side of the generator's frame as a fraction of an FFHQ-aligned crop (1.0 for FFHQ-trained models). Targets are
    # centre-cropped to this before projection, so a face is asked to fill the frame the way the generator draws it.
    framing: float = 1.0
    # Submodules a reduced-precision compute copy keeps in float32 (they cast their input and output themselves).
    float32_modules: tuple[str, ...] = ()
    # Which implementation runs, the reference path or the fast one (render.kernels.backend): set by whoever owns the
    # generator (a render, from config `backend`); None is the default for the device the latent is on.
    backend: Backend | None = None

    # --- to implement -------------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [N, z_dim] -> latent [N, D]."""
        raise NotImplementedError

    def synthesis(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [N, D] -> image [N, 3, R, R] in -1..1. Constant noise: the same latent gives the same image."""
        raise NotImplementedError

    def mean_latent(self) -> torch.Tensor:
        """The average latent [1, D] (StyleGAN: w_avg broadcast; DCGAN: z = 0 with the pretrained styles)."""
        raise NotImplementedError

    def expand(self, v: torch.Tensor) -> torch.Tensor:
        """The single-vector space used by `space = "single"`: v [N, layout.sizes[0]] -> latent [N, D].

        StyleGAN: one w broadcast to every layer. DCGAN: z with the pretrained styles.
        """
        raise NotImplementedError

    # --- shared behaviour, overridable ---------------------------------------------------------------------------
    def latent_std(self) -> torch.Tensor:
        """Per-entry spread [D] of the latent distribution, used to scale projection noise and regularisation."""
        with torch.no_grad():
            z = torch.randn(2000, self.z_dim, generator=torch.Generator().manual_seed(123)).to(self.device)
            lat = self.mapping(z)
        return lat.std(dim=0).clamp_min(1e-8)

    def regularizer(self, latent: torch.Tensor) -> torch.Tensor:
        """Penalty [N] keeping a projected latent near the generator's distribution (0 at the mean latent)."""
        d = (latent - self.mean_latent()) / self.latent_std()
        return d.square().mean(dim=-1)

    def synthesis_vjp(self) -> tuple | None:
        """synthesis with a hand-written backward, for a projection step compiled as one function (render/latent/project.py):
        (forward, backward, args), pure functions of tensors, where forward(latent, *args) -> (image [N, 3, R, R]
        float32, tape) and backward(image_grad, tape, *args) -> latent gradient [N, D] float32. None (this default):
        projection differentiates `synthesis` by autograd."""
        return None

    def backend_for(self, device: torch.device) -> Backend:
        """The Backend a synthesis on `device` runs."""
        return self.backend if self.backend is not None else default_backend(device)

    def sample(self, n: int, seed: int, truncation_psi: float = 1.0) -> torch.Tensor:
        """n latents [n, D] from z drawn with `seed` (same seed, same faces, on every device)."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return self.mapping(z.to(self.device), truncation_psi=truncation_psi)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi))

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def describe(self) -> dict:
        """What `run.py models` prints and what manifests record."""
        return {
            "name": self.name,
            "resolution": self.resolution,
            "z_dim": self.z_dim,
            "latent": self.layout.summary(),
            "latent_dim": self.layout.dim,
            "num_layers": self.layout.num_layers,
        }

    def compute_copy(self, dtype: torch.dtype) -> Generator:
        """This generator with its weights and buffers in `dtype`, for optimising in reduced precision: projection
        runs `G.compute_copy(torch.bfloat16).synthesis(latent.to(torch.bfloat16))` with the latent, the optimiser
        and the loss sums in float32, and frames are rendered by the float32 generator from the stored latents.
        Made once per (dtype, device) and kept beside the generator (not a submodule: `.to()` does not touch it, a
        move to another device makes a new one). float32 returns self.

        Casting the weights once beats autocast, which casts them again on every call, and, unlike autocast, reaches
        the backward passes our custom autograd functions compute. Generators are frozen, so the copy is never
        refreshed: after changing G's weights (load_state_dict), drop it with `G.__dict__.pop("_compute_copies",
        None)`. It runs G's backend, whatever G's backend is when it is asked for.
        """
        if dtype == torch.float32:
            return self
        copies = self.__dict__.setdefault("_compute_copies", {})
        key = (dtype, self.device)
        if key not in copies:
            copies.clear()
            del self.__dict__["_compute_copies"]  # do not deep-copy the cache into the copy
            try:
                twin = copy.deepcopy(self).to(dtype).freeze()
                for name in self.float32_modules:
                    twin.get_submodule(name).float()
            finally:
                self.__dict__["_compute_copies"] = copies
            copies[key] = twin
        copies[key].backend = self.backend
        return copies[key]

    def weight_dtype(self) -> torch.dtype:
        """The dtype of the weights (float32 unless this is a compute copy)."""
        for t in self.parameters():
            return t.dtype
        return torch.float32

    def freeze(self) -> Generator:
        """Eval mode, no parameter gradients. Returns self."""
        self.eval()
        self.requires_grad_(False)
        return self


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # G -> fingerprint (no reuse of a dead id)


def generator_fingerprint(G: Generator) -> str:
    """sha256 of the generator's class, name, architecture settings and every parameter and buffer (computed once
    per instance). The settings count: two files with the same weights but another conv_clamp or resample filter
    draw other pictures, and must not share cached projections or directions. (A generator without settings, the
    embedded one, hashes as it did before they counted, so its caches and fitted directions stay valid.)"""
    if G not in _FINGERPRINTS:
        arch = getattr(G, "arch", None)
        h = hashlib.sha256(f"{type(G).__name__}:{G.name}:{G.layout}{'' if arch is None else f':{arch!r}'}".encode())
        for name, t in sorted(G.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        _FINGERPRINTS[G] = h.hexdigest()
    return _FINGERPRINTS[G]
