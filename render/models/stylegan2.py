"""StyleGAN2 (config-f / ADA layouts) in plain PyTorch: the reference path, and the hooks of its fast half.

Parameter names follow the layout of NVIDIA's stylegan2-ada-pytorch / stylegan3 pickles (`mapping.fc0.weight`,
`synthesis.b64.conv0.affine.bias`, ...), with the two top modules renamed to `mapping_network` and
`synthesis_network` so that `G.mapping()` / `G.synthesis()` stay the methods of the generator interface.

    G = StyleGAN2(StyleGAN2Arch(resolution=256, channel_base=16384)).freeze()
    ws = G.mapping(z, truncation_psi=0.7)     # [N, num_ws * w_dim]
    img = G.synthesis(ws)                     # [N, 3, 256, 256] in about -1..1, constant noise

Two execution paths compute the same function, chosen by `G.backend` (render.kernels.backend):
- reference (`Backend.REFERENCE`): the per-sample modulated weight, demodulated, applied as one grouped convolution;
  up-sampling is a transposed convolution followed by the 4x4 FIR blur (zero insertion + depthwise convolution).
- fast (`Backend.EAGER` / `COMPILED`): render/kernels/stylegan2.py's modulated convolution without a weight
  gradient, one-pass epilogue and packed blur, channels last; demodulation is a [N, I] x [I, O] matmul on the cached
  squared weight, noise + bias is cached per layer, and the ToRGB skip up-sampling is one depthwise transposed
  convolution. It applies to frozen layers only (a layer being trained takes the reference path).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


from render.kernels.backend import Backend
from render.kernels.stylegan2 import Blur, DemodBiasAct, Frozen, ModulatedConv, upsample2d_fast
from render.models.base import Generator, LatentLayout

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGAN2Arch:
    """Everything needed to build the network; saved beside the weights in `*.uncanny.pt` files."""

    resolution: int = 1024
    z_dim: int = 512
    w_dim: int = 512
    img_channels: int = 3
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    architecture: str = "skip"  # skip | orig | resnet
    conv_clamp: float | None = 256.0  # clamp of every conv output, None = off (rosinality and TF pickles)
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)
    use_noise: bool = True
    name: str = "stylegan2"

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"StyleGAN2 resolution must be a power of two >= 4, not {r}")
        if self.architecture not in ("skip", "orig", "resnet"):
            raise ValueError(f"StyleGAN2 architecture must be skip, orig or resnet, not {self.architecture!r}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * len(self.block_resolutions)  # 1 conv at 4 px + 2 per later block + the last ToRGB

    @property
    def num_values(self) -> int:
        """About how many numbers the network holds (a little more, never much less): what a loader checks before
        building a network a file describes."""
        w = self.w_dim
        n = self.mapping_layers * max(self.z_dim, w) * w
        for r in self.block_resolutions:
            c_in, c = self.channels(max(r // 2, 4)), self.channels(r)
            n += (c_in + c) * (9 * c + w) + c_in * c + w * c + 2 * r * r  # conv0, conv1, skip, torgb, noise
        return n

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resample_filter"] = list(self.resample_filter)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StyleGAN2Arch:
        d = dict(d)
        d["resample_filter"] = tuple(d.get("resample_filter", (1, 3, 3, 1)))
        return cls(**d)


# --- pure functions ----------------------------------------------------------------------------------------------


def setup_filter(taps) -> torch.Tensor:
    """1-D taps -> normalised separable 2-D FIR filter [k, k] (sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def upsample2d_ref(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """2x up-sampling by zero insertion, padding `pad` (before, after) and a depthwise FIR with gain 4."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, 1, 0, 0, 0, 1]).reshape(n, c, 2 * h, 2 * w)  # [N, C, 2H, 2W], zeros between samples
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = (f * 4).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def bias_act(x: torch.Tensor, b: torch.Tensor, act: bool, gain: float, clamp: float | None) -> torch.Tensor:
    """x + b, leaky ReLU (0.2) when `act`, times gain, clamped to +-clamp."""
    x = x + b.reshape(1, -1, 1, 1)
    if act:
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv_ref(x, weight, styles, *, demodulate: bool, up: bool, f: torch.Tensor) -> torch.Tensor:
    """Reference modulated convolution: x [N, I, H, W], weight [O, I, k, k], styles [N, I] -> [N, O, H', W']."""
    n, i, h, w_ = x.shape
    o, _, kh, kw = weight.shape
    wgt = weight[None] * styles.reshape(n, 1, i, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        wgt = wgt * (wgt.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, o, 1, 1, 1)
    x = x.reshape(1, n * i, h, w_)
    if up:
        wgt = wgt.transpose(1, 2).reshape(n * i, o, kh, kw)
        x = F.conv_transpose2d(x, wgt, stride=2, groups=n)  # [1, N*O, 2H+1, 2W+1]
        x = upsample_blur_ref(x, f)
    else:
        x = F.conv2d(x, wgt.reshape(n * o, i, kh, kw), padding=kh // 2, groups=n)
    return x.reshape(n, o, *x.shape[2:])


def upsample_blur_ref(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The FIR blur (gain 4, pad 1) that follows a stride-2 transposed 3x3 conv: [.., 2H+1] -> [.., 2H]."""
    c = x.shape[1]
    x = F.pad(x, [1, 1, 1, 1])
    k = (f * 4).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


# --- modules -----------------------------------------------------------------------------------------------------


class FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer (weight stored / lr_multiplier), optional leaky ReLU * sqrt(2)."""

    def __init__(self, in_features: int, out_features: int, *, act: bool, lr_multiplier: float = 1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.act else x


class MappingNetwork(nn.Module):
    def __init__(self, arch: StyleGAN2Arch):
        super().__init__()
        self.num_layers = arch.mapping_layers
        dims = [arch.z_dim] + [arch.w_dim] * arch.mapping_layers
        for idx in range(arch.mapping_layers):
            layer = FullyConnected(dims[idx], dims[idx + 1], act=True, lr_multiplier=arch.mapping_lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros(arch.w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # [N, z_dim] normalised 2nd moment
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x  # w [N, w_dim]


class _CachingLayer(nn.Module):
    """A layer whose fast path caches tensors derived from its frozen parameters in `_cache`: a conversion (`.to()`,
    the bf16 `Generator.compute_copy`) drops them with the old parameters."""

    _cache: tuple | None = None

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def _cached(self, tensors: list[torch.Tensor], make, *extra):
        """make(), made again only when one of `tensors` (or `extra`) changes (load_state_dict, in-place edits)."""
        key = (*extra, *[(t._version, t.data_ptr(), t.device) for t in tensors])
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, make())
        return self._cache[1]


class SynthesisLayer(_CachingLayer):
    """Modulated 3x3 conv (optionally 2x up), constant noise, bias, leaky ReLU, clamp."""

    def __init__(self, in_ch: int, out_ch: int, arch: StyleGAN2Arch, resolution: int, up: bool):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, arch.conv_clamp
        self.affine = FullyConnected(arch.w_dim, in_ch, act=False, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.use_noise = arch.use_noise
        if arch.use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", setup_filter(arch.resample_filter), persistent=False)

    def _frozen(self) -> Frozen:
        """The fast path's precomputed tensors, cached until any parameter changes (load_state_dict, .to(device))."""
        tensors = [self.weight, self.bias] + ([self.noise_const, self.noise_strength] if self.use_noise else [])
        return self._cached(tensors, self._make_frozen)

    def _make_frozen(self) -> Frozen:
        w = self.weight.detach()
        shift = self.bias.detach()[:, None, None]
        if self.use_noise:
            shift = shift + self.noise_const * self.noise_strength.detach()
        shift = shift[None].contiguous(memory_format=torch.channels_last)  # [1, O, H, W]
        return Frozen(w, self.up, shift, self.resample_filter if self.up else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor, backend: Backend, gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)  # [N, I]
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if not backend.fast or any(p.requires_grad for p in self.parameters(recurse=False)):  # fast: frozen only
            x = modulated_conv_ref(x, self.weight, styles, demodulate=True, up=self.up, f=self.resample_filter)
            if self.use_noise:
                x = x + self.noise_const * self.noise_strength  # constant noise [H, W]
            return bias_act(x, self.bias, True, SQRT2 * gain, clamp)
        frozen = self._frozen()
        dcoefs = (styles.square() @ frozen.wsq + 1e-8).rsqrt()  # [N, O] demodulation
        x = ModulatedConv.apply(x, styles, frozen, backend)  # [N, O, H, W] or [N, O, 2H+1, 2W+1]
        if self.up:
            x = Blur.apply(x, frozen, backend)  # [N, O, 2H, 2W]
        # (conv * demodulation + noise + bias) * gain as one pass (lrelu(g x) = g lrelu(x) for g > 0), then the leaky
        # ReLU and clamp keeping only their output for backward, and skipping the clamp when nothing reaches it.
        k = SQRT2 * gain
        return DemodBiasAct.apply(x, dcoefs * k, frozen.scaled_shift(k), clamp, backend.compiled)


class ToRGBLayer(_CachingLayer):
    def __init__(self, in_ch: int, arch: StyleGAN2Arch):
        super().__init__()
        self.conv_clamp = arch.conv_clamp
        self.affine = FullyConnected(arch.w_dim, in_ch, act=False, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(arch.img_channels, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(arch.img_channels))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, backend: Backend) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # [N, I]
        if backend.fast and not self.weight.requires_grad:
            frozen = self._cached([self.weight], lambda: Frozen(self.weight.detach(), up=False))
            x = ModulatedConv.apply(x, styles, frozen, backend)  # [N, C, H, W]
        else:
            x = modulated_conv_ref(x, self.weight, styles, demodulate=False, up=False, f=None)
        return bias_act(x, self.bias, False, 1.0, self.conv_clamp)


class SynthesisBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, arch: StyleGAN2Arch, resolution: int):
        super().__init__()
        self.in_ch, self.resolution, self.architecture = in_ch, resolution, arch.architecture
        self.is_last = resolution == arch.resolution
        if in_ch == 0:
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, arch, resolution, up=True)
        self.conv1 = SynthesisLayer(out_ch, out_ch, arch, resolution, up=False)
        self.has_torgb = self.is_last or arch.architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_ch, arch)
        if in_ch != 0 and arch.architecture == "resnet":
            self.skip = nn.Module()
            self.skip.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.num_conv = 1 if in_ch == 0 else 2
        self.register_buffer("resample_filter", setup_filter(arch.resample_filter), persistent=False)

    def forward(self, x, img, ws: list[torch.Tensor], backend: Backend):
        """ws: the num_conv + has_torgb w vectors [N, w_dim] of this block."""
        f = self.resample_filter
        if self.in_ch == 0:
            x = self.const[None].expand(ws[0].shape[0], -1, -1, -1)
            if backend.fast:  # the fast path runs channels last (ModulatedConv)
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, ws[0], backend)
        elif self.architecture == "resnet":
            y = F.conv2d(x, self.skip.weight * (1 / math.sqrt(self.in_ch)))
            y = (upsample2d_fast(y, f) if backend.fast else upsample2d_ref(y, f, (2, 1))) * math.sqrt(0.5)
            x = self.conv0(x, ws[0], backend)
            x = y + self.conv1(x, ws[1], backend, gain=math.sqrt(0.5))
        else:
            x = self.conv1(self.conv0(x, ws[0], backend), ws[1], backend)
        if img is not None and self.architecture == "skip":
            img = upsample2d_fast(img, f) if backend.fast else upsample2d_ref(img, f, (2, 1))
        if self.has_torgb:
            y = self.torgb(x, ws[self.num_conv], backend)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, arch: StyleGAN2Arch):
        super().__init__()
        self.block_resolutions = arch.block_resolutions
        for res in self.block_resolutions:
            in_ch = arch.channels(res // 2) if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_ch, arch.channels(res), arch, res))

    def forward(self, ws: torch.Tensor, backend: Backend) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> img [N, C, R, R]."""
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            n = block.num_conv + int(block.has_torgb)
            x, img = block(x, img, list(ws[:, w_idx : w_idx + n].unbind(1)), backend)
            w_idx += block.num_conv
        return img


class StyleGAN2(Generator):
    """The generator interface over StyleGAN2: the flat latent is ws, `num_ws` copies of w (`w0..w{num_ws-1}`)."""

    def __init__(self, arch: StyleGAN2Arch):
        super().__init__()
        self.arch = arch
        self.resolution, self.z_dim, self.w_dim, self.num_ws = arch.resolution, arch.z_dim, arch.w_dim, arch.num_ws
        self.name = arch.name
        self.layout = LatentLayout(tuple(f"w{i}" for i in range(self.num_ws)), (arch.w_dim,) * self.num_ws)
        self.mapping_network = MappingNetwork(arch)
        self.synthesis_network = SynthesisNetwork(arch)
        self._latent_std: torch.Tensor | None = None

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        w = self.mapping_network(z.to(self.weight_dtype()))  # [N, w_dim]
        if truncation_psi != 1:
            w = self.mapping_network.w_avg.lerp(w, truncation_psi)
        return self.expand(w)

    def synthesis(self, latent: torch.Tensor) -> torch.Tensor:
        ws = latent.to(self.weight_dtype()).reshape(-1, self.num_ws, self.w_dim)  # [N, num_ws, w_dim]
        return self.synthesis_network(ws, self.backend_for(ws.device))  # [N, C, R, R]

    def mean_latent(self) -> torch.Tensor:
        return self.expand(self.mapping_network.w_avg[None])  # [1, D]

    def expand(self, v: torch.Tensor) -> torch.Tensor:
        return v[:, None, :].expand(-1, self.num_ws, -1).reshape(v.shape[0], -1)  # [N, num_ws * w_dim]

    def latent_std(self) -> torch.Tensor:
        """Spread of w per entry (from 2000 mapped z, computed once and kept), broadcast to every layer."""
        if self._latent_std is None or self._latent_std.device != self.device:
            self._latent_std = super().latent_std()
        return self._latent_std

    def describe(self) -> dict:
        d = super().describe()
        d.update(architecture=f"StyleGAN2 ({self.arch.architecture})", w_dim=self.w_dim, num_ws=self.num_ws,
                 channels=f"{self.arch.channels(4)}@4 .. {self.arch.channels(self.resolution)}@{self.resolution}",
                 conv_clamp=self.arch.conv_clamp)
        return d


PRESETS: dict[str, StyleGAN2Arch] = {
    "stylegan2-256": StyleGAN2Arch(resolution=256, channel_base=16384, name="stylegan2-256"),  # ADA paper256
    "stylegan2-512": StyleGAN2Arch(resolution=512, channel_base=32768, name="stylegan2-512"),
    "stylegan2-1024": StyleGAN2Arch(resolution=1024, channel_base=32768, name="stylegan2-1024"),  # config-f
}
