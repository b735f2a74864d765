"""StyleGAN2's fast half: what `render.models.stylegan2` runs on a fast Backend, computing the reference path's function.

- `ModulatedConv` convolves with the modulated weight but its backward never forms the gradient of that weight: one
  input-gradient convolution with the plain weight gives both the activation gradient and (summed against the
  input) the style gradient, so backward costs one convolution per layer instead of two. Where a map is smaller than
  its layer's weight, the input is modulated instead of the weight, so the frozen weight stays packed.
- In bf16 the up-sampling conv runs in polyphase form (`polyphase_up`: one plain conv computes all four output phases,
  then one interleaving copy), because oneDNN's bf16 transposed conv runs far slower than its plain conv.
- `DemodBiasAct` is a layer's epilogue (demodulation, noise + bias, leaky ReLU, clamp) as one pass each way, compiled
  on a compiled Backend; `Blur` is the up-sampling FIR as a depthwise conv with a packed adjoint.
- Activations are channels last throughout, and every frozen weight is kept in the layout its use wants (`Frozen`):
  modulation runs along contiguous memory, and the input-gradient convolutions and the blur use oneDNN weights
  packed once (render.kernels.onednn), on CPU.

Each of these choices was kept because a paired A/B of whole steps measured it faster (bench/stylegan_step.py;
figures in bench/RESULTS.md); tests/test_stylegan2.py holds this path against the reference path and NVIDIA's numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from render.kernels import compiler, onednn
from render.kernels.backend import Backend


_PHASE_TAP = torch.tensor([[2, 0], [3, 1]])  # [output phase, 2x2 tap] -> tap of the 3x3 kernel (3: a zero tap)


def upsample2d_fast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Same as `upsample2d_ref(x, f, (2, 1))` for a symmetric 4-tap filter, as one depthwise transposed conv."""
    c = x.shape[1]
    k = (f * 4).to(x.dtype)[None, None].repeat(c, 1, 1, 1)  # [C, 1, 4, 4]
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


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
    instead of 9, but oneDNN runs a plain conv several times faster than a transposed one in bf16), then one copy that
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




class ModulatedConv(torch.autograd.Function):
    """conv(x * styles, weight) for a frozen weight, computed as conv(x, weight * styles) (no pass over x).

    x [N, I, H, W], styles [N, I], frozen weight [O, I, 3, 3] -> [N, O, H, W] (or [N, O, 2H+1, 2W+1] transposed,
    stride 2, when `frozen.up`). `frozen` is the layer's Frozen: the weight laid out for the element-wise modulation
    (channels last, or [I, O, k, k] when up) and a PackCache. Backward computes one input-gradient convolution with
    the plain weight, u (packed on CPU: the weight never changes), then grad_x = u * styles and grad_styles = sum over
    pixels of u * x: no gradient of a modulated weight. The fast path keeps activations channels last throughout (x
    arrives so).
    """

    @staticmethod
    def forward(ctx, x, styles, frozen: Frozen, backend: Backend):
        n, i = styles.shape
        up, w = frozen.up, frozen.weight  # [O, I, k, k] channels last, or [I, O, k, k] contiguous when up
        packs = backend.packs(x, w)
        if packs and x[0].numel() < w.numel():  # CPU, small maps (<= 32 px at 256): modulating the
            # input is one pass over a map smaller than the weight, and the frozen weight stays packed (no per-call
            # weight product and reorder); conv(x * s, w) = conv(x, w * s)
            xs = x * styles[:, :, None, None]
            if up and x.dtype == torch.bfloat16:
                y = polyphase_up(xs, frozen.polyphase(), frozen.packs)
            elif up:
                y = onednn.conv_transpose_forward(xs, w, 2, 0, frozen.packs)
            else:
                y = onednn.conv_forward(xs, frozen.plain, None, 1, w.shape[-1] // 2, False, frozen.packs)
        elif packs:  # CPU: each image its own oneDNN conv, channels last (a grouped conv over the batch
            # reshaped channels-last maps to contiguous and ran slower at batch 8; on CPU batching buys nothing)
            if up and x.dtype == torch.bfloat16:  # oneDNN's bf16 transposed conv: far slower than its plain conv
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
        ctx.frozen, ctx.backend = frozen, backend
        return y.reshape(n, -1, *y.shape[2:])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, styles = ctx.saved_tensors
        compiled = ctx.backend.compiled
        u = ctx.frozen.input_grad(grad, x.shape, ctx.backend.packs(grad, ctx.frozen.plain))  # [N, I, H, W]
        if not ctx.needs_input_grad[1]:
            return u * styles[:, :, None, None], None, None, None
        if not compiled and u.dtype == torch.float32 and u.is_contiguous() and x.is_contiguous():
            # eagerly in fp32 NCHW, einsum's bmm is faster than _modulated_grads' product and sum (bench/RESULTS.md)
            return u * styles[:, :, None, None], torch.einsum("nihw,nihw->ni", u, x), None, None
        return (*_modulated_grads(u, x, styles, compiled=compiled), None, None)


@compiler.kernel
def _modulated_grads(u: torch.Tensor, x: torch.Tensor, styles: torch.Tensor):
    """ModulatedConv's backward, one pass when compiled: (u * styles, per-channel <u, x>). Eagerly: for channels-last
    maps (einsum would copy both to NCHW) and bf16 (its bmm is slower); the sums accumulate in fp32."""
    return u * styles[:, :, None, None], (u * x).sum((2, 3)).to(styles.dtype)


@compiler.kernel
def _demod_bias_act(x: torch.Tensor, coef: torch.Tensor, shift: torch.Tensor, peak: bool):
    """leaky_relu(x * coef + shift, 0.2), and with `peak` its min and max (for DemodBiasAct's clamp check)."""
    y = F.leaky_relu(torch.addcmul(shift, x, coef[:, :, None, None]), 0.2)
    return (y, y.amin(), y.amax()) if peak else (y, None, None)


@compiler.kernel
def _demod_bias_act_grads(dy: torch.Tensor, y: torch.Tensor, x: torch.Tensor, coef: torch.Tensor, clamp: float | None):
    g = torch.ops.aten.leaky_relu_backward(dy, y, 0.2, True)  # y < 0 exactly where the pre-activation is
    if clamp is not None:
        g = g.masked_fill(y.abs() >= clamp, 0)
    return g * coef[:, :, None, None], (g * x).sum((2, 3)).to(coef.dtype)


class DemodBiasAct(torch.autograd.Function):
    """A synthesis layer's epilogue on the fast path: clamp(leaky_relu(x * coef + shift, 0.2)), with x the modulated
    conv's output [N, O, H, W], coef [N, O] (demodulation times gain; lrelu(g x) = g lrelu(x) for g > 0) and shift
    [1, O, H, W] (noise + bias, times gain; frozen). Saves x and its output only, skips the clamp when nothing reaches
    it (checked on CPU only: on a GPU the check would wait for the device), and on a compiled Backend runs as one
    compiled pass each way."""

    @staticmethod
    def forward(ctx, x, coef, shift, clamp, compiled: bool):
        peak = clamp is not None and x.device.type == "cpu"
        y, lo, hi = _demod_bias_act(x, coef, shift, peak, compiled=compiled)
        if peak and max(-lo.item(), hi.item()) < clamp:
            clamp = None
        if clamp is not None:
            y.clamp_(-clamp, clamp)
            # the bound as y holds it (bf16 rounds it; a CPU scalar, no device sync): backward masks |y| >= it, which
            # eager bf16 compares in bf16 but a compiled kernel in fp32, which would miss every clamped pixel
            clamp = torch.tensor(clamp, dtype=y.dtype).item()
        ctx.save_for_backward(x, coef, y)
        ctx.clamp, ctx.compiled = clamp, compiled
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, coef, y = ctx.saved_tensors
        grad_x, grad_coef = _demod_bias_act_grads(dy, y, x, coef, ctx.clamp, compiled=ctx.compiled)
        return grad_x, grad_coef, None, None, None


class Frozen:
    """What the fast path precomputes from a frozen layer's weights: the weight in the layout its modulation wants,
    packed oneDNN weights for the input gradient, the squared weight for demodulation, noise + bias. Remade whenever
    a parameter changes (SynthesisLayer._frozen)."""

    def __init__(self, weight: torch.Tensor, up: bool, shift: torch.Tensor | None = None,
                 fir: torch.Tensor | None = None):
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

    def blur(self, x: torch.Tensor, adjoint: bool, packed: bool) -> torch.Tensor:
        """The up-sampling blur [N, O, 2H+1, 2W+1] -> [N, O, 2H, 2W] (pad 1), or its adjoint (pad 2) back; `packed`:
        on oneDNN's packed path (Backend.packs)."""
        k, pad = (self.fir_adjoint, 2) if adjoint else (self.fir, 1)
        if packed:
            return onednn.conv_forward(x, k, None, 1, pad, False, self.packs, groups=x.shape[1])
        return F.conv2d(x, k, padding=pad, groups=x.shape[1])

    def input_grad(self, grad: torch.Tensor, in_shape, packed: bool) -> torch.Tensor:
        """d conv / d x given grad: the conv2d (stride 2) with [I, O, k, k] when `up`, else the adjoint "same" conv;
        `packed`: on oneDNN's packed path (Backend.packs)."""
        if packed:
            if self.up:
                return onednn.conv_forward(grad, self.weight, None, 2, 0, False, self.packs)
            return onednn.conv_input_grad(grad, self.plain, 1, self.plain.shape[-1] // 2, in_shape, self.packs)
        if self.up:
            return F.conv2d(grad, self.weight, stride=2)
        return F.conv_transpose2d(grad, self.plain, padding=self.plain.shape[-1] // 2)




class Blur(torch.autograd.Function):
    """upsample_blur_ref for the fast path: the depthwise FIR as a convolution with its own zero padding (F.pad would
    return a contiguous copy of channels-last activations), and a backward that is the depthwise conv with the
    flipped kernel, packed on CPU (autograd's returned a contiguous gradient, converted back at a cost)."""

    @staticmethod
    def forward(ctx, x, frozen: Frozen, backend: Backend):
        ctx.frozen, ctx.packed = frozen, backend.packs(x, frozen.fir)
        return frozen.blur(x, adjoint=False, packed=ctx.packed)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return ctx.frozen.blur(grad, adjoint=True, packed=ctx.packed), None, None
