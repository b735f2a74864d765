"""The embedded default generator: the 64 px DCGAN face model shipped in `gan-face-generate==1.1.1`.

Its weights were trained on DigiFace-1M, whose licence is non-commercial (see the README).

A plain DCGAN only takes z, which is too narrow to reproduce a real face. We give it a layer-wise latent in the spirit
of StyleSpace: in eval mode each BatchNorm is a per-channel affine map `y = a * x + b` of its convolution's output, so
we treat each layer's (a, b) as that layer's *style*. The latent is

    [ z (100) | block1 (2x512) | block2 (2x256) | block3 (2x128) | block4 (2x64) ]      D = 2020

with the styles stored as dimensionless offsets from the pretrained values,

    a = a0 * (1 + STYLE_UNIT * ds)        b = b0 + STYLE_UNIT * |gamma0| * dt

so every style entry has a spread of about 1 and 0 means "as trained". z = 0 is not a face for a DCGAN (it renders
a flat texture), so the *mean latent* is the medoid face: of 512 fixed samples with |z| = sqrt(z_dim), the one whose image is closest to
their average image, with the pretrained styles. The regulariser keeps |z|^2 / z_dim near 1 (where the Gaussian
prior's mass lies) and pulls every style toward its pretrained value.
The network below is our own module; only the weights come from the package, loaded with weights_only=True.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from render.kernels import dcgan as step_halves, onednn
from render.kernels.dcgan import STYLE_UNIT  # relative change of a style per latent unit
from render.models.base import Generator, LatentLayout

_BN_EPS = 1e-5


def weights_path() -> Path:
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package gan-face-generate==1.1.1 is not installed (it ships the embedded weights; "
                                "run `make setup`)")
    return Path(spec.submodule_search_locations[0]) / "weights.tar"


class EmbeddedDCGAN(Generator):
    """DCGAN generator (z 100 -> 64x64 RGB) with BatchNorm styles as a layer-wise latent."""

    name = "embedded-dcgan64"
    framing = 0.79  # measured: its faces' FFHQ crop square spans 81 +- 5 px of its 64 px frame (41 samples)

    def __init__(self, z_dim: int = 100, ngf: int = 64, channels: int = 3):
        super().__init__()
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf]  # 512, 256, 128, 64
        ins = [z_dim] + widths
        self.convs = nn.ModuleList(
            [nn.ConvTranspose2d(ins[0], widths[0], 4, 1, 0, bias=False)]  # 1x1 -> 4x4
            + [nn.ConvTranspose2d(ins[i], widths[i], 4, 2, 1, bias=False) for i in range(1, 4)]  # -> 8, 16, 32
        )
        self.to_rgb = nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False)  # 32 -> 64
        for i, c in enumerate(widths):  # pretrained styles, filled by load_state_from_package
            self.register_buffer(f"scale{i}", torch.ones(c))
            self.register_buffer(f"shift{i}", torch.zeros(c))
            self.register_buffer(f"unit{i}", torch.ones(c))  # |gamma|: the spread of a normalised activation
        self.widths = widths
        self._packs = onednn.PackCache()
        self._mean: torch.Tensor | None = None
        self.z_dim = z_dim
        self.resolution = 64
        self.layout = LatentLayout(("z",) + tuple(f"block{i + 1}" for i in range(4)),
                                   (z_dim,) + tuple(2 * c for c in widths))

    # --- weights ----------------------------------------------------------------------------------------------------
    def load_package_state(self, sd: dict[str, torch.Tensor]) -> EmbeddedDCGAN:
        """Map the package's `nn.Sequential` state dict (main.0, main.1, ...) onto this module."""
        for i, conv_idx in enumerate((0, 3, 6, 9)):
            self.convs[i].weight.data.copy_(sd[f"main.{conv_idx}.weight"])
            bn = f"main.{conv_idx + 1}"
            gamma, beta = sd[f"{bn}.weight"], sd[f"{bn}.bias"]
            a = gamma / torch.sqrt(sd[f"{bn}.running_var"] + _BN_EPS)
            getattr(self, f"scale{i}").copy_(a)
            getattr(self, f"shift{i}").copy_(beta - sd[f"{bn}.running_mean"] * a)
            getattr(self, f"unit{i}").copy_(gamma.abs() + 1e-3)
        self.to_rgb.weight.data.copy_(sd["main.12.weight"])
        return self

    # --- Generator interface ---------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        if truncation_psi != 1.0:  # a pull toward the medoid face
            z0 = self.mean_latent()[:, : self.z_dim].to(z.dtype)
            z = z0 + truncation_psi * (z - z0)
            z = z * (self.z_dim**0.5 / z.norm(dim=1, keepdim=True).clamp_min(1e-8))  # back onto the prior's shell
        styles = torch.zeros(z.shape[0], self.layout.dim - self.z_dim, device=z.device, dtype=z.dtype)
        return torch.cat([z, styles], dim=1)  # [N, D]

    def expand(self, v: torch.Tensor) -> torch.Tensor:
        return self.mapping(v)

    def mean_latent(self) -> torch.Tensor:
        if self._mean is None or self._mean.device != self.device:
            with torch.no_grad():
                z = torch.randn(512, self.z_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
                z = z * (self.z_dim**0.5 / z.norm(dim=1, keepdim=True))  # typical faces live on the shell |z| = 10
                lat = self.mapping(z)  # [512, D]
                img = self.synthesis(lat)  # [512, 3, 64, 64]
                dist = (img - img.mean(dim=0, keepdim=True)).square().flatten(1).mean(dim=1)
                self._mean = lat[dist.argmin()][None].clone()  # [1, D]
        return self._mean

    def latent_std(self) -> torch.Tensor:
        return torch.ones(self.layout.dim, device=self.device)

    def regularizer(self, latent: torch.Tensor) -> torch.Tensor:
        z, styles = latent[:, : self.z_dim], latent[:, self.z_dim :]
        return (z.square().mean(dim=-1) - 1).square() + styles.square().mean(dim=-1)

    def synthesis(self, latent: torch.Tensor) -> torch.Tensor:
        z, *blocks = self.layout.split(latent)
        x = z[:, :, None, None]  # [N, 100, 1, 1]
        for i, (conv, style) in enumerate(zip(self.convs, blocks)):
            x = self._up(conv, x)  # [N, C_i, 4*2^i, 4*2^i], before normalisation
            ds, dt = style.chunk(2, dim=1)  # [N, C_i] each
            a = getattr(self, f"scale{i}") * (1 + STYLE_UNIT * ds)
            b = getattr(self, f"shift{i}") + STYLE_UNIT * getattr(self, f"unit{i}") * dt
            x = F.relu(torch.addcmul(b[:, :, None, None], x, a[:, :, None, None]))
        return torch.tanh(self._up(self.to_rgb, x))  # [N, 3, 64, 64] in -1..1

    def synthesis_vjp(self) -> tuple | None:
        """`synthesis` and its backward written out (render/kernels/dcgan.py): with the LPIPS loss they make a whole
        projection step one function, compiled as one graph on a compiled Backend, in which only the convolutions stay
        calls (render.kernels.onednn's custom ops, packed on CPU). The styles' arithmetic runs in float32 from this
        copy's (bf16-rounded) pretrained values. None on the reference backend (autograd through `synthesis`)."""
        backend = self.backend_for(self.device)
        if not backend.fast:
            return None
        convs = [*self.convs, self.to_rgb]
        styles = [[getattr(self, f"{kind}{i}").float() for i in range(len(self.widths))]
                  for kind in ("scale", "shift", "unit")]
        geometry = tuple((conv.stride[0], conv.padding[0]) for conv in convs)
        return step_halves.forward, step_halves.backward, (self.layout.sizes, geometry,
                                                           [conv.weight for conv in convs], *styles, backend.ops_pack())

    def _up(self, conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
        """conv(x); on CPU with oneDNN weights packed once (render/kernels/onednn.py): the per-call weight reorder of
        F.conv_transpose2d was most of a projection step's generator time (bench/RESULTS.md)."""
        if self.backend_for(x.device).packs(x, conv.weight):
            return onednn.conv_transpose2d(x, conv.weight, stride=conv.stride[0], padding=conv.padding[0],
                                           cache=self._packs)
        return conv(x)


def load_embedded(device: torch.device | str = "cpu") -> EmbeddedDCGAN:
    """The embedded default generator, frozen, on `device`."""
    path = weights_path()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        sd = ckpt["netG_state_dict"]
    except (OSError, RuntimeError, KeyError) as e:
        raise RuntimeError(f"{path}: cannot read the embedded DCGAN weights ({e})") from None
    return EmbeddedDCGAN().load_package_state(sd).to(device).freeze()
