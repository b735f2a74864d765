"""StyleGAN3's alias-free signal processing: low-pass filter design and the filtered leaky ReLU.

The filtered leaky ReLU of "Alias-Free Generative Adversarial Networks" (Karras et al. 2021, appendix C):

    x + bias -> up-sample by `up` (zero insertion, pad, low-pass fu) -> leaky ReLU * gain, clamp
             -> low-pass fd and keep every `down`-th sample

Two paths compute it:
- `filtered_lrelu_ref`: the definition above, literally (zero insertion, a full-resolution grouped convolution,
  then throwing samples away). Slow; it is the yardstick the fast path is tested against.
- `filtered_lrelu`: polyphase up-sampling (each output phase is a short convolution of the input, so no zeros are
  ever multiplied), strided down-sampling (only the kept samples are computed), separable filters as depthwise 1-D
  convolutions in channels-last memory (faster than NCHW for depthwise convolutions on CPU), the activation
  gain folded into the up filter (lrelu(g*x) = g*lrelu(x)), a leaky ReLU that keeps only its output for backward
  and skips clamping when nothing reaches the clamp, and hand-written adjoints as the backward pass (autograd
  through depthwise convolutions is several times slower than their forward on CPU).

One 1-D resampling step, in both paths, is `y[i] = sum_n x[n] * g[up*n + pad0 - down*i]` with `g` the flipped filter:
zero insertion, `pad0` samples of padding (negative crops), convolution, decimation. Its adjoint is the same step
with `up` and `down` swapped, the filter flipped and `pad0 -> taps-1-pad0`, which is what the backward pass runs.

Filters are designed in numpy/float64 (`lowpass_filter`); no scipy needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# --- filter design ---------------------------------------------------------------------------------------------


def kaiser_beta(atten_db: float) -> float:
    """Kaiser window beta for a stop-band attenuation in dB (Kaiser's empirical formula)."""
    if atten_db > 50:
        return 0.1102 * (atten_db - 8.7)
    if atten_db > 21:
        return 0.5842 * (atten_db - 21) ** 0.4 + 0.07886 * (atten_db - 21)
    return 0.0


def kaiser_atten(numtaps: int, width: float) -> float:
    """Attenuation in dB of a Kaiser FIR filter; `width` is the transition width as a fraction of Nyquist."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR filter with unit DC gain, float32; None for the identity (numtaps == 1).

    Separable: windowed sinc `[numtaps]` (what scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs) returns).
    Radial: windowed jinc `[numtaps, numtaps]`, radially symmetric, used by StyleGAN3-R's down-sampling.
    """
    if numtaps < 1:
        raise ValueError(f"lowpass_filter needs numtaps >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    nyquist = fs / 2
    beta = kaiser_beta(kaiser_atten(numtaps, width / nyquist))
    window = np.kaiser(numtaps, beta)  # [numtaps] float64
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        c = cutoff / nyquist
        f = c * np.sinc(c * m) * window
        return torch.as_tensor(f / f.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))  # [numtaps, numtaps] distances from the centre
    j1 = torch.special.bessel_j1(torch.as_tensor(2 * cutoff * np.pi * r, dtype=torch.float64)).numpy()
    f = j1 / (np.pi * r) * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


# --- the reference path ----------------------------------------------------------------------------------------


def _depthwise(x: torch.Tensor, f: torch.Tensor, stride=1) -> torch.Tensor:
    """Correlate every channel of x [N,C,H,W] with the 2-D kernel f [kh,kw] (no padding)."""
    if x.dtype == torch.bfloat16:  # bf16 depthwise 2-D convs miss oneDNN on CPU: far slower than fp32 (config R)
        return _depthwise(x.float(), f, stride).to(x.dtype)
    weight = f.to(x.dtype)[None, None].expand(x.shape[1], 1, *f.shape)
    return F.conv2d(x, weight, stride=stride, groups=x.shape[1])


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding=(0, 0, 0, 0),
                  gain: float = 1.0) -> torch.Tensor:
    """Zero-insert `up`, pad (x0, x1, y0, y1; negative crops), convolve with f ([k] separable or [k,k]), keep every
    `down`-th sample. x [N,C,H,W] -> [N,C,H',W']. The literal definition; slow."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    if f is not None:
        f = f * gain ** (f.ndim / 2)
        g = f.flip(list(range(f.ndim)))  # convolution = correlation with the flipped filter
        x = _depthwise(_depthwise(x, g[None, :]), g[:, None]) if f.ndim == 1 else _depthwise(x, g)
    elif gain != 1:
        x = x * gain
    return x[:, :, ::down, ::down]


def lrelu_clamp(x: torch.Tensor, slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    """gain * leaky_relu(x, slope), clamped to [-clamp, clamp] (None: no clamp)."""
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


def filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=(0, 0, 0, 0), gain=math.sqrt(2),
                       slope=0.2, clamp=None):
    """Reference filtered leaky ReLU, x [N,C,H,W] -> [N,C,H',W'] (see the module docstring)."""
    if b is not None:
        x = x + b.to(x.dtype)[None, :, None, None]
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, gain=up ** 2)
    x = lrelu_clamp(x, slope, gain, clamp)
    return upfirdn2d_ref(x, fd, down=down)


# --- the fast path ---------------------------------------------------------------------------------------------


def _resample1d_fwd(x: torch.Tensor, g: torch.Tensor, dim: int, up: int, down: int, pad0: int, out_len: int):
    """y[i] = sum_n x[n] g[up*n + pad0 - down*i] along `dim` (-1 or -2) of x [N,C,H,W], for i < out_len.

    Either up or down is 1. Up-sampling runs as `up` short phase filters (one depthwise conv each, then
    interleaving); down-sampling as one strided depthwise conv.
    """
    x = x.contiguous(memory_format=torch.channels_last)  # depthwise convs run faster in NHWC on CPU
    taps = g.shape[0]
    length = x.shape[dim]
    n, c = x.shape[:2]
    if down == 1:
        # Output i = up*q + r reads x[q + m] with weight g[up*m + pad0 - r], m in [m_lo, m_hi].
        m_lo = -(pad0 // up)
        m_hi = (taps - 1 - pad0 + up - 1) // up
        m = torch.arange(m_lo, m_hi + 1, device=g.device)
        k = up * m[None, :] + pad0 - torch.arange(up, device=g.device)[:, None]  # [up, width] filter index per phase
        phases = torch.where((k >= 0) & (k < taps), g[k.clamp(0, taps - 1)], g.new_zeros(()))  # [up, width]
        q_len = -(-out_len // up)
        lo, hi = -m_lo, q_len - 1 + m_hi - (length - 1)  # padding needed on each side
        stride = 1
    else:
        # Output i reads x[down*i + m] with weight g[m + pad0], m in [-pad0, taps-1-pad0].
        phases = g[None, :]
        q_len = out_len
        lo, hi = pad0, down * (out_len - 1) + taps - 1 - pad0 - (length - 1)
        stride = down
    shape = (1, phases.shape[1]) if dim == -1 else (phases.shape[1], 1)
    # Padding: symmetric inside the convolution where that only adds outputs we slice off, else an explicit pad.
    skip, conv_pad = 0, 0
    if lo >= 0 and hi <= lo:
        conv_pad = lo
    elif lo >= 0 and (hi - lo) % stride == 0:
        conv_pad, skip = hi, (hi - lo) // stride
    else:
        x = F.pad(x, [lo, max(hi, 0), 0, 0] if dim == -1 else [0, 0, lo, max(hi, 0)])  # negative lo crops
    # One depthwise conv per phase: a grouped conv with `up` outputs per channel misses oneDNN's depthwise kernel
    # (measured several times slower, for StyleGAN3-T's 2x up-sampling; bench/RESULTS.md).
    ys = [F.conv2d(x, phase.to(x.dtype).reshape(1, 1, *shape).expand(c, 1, *shape),
                   stride=(1, stride) if dim == -1 else (stride, 1),
                   padding=(0, conv_pad) if dim == -1 else (conv_pad, 0), groups=c).narrow(dim, skip, q_len)
          for phase in phases]  # each [N, C, ...]
    if len(ys) == 1:
        y = ys[0]
    else:  # interleave the phases, in NHWC memory: y[up*q + r] = phase r at q
        h, w = ys[0].shape[2:]
        y = torch.stack([p.permute(0, 2, 3, 1) for p in ys], dim=3 if dim == -1 else 2)  # [N,H,W,up,C]/[N,H,up,W,C]
        y = y.reshape(n, h, w * up, c) if dim == -1 else y.reshape(n, h * up, w, c)
        y = y.permute(0, 3, 1, 2)  # [N, C, H', W'] with channels_last strides
    return y[..., :out_len] if dim == -1 else y[..., :out_len, :]


class _Resample1d(torch.autograd.Function):
    """`_resample1d_fwd` with its adjoint (up <-> down, flipped filter, pad0 -> taps-1-pad0) as backward."""

    @staticmethod
    def forward(ctx, x, g, dim, up, down, pad0, out_len):
        ctx.args = (g, dim, up, down, pad0, x.shape[dim])
        return _resample1d_fwd(x, g, dim, up, down, pad0, out_len)

    @staticmethod
    def backward(ctx, dy):
        g, dim, up, down, pad0, in_len = ctx.args
        dx = _Resample1d.apply(dy, g.flip(0), dim, down, up, g.shape[0] - 1 - pad0, in_len)
        return dx, None, None, None, None, None, None


class _Resample2d(torch.autograd.Function):
    """Down-sampling by a non-separable [k,k] filter g (flipped), strided; adjoint = transposed convolution."""

    @staticmethod
    def forward(ctx, x, g, down, pad0, out_len):
        ctx.args = (g, down, pad0, x.shape[2:])
        x = x.contiguous(memory_format=torch.channels_last)
        taps = g.shape[0]
        hi = down * (out_len - 1) + taps - 1 - pad0 - (x.shape[-1] - 1)
        x = F.pad(x, [max(pad0, 0), max(hi, 0)] * 2)
        if pad0 < 0 or hi < 0:
            end = x.shape[-1] - max(-hi, 0)
            x = x[..., max(-pad0, 0):end, max(-pad0, 0):end]
        return _depthwise(x, g, stride=down)[..., :out_len, :out_len]

    @staticmethod
    def backward(ctx, dy):
        g, down, pad0, in_shape = ctx.args
        dtype = dy.dtype
        dy = dy.float() if dtype == torch.bfloat16 else dy  # (as in _depthwise)
        weight = g.to(dy.dtype)[None, None].expand(dy.shape[1], 1, *g.shape)
        dy = dy.contiguous(memory_format=torch.channels_last)
        dx = F.conv_transpose2d(dy, weight, stride=down, groups=dy.shape[1]).to(dtype)  # dx[down*i + m - pad0] += ...
        dx = F.pad(dx, [0, max(0, in_shape[1] + pad0 - dx.shape[-1]), 0, max(0, in_shape[0] + pad0 - dx.shape[-2])])
        if pad0 >= 0:
            dx = dx[..., pad0:pad0 + in_shape[0], pad0:pad0 + in_shape[1]]
        else:
            dx = F.pad(dx, [-pad0, 0, -pad0, 0])[..., :in_shape[0], :in_shape[1]]
        return dx, None, None, None, None


class LReLUClamp(torch.autograd.Function):
    """leaky_relu(x, slope) clamped to +-clamp; saves only its output, and skips the clamp when nothing reaches it."""

    @staticmethod
    def forward(ctx, x, slope, clamp):
        y = F.leaky_relu(x, slope)  # not in place: x is a view made inside _Resample1d, which autograd protects
        if clamp is not None and y.device.type == "cpu":  # skip the clamp if nothing reaches it (not on a GPU: it
            # would wait for the device); amin + amax measured faster than the inf-norm and aminmax (which
            # copies channels-last maps to contiguous)
            clamp = clamp if max(-y.amin().item(), y.amax().item()) >= clamp else None
        if clamp is not None:
            y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y)
        ctx.args = (slope, clamp)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        slope, clamp = ctx.args
        dx = torch.ops.aten.leaky_relu_backward(dy, y, slope, True)  # y < 0 exactly where x < 0 (slope > 0)
        if clamp is not None:
            dx.masked_fill_(y.abs() >= clamp, 0)
        return dx, None, None


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=(0, 0, 0, 0), gain=math.sqrt(2), slope=0.2,
                   clamp=None):
    """Fast filtered leaky ReLU: same arguments and result as `filtered_lrelu_ref`, x [N,C,H,W] -> [N,C,H',W']."""
    px0, px1, py0, py1 = padding
    if b is not None:
        x = x + b.to(x.dtype)[None, :, None, None]
    h, w = x.shape[2:]
    ku = 1 if fu is None else fu.shape[-1]
    kd = 1 if fd is None else fd.shape[-1]
    up_w, up_h = w * up + px0 + px1 - ku + 1, h * up + py0 + py1 - ku + 1  # size after the up filter
    if fu is None:
        if up != 1:
            raise ValueError("filtered_lrelu: up > 1 needs an up-sampling filter")
        x = upfirdn2d_ref(x, None, padding=padding)
    else:
        if fu.ndim != 1:
            raise ValueError("filtered_lrelu: the fast path takes separable up-sampling filters only")
        g = (fu * up).flip(0)  # gain up**2 split over the two axes
        x = _Resample1d.apply(x, g * gain if slope > 0 else g, -1, up, 1, px0, up_w)
        x = _Resample1d.apply(x, g, -2, up, 1, py0, up_h)
    if fu is not None and slope > 0:
        x = LReLUClamp.apply(x, slope, clamp)  # gain was folded into the up filter: lrelu(g*x) = g*lrelu(x)
    else:
        x = lrelu_clamp(x, slope, gain, clamp)
    out_h, out_w = (up_h - kd + down) // down, (up_w - kd + down) // down
    if fd is None:
        return x[:, :, ::down, ::down]
    if fd.ndim == 2:
        if out_h != out_w:
            raise ValueError("filtered_lrelu: non-separable filters need square images")
        return _Resample2d.apply(x, fd.flip([0, 1]), down, 0, out_w)
    g = fd.flip(0)
    x = _Resample1d.apply(x, g, -2, 1, down, 0, out_h)
    return _Resample1d.apply(x, g, -1, 1, down, 0, out_w)
