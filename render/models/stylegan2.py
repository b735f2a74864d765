"""StyleGAN2 (config-f / ADA layouts) in plain PyTorch, with a reference path and a measured fast path.

Parameter names follow the layout of NVIDIA's stylegan2-ada-pytorch / stylegan3 pickles (`mapping.fc0.weight`,
`synthesis.b64.conv0.affine.bias`, ...), with the two top modules renamed to `mapping_network` and
`synthesis_network` so that `G.mapping()` / `G.synthesis()` stay the methods of the generator interface.

    G = StyleGAN2(StyleGAN2Arch(resolution=256, channel_base=16384)).freeze()
    ws = G.mapping(z, truncation_psi=0.7)     # [N, num_ws * w_dim]
    img = G.synthesis(ws)                     # [N, 3, 256, 256] in about -1..1, constant noise

Two execution paths compute the same function:
- reference (`G.fast = False`): the per-sample modulated weight, demodulated, applied as one grouped convolution;
  up-sampling is a transposed convolution followed by the 4x4 FIR blur (zero insertion + depthwise convolution).
- fast (`G.fast = True`; the default `None` picks it on CPU, where it was measured, and the reference path on CUDA,
  where at batch 1 the two tie at 256 px and the reference is faster at 1024: 0.04 against 0.05 s per step on an
  H100): `ModulatedConv` convolves with the modulated weight but its backward never forms the gradient of that
  weight: one input-gradient convolution with the plain weight gives both the activation gradient and (summed
  against the input) the style gradient. Backward costs
  one convolution per layer instead of two: 60 instead of 90 GFLOP per forward + backward at 256 px. Demodulation is
  a [N, I] x [I, O] matmul on the cached squared weight; noise + bias is cached per layer; the ToRGB skip
  up-sampling is one depthwise transposed convolution. Activations are channels last throughout, and every frozen
  weight is kept in the layout its use wants (`_Frozen`): modulation runs along contiguous memory, the input-gradient
  convolutions and the blur (and its adjoint) use oneDNN weights packed once, and on CPU the modulated convolutions
  call oneDNN directly (F.conv2d / conv_transpose2d copied channels-last maps to contiguous and back, and the
  transposed one was 1.5-2.7x slower). Measured against the same path in NCHW with F.conv*: StyleGAN2-256 step -25 %
  in bf16, -12 % in fp32 (an earlier channels-last attempt that only changed the activations' layout was slower:
  every weight was then reordered per call). Later, each measured by a paired A/B of whole steps:
  - where a map is smaller than its layer's weight (<= 32 px at 256), the input is modulated instead of the weight,
    so the frozen weight stays packed (no per-call weight product and reorder): step -5 %;
  - in bf16 the up-sampling conv runs in polyphase form (`polyphase_up`: one plain conv computes all four output
    phases, then one interleaving copy): oneDNN's bf16 transposed conv ran at a quarter of its plain conv's speed.
    Step -6 % at 256, -18 % at 1024;
  - with `render.kernels.fused` on (config `compile`), each layer's epilogue (demodulation, noise + bias, leaky ReLU, clamp;
    `DemodBiasAct`) and the backward passes of it and of the modulated conv run as compiled single-pass kernels.
  Folding the up-sampling conv and the blur into one 6x6 transposed convolution (`layer.fused_up = True`) gives the
  same images but measured slower on CPU (4x the multiply-adds), so it is off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from render.kernels import fused

from render.kernels import onednn
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


def upsample2d_fast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Same as `upsample2d_ref(x, f, (2, 1))` for a symmetric 4-tap filter, as one depthwise transposed conv."""
    c = x.shape[1]
    k = (f * 4).to(x.dtype)[None, None].repeat(c, 1, 1, 1)  # [C, 1, 4, 4]
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


def up_kernel(weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """[O, I, 3, 3] weight -> [I, O, 6, 6] kernel of conv_transpose(stride 2) followed by the gain-4 FIR blur."""
    o, i, kh, kw = weight.shape
    w = weight.transpose(0, 1).reshape(i * o, 1, kh, kw)
    k = F.conv_transpose2d(w, (f * 4).to(w.dtype)[None, None])  # full convolution: [I*O, 1, 6, 6]
    return k.reshape(i, o, kh + f.shape[0] - 1, kw + f.shape[1] - 1)


_PHASE_TAP = torch.tensor([[2, 0], [3, 1]])  # [output phase, 2x2 tap] -> tap of the 3x3 kernel (3: a zero tap)


def polyphase_kernel(weight: torch.Tensor) -> torch.Tensor:
    """[I, O, 3, 3] kernel of a stride-2 transposed conv -> [4 O, I, 2, 2] kernel of the equivalent plain conv.

    Output row 2m + a of conv_transpose2d(x, w, stride=2) is x[m] w[0] + x[m-1] w[2] for a = 0 and x[m] w[1] for
    a = 1, so each of the four output phases (a, b) is a 2x2 conv of x padded by 1, and the four stack along the
    output channels (phase-major: channel (2a + b) O + o). `polyphase_up` applies it.
    """
    i, o = weight.shape[:2]
    taps = F.pad(weight, (0, 1, 0, 1))[:, :, _PHASE_TAP][..., _PHASE_TAP]  # [I, O, a, dy, b, dx]
    return taps.permute(2, 4, 1, 0, 3, 5).reshape(4 * o, i, 2, 2)


def polyphase_up(x: torch.Tensor, kernel: torch.Tensor, packs: onednn.PackCache | None = None) -> torch.Tensor:
    """conv_transpose2d(x, w, stride=2) through its polyphase kernel (from `polyphase_kernel(w)`): x [N, I, H, W] ->
    [N, O, 2H+1, 2W+1] channels last. One plain oneDNN conv (16 multiply-adds per input pixel and output channel
    instead of 9, but oneDNN runs a plain conv ~4x faster than a transposed one in bf16), then one copy that
    interleaves the phases. With `packs` the kernel is frozen and packed once, else packed for this call."""
    n, _, h, w = x.shape
    o = kernel.shape[0] // 4
    if packs is None:
        z = onednn.conv_unpacked(x, kernel, 1)  # [N, 4 O, H+1, W+1], channels last: memory [N, H+1, W+1, (a, b, o)]
    else:
        z = onednn.conv_forward(x, kernel, None, 1, 1, False, packs)
    out = z.new_empty(n, 2 * h + 2, 2 * w + 2, o)  # NHWC memory; the last row and column come out 0 and are dropped
    out.view(n, h + 1, 2, w + 1, 2, o).copy_(z.permute(0, 2, 3, 1).view(n, h + 1, w + 1, 2, 2, o).transpose(2, 3))
    return out.permute(0, 3, 1, 2)[:, :, : 2 * h + 1, : 2 * w + 1].contiguous(memory_format=torch.channels_last)


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


class ModulatedConv(torch.autograd.Function):
    """conv(x * styles, weight) for a frozen weight, computed as conv(x, weight * styles) (no pass over x).

    x [N, I, H, W], styles [N, I], frozen weight [O, I, 3, 3] -> [N, O, H, W] (or [N, O, 2H+1, 2W+1] transposed,
    stride 2, when `frozen.up`). `frozen` is the layer's _Frozen: the weight laid out for the element-wise modulation
    (channels last, or [I, O, k, k] when up) and a PackCache. Backward computes one input-gradient convolution with
    the plain weight, u (packed on CPU: the weight never changes), then grad_x = u * styles and grad_styles = sum over
    pixels of u * x: no gradient of a modulated weight. The fast path keeps activations channels last throughout (x
    arrives so).
    """

    @staticmethod
    def forward(ctx, x, styles, frozen: _Frozen):
        n, i = styles.shape
        up, w = frozen.up, frozen.weight  # [O, I, k, k] channels last, or [I, O, k, k] contiguous when up
        if onednn.usable(x, w) and x[0].numel() < w.numel():  # CPU, small maps (<= 32 px at 256): modulating the
            # input is one pass over a map smaller than the weight, and the frozen weight stays packed (no per-call
            # weight product and reorder); conv(x * s, w) = conv(x, w * s)
            xs = x * styles[:, :, None, None]
            if up and x.dtype == torch.bfloat16:
                y = polyphase_up(xs, frozen.polyphase(), frozen.packs)
            elif up:
                y = onednn.conv_transpose_forward(xs, w, 2, 0, frozen.packs)
            else:
                y = onednn.conv_forward(xs, frozen.plain, None, 1, w.shape[-1] // 2, False, frozen.packs)
        elif onednn.usable(x, w):  # CPU: each image its own oneDNN conv, channels last (a grouped conv over the batch
            # reshaped channels-last maps to contiguous and ran 40 % slower at batch 8; on CPU batching buys nothing)
            if up and x.dtype == torch.bfloat16:  # oneDNN's bf16 transposed conv: ~4x slower than its plain conv
                poly = frozen.polyphase()
                ys = [polyphase_up(x[j : j + 1], poly * styles[j, None, :, None, None]) for j in range(n)]
            elif up:  # in fp32 the transposed conv measured faster than the polyphase form
                ys = [onednn.conv_transpose_unpacked(x[j : j + 1], w * styles[j, :, None, None, None], 2)
                      for j in range(n)]
            else:
                ys = [onednn.conv_unpacked(x[j : j + 1], w * styles[j, None, :, None, None], w.shape[-1] // 2)
                      for j in range(n)]
            y = ys[0] if n == 1 else torch.cat(ys)
        elif up:
            wgt = w[None] * styles[:, :, None, None, None]  # [N, I, O, k, k]
            y = F.conv_transpose2d(x.reshape(1, n * i, *x.shape[2:]), wgt.reshape(n * i, *w.shape[1:]), stride=2,
                                   groups=n)
        else:
            wgt = w[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
            y = F.conv2d(x.reshape(1, n * i, *x.shape[2:]), wgt.reshape(-1, *w.shape[1:]), padding=w.shape[-1] // 2,
                         groups=n)
        ctx.save_for_backward(x, styles)
        ctx.frozen = frozen
        return y.reshape(n, -1, *y.shape[2:])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, styles = ctx.saved_tensors
        u = ctx.frozen.input_grad(grad, x.shape)  # [N, I, H, W]
        if not ctx.needs_input_grad[1]:
            return u * styles[:, :, None, None], None, None
        if not fused.enabled() and u.dtype == torch.float32 and u.is_contiguous() and x.is_contiguous():
            # eagerly in fp32 NCHW, einsum's bmm is 6x faster than _modulated_grads' product and sum
            return u * styles[:, :, None, None], torch.einsum("nihw,nihw->ni", u, x), None
        return (*_modulated_grads(u, x, styles), None)


@fused.kernel
def _modulated_grads(u: torch.Tensor, x: torch.Tensor, styles: torch.Tensor):
    """ModulatedConv's backward, one pass when compiled: (u * styles, per-channel <u, x>). Eagerly: for channels-last
    maps (einsum would copy both to NCHW) and bf16 (its bmm is 3x slower); the sums accumulate in fp32."""
    return u * styles[:, :, None, None], (u * x).sum((2, 3)).to(styles.dtype)


@fused.kernel
def _demod_bias_act(x: torch.Tensor, coef: torch.Tensor, shift: torch.Tensor, peak: bool):
    """leaky_relu(x * coef + shift, 0.2), and with `peak` its min and max (for DemodBiasAct's clamp check)."""
    y = F.leaky_relu(torch.addcmul(shift, x, coef[:, :, None, None]), 0.2)
    return (y, y.amin(), y.amax()) if peak else (y, None, None)


@fused.kernel
def _demod_bias_act_grads(dy: torch.Tensor, y: torch.Tensor, x: torch.Tensor, coef: torch.Tensor, clamp: float | None):
    g = torch.ops.aten.leaky_relu_backward(dy, y, 0.2, True)  # y < 0 exactly where the pre-activation is
    if clamp is not None:
        g = g.masked_fill(y.abs() >= clamp, 0)
    return g * coef[:, :, None, None], (g * x).sum((2, 3)).to(coef.dtype)


class DemodBiasAct(torch.autograd.Function):
    """A synthesis layer's epilogue on the fast path: clamp(leaky_relu(x * coef + shift, 0.2)), with x the modulated
    conv's output [N, O, H, W], coef [N, O] (demodulation times gain; lrelu(g x) = g lrelu(x) for g > 0) and shift
    [1, O, H, W] (noise + bias, times gain; frozen). Saves x and its output only, skips the clamp when nothing reaches
    it (checked on CPU only: on a GPU the check would wait for the device), and with `render.kernels.fused` enabled runs as
    one compiled pass each way."""

    @staticmethod
    def forward(ctx, x, coef, shift, clamp):
        peak = clamp is not None and x.device.type == "cpu"
        y, lo, hi = _demod_bias_act(x, coef, shift, peak)
        if peak and max(-lo.item(), hi.item()) < clamp:
            clamp = None
        if clamp is not None:
            y.clamp_(-clamp, clamp)
            # the bound as y holds it (bf16 rounds it; a CPU scalar, no device sync): backward masks |y| >= it, which
            # eager bf16 compares in bf16 but a compiled kernel in fp32, which would miss every clamped pixel
            clamp = torch.tensor(clamp, dtype=y.dtype).item()
        ctx.save_for_backward(x, coef, y)
        ctx.clamp = clamp
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, coef, y = ctx.saved_tensors
        grad_x, grad_coef = _demod_bias_act_grads(dy, y, x, coef, ctx.clamp)
        return grad_x, grad_coef, None, None


class _Frozen:
    """What the fast path precomputes from a frozen layer's weights: the weight in the layout its modulation wants,
    packed oneDNN weights for the input gradient, the squared weight for demodulation, noise + bias. Remade whenever
    a parameter changes (SynthesisLayer._frozen)."""

    def __init__(self, weight: torch.Tensor, up: bool, shift: torch.Tensor | None = None,
                 kernel: torch.Tensor | None = None, fir: torch.Tensor | None = None):
        self.plain, self.up = weight, up  # [O, I, k, k]
        if fir is not None:  # the blur after the up-sampling conv, per channel, as upsample_blur_ref: [O, 1, 4, 4]
            taps = (fir * 4).to(weight.dtype)
            self.fir = taps.flip([0, 1])[None, None].repeat(weight.shape[0], 1, 1, 1)
            self.fir_adjoint = taps[None, None].repeat(weight.shape[0], 1, 1, 1)
        if up:  # the transposed conv's [I, O, k, k]: modulating it is a scalar per contiguous [O, k, k] slice
            self.weight = weight.transpose(0, 1).contiguous()
        else:  # channels last, [O, k, k, I] in memory: the styles run along the contiguous axis
            self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.wsq = weight.square().sum(dim=[2, 3]).t().contiguous()  # [I, O]: demodulation
        self.shift = shift  # [1, O, H, W] channels last, like the activations it is added to
        self.kernel = kernel  # the fused 6x6 up kernel, when SynthesisLayer.fused_up
        self.packs = onednn.PackCache()
        self._scaled: dict[float, torch.Tensor] = {}
        self._poly: torch.Tensor | None = None

    def polyphase(self) -> torch.Tensor:
        """The up-sampling conv's weight as `polyphase_up` wants it, made on first use: [4 O, I, 2, 2] channels last."""
        if self._poly is None:
            self._poly = polyphase_kernel(self.weight).contiguous(memory_format=torch.channels_last)
        return self._poly

    def scaled_shift(self, k: float) -> torch.Tensor:
        """shift * k, kept (a layer's gain never changes)."""
        if k not in self._scaled:
            self._scaled[k] = self.shift * k
        return self._scaled[k]

    def blur(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """The up-sampling blur [N, O, 2H+1, 2W+1] -> [N, O, 2H, 2W] (pad 1), or its adjoint (pad 2) back."""
        k, pad = (self.fir_adjoint, 2) if adjoint else (self.fir, 1)
        if onednn.usable(x, k):
            return onednn.conv_forward(x, k, None, 1, pad, False, self.packs, groups=x.shape[1])
        return F.conv2d(x, k, padding=pad, groups=x.shape[1])

    def input_grad(self, grad: torch.Tensor, in_shape) -> torch.Tensor:
        """d conv / d x given grad: the conv2d (stride 2) with [I, O, k, k] when `up`, else the adjoint "same" conv."""
        if onednn.usable(grad, self.plain):
            if self.up:
                return onednn.conv_forward(grad, self.weight, None, 2, 0, False, self.packs)
            return onednn.conv_input_grad(grad, self.plain, 1, self.plain.shape[-1] // 2, in_shape, self.packs)
        if self.up:
            return F.conv2d(grad, self.weight, stride=2)
        return F.conv_transpose2d(grad, self.plain, padding=self.plain.shape[-1] // 2)


def upsample_blur_ref(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The FIR blur (gain 4, pad 1) that follows a stride-2 transposed 3x3 conv: [.., 2H+1] -> [.., 2H]."""
    c = x.shape[1]
    x = F.pad(x, [1, 1, 1, 1])
    k = (f * 4).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


class Blur(torch.autograd.Function):
    """upsample_blur_ref for the fast path: the depthwise FIR as a convolution with its own zero padding (F.pad would
    return a contiguous copy of channels-last activations), and a backward that is the depthwise conv with the
    flipped kernel, packed on CPU (autograd's returned a contiguous gradient, converted back at a cost)."""

    @staticmethod
    def forward(ctx, x, frozen: _Frozen):
        ctx.frozen = frozen
        return frozen.blur(x, adjoint=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return ctx.frozen.blur(grad, adjoint=True), None


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
        self.fused_up = False  # one 6x6 transposed conv instead of 3x3 + blur: same result, measured slower on CPU

    def _frozen(self) -> _Frozen:
        """The fast path's precomputed tensors, cached until any parameter changes (load_state_dict, .to(device))."""
        tensors = [self.weight, self.bias] + ([self.noise_const, self.noise_strength] if self.use_noise else [])
        return self._cached(tensors, self._make_frozen, self.fused_up)

    def _make_frozen(self) -> _Frozen:
        w = self.weight.detach()
        kernel = up_kernel(w, self.resample_filter) if self.up and self.fused_up else None
        shift = self.bias.detach()[:, None, None]
        if self.use_noise:
            shift = shift + self.noise_const * self.noise_strength.detach()
        shift = shift[None].contiguous(memory_format=torch.channels_last)  # [1, O, H, W]
        return _Frozen(w, self.up, shift, kernel, self.resample_filter if self.up else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fast: bool, gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)  # [N, I]
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if not fast or any(p.requires_grad for p in self.parameters(recurse=False)):  # fast: frozen only
            x = modulated_conv_ref(x, self.weight, styles, demodulate=True, up=self.up, f=self.resample_filter)
            if self.use_noise:
                x = x + self.noise_const * self.noise_strength  # constant noise [H, W]
            return bias_act(x, self.bias, True, SQRT2 * gain, clamp)
        frozen = self._frozen()
        dcoefs = (styles.square() @ frozen.wsq + 1e-8).rsqrt()  # [N, O] demodulation
        if self.up and self.fused_up:
            x = F.conv_transpose2d(x * styles[:, :, None, None], frozen.kernel, stride=2, padding=2)  # [N,O,2H,2W]
        else:
            x = ModulatedConv.apply(x, styles, frozen)  # [N, O, H, W] or [N, O, 2H+1, 2W+1]
            if self.up:
                x = Blur.apply(x, frozen)  # [N, O, 2H, 2W]
        # (conv * demodulation + noise + bias) * gain as one pass (lrelu(g x) = g lrelu(x) for g > 0), then the leaky
        # ReLU and clamp keeping only their output for backward, and skipping the clamp when nothing reaches it.
        k = SQRT2 * gain
        return DemodBiasAct.apply(x, dcoefs * k, frozen.scaled_shift(k), clamp)


class ToRGBLayer(_CachingLayer):
    def __init__(self, in_ch: int, arch: StyleGAN2Arch):
        super().__init__()
        self.conv_clamp = arch.conv_clamp
        self.affine = FullyConnected(arch.w_dim, in_ch, act=False, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(arch.img_channels, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(arch.img_channels))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fast: bool) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # [N, I]
        if fast and not self.weight.requires_grad:
            frozen = self._cached([self.weight], lambda: _Frozen(self.weight.detach(), up=False))
            x = ModulatedConv.apply(x, styles, frozen)  # [N, C, H, W]
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

    def forward(self, x, img, ws: list[torch.Tensor], fast: bool):
        """ws: the num_conv + has_torgb w vectors [N, w_dim] of this block."""
        f = self.resample_filter
        if self.in_ch == 0:
            x = self.const[None].expand(ws[0].shape[0], -1, -1, -1)
            if fast:  # the fast path runs channels last (ModulatedConv)
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, ws[0], fast)
        elif self.architecture == "resnet":
            y = F.conv2d(x, self.skip.weight * (1 / math.sqrt(self.in_ch)))
            y = (upsample2d_fast(y, f) if fast else upsample2d_ref(y, f, (2, 1))) * math.sqrt(0.5)
            x = self.conv0(x, ws[0], fast)
            x = y + self.conv1(x, ws[1], fast, gain=math.sqrt(0.5))
        else:
            x = self.conv1(self.conv0(x, ws[0], fast), ws[1], fast)
        if img is not None and self.architecture == "skip":
            img = upsample2d_fast(img, f) if fast else upsample2d_ref(img, f, (2, 1))
        if self.has_torgb:
            y = self.torgb(x, ws[self.num_conv], fast)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, arch: StyleGAN2Arch):
        super().__init__()
        self.block_resolutions = arch.block_resolutions
        for res in self.block_resolutions:
            in_ch = arch.channels(res // 2) if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_ch, arch.channels(res), arch, res))

    def forward(self, ws: torch.Tensor, fast: bool) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> img [N, C, R, R]."""
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            n = block.num_conv + int(block.has_torgb)
            x, img = block(x, img, list(ws[:, w_idx : w_idx + n].unbind(1)), fast)
            w_idx += block.num_conv
        return img


class StyleGAN2(Generator):
    """The generator interface over StyleGAN2: the flat latent is ws, `num_ws` copies of w (`w0..w{num_ws-1}`)."""

    def __init__(self, arch: StyleGAN2Arch, *, fast: bool | None = None):
        super().__init__()
        self.arch = arch
        self.fast = fast
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
        fast = self.fast if self.fast is not None else ws.device.type == "cpu"  # see the module docstring
        return self.synthesis_network(ws, fast)  # [N, C, R, R]

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
