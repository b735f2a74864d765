"""StyleGAN3 (config T and R) in pure PyTorch, matching NVIDIA's `training/networks_stylegan3.py` layouts.

    G = StyleGAN3(ARCHS["stylegan3-t-256"])                  # random weights (benchmarks, tests)
    G = from_nvidia(init_kwargs, state_dict)                 # weights unpickled by render/models/loading/
    ws = G.mapping(z, truncation_psi=0.7)                    # z [N, z_dim] -> [N, num_ws * w_dim]
    img = G.synthesis(ws)                                    # [N, 3, R, R], about -1..1

The synthesis network ("Alias-Free Generative Adversarial Networks", Karras et al. 2021): Fourier features with a
learned rotation/translation (`SynthesisInput`), then `num_layers` modulated convolutions, each followed by a
filtered leaky ReLU that up-samples, applies the non-linearity and low-pass filters back down
(`render/kernels/stylegan3.py`), then a 1x1 ToRGB layer. Config T uses 3x3 convolutions and separable Kaiser
filters; config R uses 1x1 convolutions and radially symmetric (jinc) down-sampling filters. StyleGAN3 has no
per-pixel noise, so the output is deterministic (what NVIDIA's `noise_mode='const'` gives).

num_ws = num_layers + 2: w0 drives the input's transform, w1..w{num_layers} the layers, the last one ToRGB.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from render.models.base import Generator, LatentLayout
from render.kernels.backend import Backend
from render.kernels.stylegan3 import filtered_lrelu, filtered_lrelu_ref, lowpass_filter


@dataclass(frozen=True)
class StyleGAN3Arch:
    """Everything that shapes a StyleGAN3 network (NVIDIA's constructor arguments, under the same names)."""

    resolution: int = 256
    z_dim: int = 512
    w_dim: int = 512
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14  # layers between the Fourier features and ToRGB
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2.0
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3  # 3: config T, 1: config R
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False  # True: config R
    conv_clamp: float | None = 256

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    @property
    def num_values(self) -> int:
        """About how many numbers the network holds (a little more, never much less): what a loader checks before
        building a network a file describes."""
        channels = input_spec(self)[0]
        n = self.mapping_layers * max(self.z_dim, self.w_dim) * self.w_dim + channels * channels
        for spec in layer_specs(self):
            n += spec.in_channels * (spec.out_channels * spec.conv_kernel**2 + self.w_dim)
            n += spec.up_taps + spec.down_taps**2  # the filters (a radial one is square)
        return n


ARCHS: dict[str, StyleGAN3Arch] = {  # NVIDIA's published configurations (stylegan3-{t,r}-ffhqu-256x256.pkl)
    "stylegan3-t-256": StyleGAN3Arch(resolution=256, channel_base=32768, channel_max=512),
    "stylegan3-r-256": StyleGAN3Arch(resolution=256, channel_base=65536, channel_max=1024, conv_kernel=1,
                                     use_radial_filters=True),
}


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer's sizes, sampling rates, filters and padding (derived from the arch, never stored)."""

    name: str  # NVIDIA's attribute name, e.g. "L3_52_512"
    is_torgb: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    conv_kernel: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    up_cutoff: float
    up_width: float
    down_cutoff: float
    down_width: float
    tmp_sampling_rate: float
    down_radial: bool
    padding: tuple[int, int, int, int]  # x0, x1, y0, y1 around the up-sampled image


def input_spec(arch: StyleGAN3Arch) -> tuple[int, int, float, float]:
    """(channels, size, sampling_rate, bandwidth) of the Fourier-feature input."""
    return _geometry(arch)[0]


def layer_specs(arch: StyleGAN3Arch) -> list[LayerSpec]:
    """The num_layers + 1 synthesis layers (the last is ToRGB), following the paper's cutoff schedule."""
    return _geometry(arch)[1]


def _geometry(arch: StyleGAN3Arch):
    n, res = arch.num_layers, arch.resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * arch.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - arch.num_critical), 1)
    cutoffs = arch.first_cutoff * (last_cutoff / arch.first_cutoff) ** exponents  # f_c per layer
    stopbands = arch.first_stopband * (last_stopband / arch.first_stopband) ** exponents  # f_t per layer
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))  # s per layer
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs  # f_h per layer
    sizes = rates + arch.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((arch.channel_base / 2) / cutoffs, arch.channel_max))
    channels[-1] = arch.img_channels

    specs = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == n
        in_rate, out_rate = int(rates[prev]), int(rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else arch.lrelu_upsampling)
        up, down = int(np.rint(tmp_rate / in_rate)), int(np.rint(tmp_rate / out_rate))
        up_taps = arch.filter_size * up if up > 1 and not is_torgb else 1
        down_taps = arch.filter_size * down if down > 1 and not is_torgb else 1
        kernel = 1 if is_torgb else arch.conv_kernel
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2  # symmetric sample positions (paper, appendix C.3)
        pad_hi = pad_total - pad_lo
        specs.append(LayerSpec(
            name=f"L{idx}_{out_size}_{int(channels[idx])}", is_torgb=is_torgb,
            in_channels=int(channels[prev]), out_channels=int(channels[idx]), in_size=in_size, out_size=out_size,
            conv_kernel=kernel, up=up, down=down, up_taps=up_taps, down_taps=down_taps,
            up_cutoff=float(cutoffs[prev]), up_width=float(half_widths[prev] * 2),
            down_cutoff=float(cutoffs[idx]), down_width=float(half_widths[idx] * 2), tmp_sampling_rate=tmp_rate,
            down_radial=arch.use_radial_filters and idx < n - arch.num_critical,
            padding=(pad_lo, pad_hi, pad_lo, pad_hi)))
    first = (int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]))
    return first, specs


# --- modules -----------------------------------------------------------------------------------------------------


class FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer: y = x @ (weight * lr/sqrt(in)).T + bias * lr, optional lrelu*sqrt(2)."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False, lr_multiplier: float = 1.0,
                 bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.as_tensor(np.broadcast_to(bias_init, [out_features]) / lr_multiplier,
                                                 dtype=torch.float32))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_gain
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, (self.weight * self.weight_gain).t())
        x = x.matmul((self.weight * self.weight_gain).t()) + b
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class MappingNetwork(nn.Module):
    """z [N, z_dim] -> w [N, w_dim]: normalise z, `mapping_layers` lrelu layers. `w_avg` is the tracked mean w."""

    def __init__(self, arch: StyleGAN3Arch):
        super().__init__()
        dims = [arch.z_dim] + [arch.w_dim] * arch.mapping_layers
        self.fcs = nn.ModuleList(FullyConnected(i, o, lrelu=True, lr_multiplier=arch.mapping_lr_multiplier)
                                 for i, o in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(arch.w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.to(self.fcs[0].weight.dtype)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for fc in self.fcs:
            x = fc(x)
        return x  # [N, w_dim]


class SynthesisInput(nn.Module):
    """Fourier features on a `size`^2 grid, rotated and translated by an affine function of w0."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.size, self.sampling_rate, self.bandwidth = size, sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth  # uniform-ish on a disc
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4, bias_init=[1, 0, 0, 0])
        nn.init.zeros_(self.affine.weight)
        self.register_buffer("transform", torch.eye(3))  # user-specified inverse transform of the image
        self.register_buffer("freqs", freqs)  # [C, 2]
        self.register_buffer("phases", torch.rand(channels) - 0.5)  # [C]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n, dtype = w.shape[0], w.dtype
        w = w.to(self.freqs.dtype)  # float32 even in a bf16 compute copy: phases of sines need the precision
        t = self.affine(w)  # [N, 4] = (cos, sin, tx, ty) up to scale
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        m_r = torch.eye(3, device=w.device).repeat(n, 1, 1)  # inverse rotation
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = torch.eye(3, device=w.device).repeat(n, 1, 1)  # inverse translation
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)  # [N, 3, 3]

        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ transforms[:, :2, :2]  # [N, C, 2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)  # [1,H,W,2]
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N,H,W,C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (np.pi * 2)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.weight.shape[0])).t()
        return x.permute(0, 3, 1, 2).to(dtype)  # [N, C, size, size]


class SynthesisLayer(nn.Module):
    """Modulated convolution, then bias + filtered leaky ReLU (up-sample, lrelu, clamp, low-pass, down-sample)."""

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None):
        super().__init__()
        self.spec, self.conv_clamp = spec, conv_clamp
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, spec.conv_kernel, spec.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        up = lowpass_filter(spec.up_taps, spec.up_cutoff, spec.up_width, spec.tmp_sampling_rate)
        down = lowpass_filter(spec.down_taps, spec.down_cutoff, spec.down_width, spec.tmp_sampling_rate,
                              radial=spec.down_radial)
        self.register_buffer("up_filter", up)  # None (identity) is not registered in the state dict
        self.register_buffer("down_filter", down)

    def forward(self, x: torch.Tensor, w: torch.Tensor, backend: Backend) -> torch.Tensor:
        spec = self.spec
        styles = self.affine(w)  # [N, I]
        input_gain = self.magnitude_ema.rsqrt()
        weight = self.weight
        if spec.is_torgb:
            styles = styles * (1 / np.sqrt(spec.in_channels * spec.conv_kernel ** 2))
            x = F.conv2d(x * (styles * input_gain)[:, :, None, None], weight)
        else:
            # Demodulated conv as conv(x * s) * d: the weight stays shared, so autograd never needs its gradient.
            weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
            styles = styles * styles.square().mean(1, keepdim=True).rsqrt()
            dcoefs = (styles.square() @ weight.square().sum([2, 3]).t() + 1e-8).rsqrt()  # [N, O]
            x = F.conv2d(x * (styles * input_gain)[:, :, None, None], weight, padding=spec.conv_kernel - 1)
        act = dict(gain=1 if spec.is_torgb else math.sqrt(2), slope=1 if spec.is_torgb else 0.2, clamp=self.conv_clamp)
        if not backend.fast:  # the literal filtered leaky ReLU (render/kernels/stylegan3.py)
            x = x if spec.is_torgb else x * dcoefs[:, :, None, None]
            return filtered_lrelu_ref(x, self.up_filter, self.down_filter, self.bias, spec.up, spec.down,
                                      spec.padding, **act)
        if spec.is_torgb:
            x = x + self.bias[None, :, None, None]
        else:
            x = torch.addcmul(self.bias[None, :, None, None], x, dcoefs[:, :, None, None])  # one pass: x * d + b
        return filtered_lrelu(x, self.up_filter, self.down_filter, None, spec.up, spec.down, spec.padding, **act)


class StyleGAN3(Generator):
    """StyleGAN3 T/R behind the generator interface; latent = num_ws copies of w, flattened (w0..w{num_ws-1})."""

    float32_modules = ("input",)  # Fourier features: sines of large phases

    def __init__(self, arch: StyleGAN3Arch, name: str = "stylegan3"):
        super().__init__()
        if arch.num_layers <= arch.num_critical:
            raise ValueError(f"StyleGAN3Arch: num_layers ({arch.num_layers}) must exceed num_critical")
        self.arch, self.name = arch, name
        self.resolution, self.z_dim, self.w_dim, self.num_ws = arch.resolution, arch.z_dim, arch.w_dim, arch.num_ws
        self.layout = LatentLayout(tuple(f"w{i}" for i in range(self.num_ws)), (arch.w_dim,) * self.num_ws)
        self.mapping_net = MappingNetwork(arch)
        channels, size, rate, bandwidth = input_spec(arch)
        self.input = SynthesisInput(arch.w_dim, channels, size, rate, bandwidth)
        self.layers = nn.ModuleList(SynthesisLayer(arch.w_dim, spec, arch.conv_clamp) for spec in layer_specs(arch))
        self._w_std: torch.Tensor | None = None
        self.freeze()

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        w = self.mapping_net(z)  # [N, w_dim]
        if truncation_psi != 1:
            w = self.mapping_net.w_avg.lerp(w, truncation_psi)
        return self.expand(w)

    def synthesis(self, latent: torch.Tensor) -> torch.Tensor:
        ws = latent.to(self.weight_dtype()).reshape(-1, self.num_ws, self.w_dim).unbind(1)
        x = self.input(ws[0])
        backend = self.backend_for(x.device)
        for layer, w in zip(self.layers, ws[1:]):
            x = layer(x, w, backend)
        return (x * self.arch.output_scale).contiguous()  # [N, 3, R, R], about -1..1 (not clamped, like NVIDIA's)

    def mean_latent(self) -> torch.Tensor:
        return self.expand(self.mapping_net.w_avg.unsqueeze(0))

    def expand(self, v: torch.Tensor) -> torch.Tensor:
        return v.repeat(1, self.num_ws)  # [N, w_dim] -> [N, num_ws * w_dim]

    def latent_std(self) -> torch.Tensor:
        """Per-entry spread of w, measured once from 2000 mapped z (base class method) and cached."""
        if self._w_std is None or self._w_std.device != self.device:
            self._w_std = super().latent_std()
        return self._w_std

    def regularizer(self, latent: torch.Tensor) -> torch.Tensor:
        """Squared distance from w_avg in units of w's spread, averaged over layers and entries: [N]."""
        d = (latent - self.mean_latent()) / self.latent_std()
        return d.square().mean(dim=-1)

    def describe(self) -> dict:
        cfg = "R" if self.arch.use_radial_filters else "T"
        return {**super().describe(), "architecture": f"StyleGAN3-{cfg}", "arch": dataclasses.asdict(self.arch)}


# --- NVIDIA checkpoints ------------------------------------------------------------------------------------------

_MAPPING_KEYS = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier"}
_IGNORED_KEYS = {"w_avg_beta", "magnitude_ema_beta", "num_fp16_res", "use_fp16", "class_name"}


def arch_from_nvidia(init_kwargs: dict) -> StyleGAN3Arch:
    """NVIDIA's `training.networks_stylegan3.Generator` constructor kwargs -> StyleGAN3Arch."""
    kwargs = dict(init_kwargs)
    if kwargs.pop("c_dim", 0):
        raise ValueError("StyleGAN3 checkpoint: class-conditional (c_dim > 0); only unconditional models are supported")
    out = {"resolution": kwargs.pop("img_resolution")}
    for key, value in dict(kwargs.pop("mapping_kwargs", None) or {}).items():
        if key in _MAPPING_KEYS:
            out[_MAPPING_KEYS[key]] = value
        elif key not in _IGNORED_KEYS:
            raise ValueError(f"StyleGAN3 checkpoint: unsupported mapping_kwargs key {key!r}")
    fields = {f.name for f in dataclasses.fields(StyleGAN3Arch)}
    for key, value in kwargs.items():
        if key in fields:
            out[key] = value
        elif key not in _IGNORED_KEYS:
            raise ValueError(f"StyleGAN3 checkpoint: unsupported constructor argument {key!r}")
    return StyleGAN3Arch(**out)


def nvidia_key(key: str, arch: StyleGAN3Arch) -> str:
    """Our state-dict key -> NVIDIA's G_ema key: 'layers.3.affine.weight' -> 'synthesis.L3_52_512.affine.weight'."""
    head, _, rest = key.partition(".")
    if head == "mapping_net":
        if rest == "w_avg":
            return "mapping.w_avg"
        _, idx, param = rest.split(".")
        return f"mapping.fc{idx}.{param}"
    if head == "input":
        return f"synthesis.input.{rest}"
    if head == "layers":
        idx, _, param = rest.partition(".")
        return f"synthesis.{layer_specs(arch)[int(idx)].name}.{param}"
    raise KeyError(key)


def from_nvidia(init_kwargs: dict, state_dict: dict[str, torch.Tensor], name: str = "stylegan3") -> StyleGAN3:
    """Build a StyleGAN3 from NVIDIA's Generator constructor kwargs and its G_ema state dict (NVIDIA's key names).

    Every tensor of ours must be present with the right shape; extra keys (e.g. mapping.embed of a conditional
    model, already refused above) are errors too, so a mismatched checkpoint fails loudly.
    """
    arch = arch_from_nvidia(init_kwargs)
    G = StyleGAN3(arch, name=name)
    ours = G.state_dict()
    mapped = {}
    for key, tensor in ours.items():
        src = nvidia_key(key, arch)
        if src not in state_dict:
            raise ValueError(f"StyleGAN3 checkpoint: missing tensor {src!r}")
        value = torch.as_tensor(state_dict[src])
        if value.shape != tensor.shape:
            raise ValueError(f"StyleGAN3 checkpoint: {src!r} has shape {list(value.shape)}, "
                             f"expected {list(tensor.shape)}")
        mapped[key] = value.to(torch.float32)
    extra = set(state_dict) - {nvidia_key(k, arch) for k in ours}
    if extra:
        raise ValueError(f"StyleGAN3 checkpoint: unexpected tensors {sorted(extra)[:3]}")
    G.load_state_dict(mapped)
    return G.freeze()
