"""Convolutions of frozen networks on CPU with oneDNN weights packed once, forward and input-gradient.

`F.conv2d` / `F.conv_transpose2d` on CPU reorder the weight into oneDNN's blocked layout on every call. For the small
images projection works on (batch 1, 4-64 px maps) that reorder costs more than the convolution (bench/RESULTS.md:
the embedded DCGAN's up-convolutions ran several times faster packed). Here the weight is packed
once per (weight, dtype, input shape) and the backward pass, which only needs the input gradient (the weights are
frozen), is the adjoint convolution, also packed:

    packs = PackCache()
    y = conv2d(x, conv.weight, conv.bias, stride=1, padding=1, relu=True, cache=packs)   # relu(conv(x))
    y = conv_transpose2d(x, weight, stride=2, padding=1, cache=packs)

`conv_forward` and `conv_input_grad` are the same convolutions without autograd, for callers that write their own
backward pass. The custom ops at the end (`torch.ops.uncanny.conv2d`, `conv2d_input_grad`, `conv_transpose2d`) are
what such a pass calls when it is compiled as one graph (render/models/lpips.py's distance, the embedded DCGAN's projection
step). Inputs are made channels_last; outputs are channels_last. Gradients
flow to `x` only: a weight or bias that requires grad is a caller error (use F.conv2d then). Double backward is not
supported. `available()` says whether this torch build packs; callers run F.conv2d where it does not, off CPU, or
where their Backend says `packed=False`.
"""

from __future__ import annotations

import logging
import weakref

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.flop_counter import register_flop_formula

log = logging.getLogger(__name__)

_MAX_PACKS = 128  # of a network's own cache (a generator's): 2 entries per conv and input shape


def _build_has_ops() -> bool:
    mk = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and hasattr(mk, "_convolution_pointwise")
            and hasattr(mk, "_reorder_convolution_weight") and hasattr(mk, "_convolution_transpose_pointwise")
            and hasattr(mk, "_reorder_convolution_transpose_weight"))


def _packs_bf16() -> bool:
    """oneDNN packs bf16 weights only on CPUs with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; elsewhere (an AVX2-only
    CPU) its reorder refuses them, and bf16 convolutions run plain."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check is not None and check())
    except RuntimeError:
        return False


def packed_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes whose weights oneDNN packs on this CPU."""
    return (torch.float32, torch.bfloat16) if _PACKS_BF16 else (torch.float32,)


def available() -> bool:
    """Whether this torch build packs oneDNN weights: its ops exist, and no packing has failed in this process (a
    fact learned about the build, not a switch: which path runs is the caller's Backend)."""
    return _PACKING_WORKS


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the packed path can apply: CPU, a build that packs, frozen weight, a dtype oneDNN packs here. Whether it
    does is the caller's Backend (`Backend.packs`)."""
    return (x.device.type == "cpu" and not weight.requires_grad and x.dtype == weight.dtype
            and x.dtype in packed_dtypes() and _PACKING_WORKS)


class PackCache:
    """Packed weights keyed by (weight storage and version, dtype, op, geometry, input shape); bounded."""

    def __init__(self, max_items: int = _MAX_PACKS):
        self.max_items = max_items
        self._packs: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, make) -> torch.Tensor:
        pack = self._packs.get(key)
        if pack is None:
            if len(self._packs) >= self.max_items:
                self._packs.clear()
            with torch.no_grad():
                pack = self._packs[key] = make()
        return pack

    def clear(self) -> None:
        self._packs.clear()

    def __deepcopy__(self, memo) -> PackCache:
        return PackCache(self.max_items)  # packed (opaque) tensors cannot be copied, only packed again


def _wkey(w: torch.Tensor) -> tuple:
    return (w.data_ptr(), w._version, w.dtype, tuple(w.shape))


def _pack_conv(cache: PackCache, w: torch.Tensor, stride: int, pad: int, in_shape, groups: int = 1) -> torch.Tensor:
    """w [O, I / groups, k, k] packed for conv2d(x of in_shape, w, groups=groups)."""
    return cache.get(("conv", _wkey(w), stride, pad, groups, tuple(in_shape)),
                     lambda: torch.ops.mkldnn._reorder_convolution_weight(
                         w, [pad, pad], [stride, stride], [1, 1], groups, list(in_shape)))


def _pack_conv_t(cache: PackCache, w: torch.Tensor, stride: int, pad: int, out_pad: tuple[int, int],
                 in_shape) -> torch.Tensor:
    """w [I, O, k, k] packed for conv_transpose2d(x of in_shape, w) with output padding (rows, columns)."""
    return cache.get(("convT", _wkey(w), stride, pad, out_pad, tuple(in_shape)),
                     lambda: torch.ops.mkldnn._reorder_convolution_transpose_weight(
                         w, [pad, pad], list(out_pad), [stride, stride], [1, 1], 1, list(in_shape)))


def _pack_conv_adjoint(cache: PackCache, w: torch.Tensor, pad: int, grad_shape) -> torch.Tensor:
    """The input gradient of a stride-1 conv with w [O, I, k, k] and padding p is the conv with w transposed over
    in/out and flipped in space, padding `pad` = k - 1 - p: that kernel, packed. Keyed by `w` itself (a flipped copy
    made here is freed afterwards, and keying by its address could hand a later weight of the same shape a stale
    pack)."""
    return cache.get(("adjoint", _wkey(w), pad, tuple(grad_shape)),
                     lambda: torch.ops.mkldnn._reorder_convolution_weight(
                         w.transpose(0, 1).flip(2, 3).contiguous(), [pad, pad], [1, 1], [1, 1], 1, list(grad_shape)))


def _conv(x, packed, bias, stride: int, pad: int, relu: bool, groups: int = 1) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, [pad, pad], [stride, stride], [1, 1], groups,
                                                   "relu" if relu else "none", [], "")


def _conv_t(x, packed, stride: int, pad: int, out_pad: tuple[int, int]) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_transpose_pointwise(x, packed, None, [pad, pad], list(out_pad),
                                                             [stride, stride], [1, 1], 1, "none", [], "")


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, relu: bool,
                 cache: PackCache, groups: int = 1) -> torch.Tensor:
    """[relu](conv2d(x, weight, bias, groups=groups)), packed, no autograd: x [N, I, H, W] -> [N, O, H', W']
    channels_last."""
    x = _cl(x)
    return _conv(x, _pack_conv(cache, weight, stride, pad, x.shape, groups), bias, stride, pad, relu, groups)


def conv_transpose_forward(x: torch.Tensor, weight: torch.Tensor, stride: int, pad: int,
                           cache: PackCache) -> torch.Tensor:
    """conv_transpose2d(x, weight [I, O, k, k], stride, pad) (no bias, no output padding), packed, no autograd;
    channels_last in and out."""
    x = _cl(x)
    return _conv_t(x, _pack_conv_t(cache, weight, stride, pad, (0, 0), x.shape), stride, pad, (0, 0))


def conv_input_grad(grad: torch.Tensor, weight: torch.Tensor, stride: int, pad: int, in_shape,
                    cache: PackCache) -> torch.Tensor:
    """The gradient of conv2d(x, weight) (stride, pad; square kernel, groups 1) with respect to x of shape
    `in_shape`, given the gradient of its output, packed, no autograd. A ReLU after the conv is the caller's
    (threshold_backward first)."""
    grad = _cl(grad.to(weight.dtype))
    k = weight.shape[-1]
    if stride == 1 and pad <= k - 1:  # the adjoint is a conv with the flipped kernel, padded k - 1 - pad
        return _conv(grad, _pack_conv_adjoint(cache, weight, k - 1 - pad, grad.shape), None, 1, k - 1 - pad, False)
    # otherwise the transposed conv, with the output padding (per axis) that restores the input size
    out_pad = tuple(n - ((g - 1) * stride - 2 * pad + k) for n, g in zip(in_shape[-2:], grad.shape[-2:]))
    return _conv_t(grad, _pack_conv_t(cache, weight, stride, pad, out_pad, grad.shape), stride, pad, out_pad)


def conv_unpacked(x: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    """conv2d(x, weight, padding=pad) for a weight used once (a modulated one): packed for this call only, no
    autograd, channels_last in and out (F.conv2d copied a channels-last input to contiguous for StyleGAN2's 1x1
    toRGB convs)."""
    x = _cl(x)
    packed = torch.ops.mkldnn._reorder_convolution_weight(weight, [pad, pad], [1, 1], [1, 1], 1, list(x.shape))
    return _conv(x, packed, None, 1, pad, False)


def conv_transpose_unpacked(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """conv_transpose2d(x, weight, stride) (no padding) for a weight used once, as conv_unpacked. Unlike
    F.conv_transpose2d it keeps channels_last, and at batch 1 it measured faster in bf16 (StyleGAN2's 32 and
    64 px up-sampling convs)."""
    x = _cl(x)
    packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(weight, [0, 0], [0, 0], [stride, stride], [1, 1],
                                                                     1, list(x.shape))
    return _conv_t(x, packed, stride, 0, (0, 0))


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, pad: int, relu: bool, cache: PackCache):
        y = conv_forward(x, weight, bias, stride, pad, relu, cache)
        ctx.save_for_backward(weight, y if relu else None)
        ctx.geometry = stride, pad, relu, cache, tuple(x.shape)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        weight, y = ctx.saved_tensors
        stride, pad, relu, cache, in_shape = ctx.geometry
        if relu:
            grad = torch.ops.aten.threshold_backward(grad.to(y.dtype), y, 0)
        return conv_input_grad(grad, weight, stride, pad, in_shape, cache), None, None, None, None, None, None


class _ConvT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride: int, pad: int, cache: PackCache):
        ctx.save_for_backward(weight)
        ctx.geometry = stride, pad, cache
        return conv_transpose_forward(x, weight, stride, pad, cache)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        stride, pad, cache = ctx.geometry
        grad = _cl(grad.to(weight.dtype))  # the adjoint of a transposed conv is the conv with the same weight
        return _conv(grad, _pack_conv(cache, weight, stride, pad, grad.shape), None, stride, pad, False), \
            None, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int, padding: int,
           relu: bool, cache: PackCache) -> torch.Tensor:
    """[relu](conv2d(x, weight, bias)) with square stride/padding, packed; x [N, I, H, W] -> [N, O, H', W']."""
    return _Conv.apply(_cl(x), weight, bias, stride, padding, relu, cache)


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, *, stride: int, padding: int,
                     cache: PackCache) -> torch.Tensor:
    """conv_transpose2d(x, weight) (no bias, no output padding), packed; weight [I, O, k, k]."""
    return _ConvT.apply(_cl(x), weight, stride, padding, cache)


# The same convolutions as operators that torch.compile sees as opaque calls (custom ops with shape functions), so a
# compiled function can hold whole networks (render/models/lpips.py's distance, the embedded DCGAN's projection step): the
# element-wise work between the convolutions is fused around them and the packed weights stay outside the graph. (A
# packed weight passed into the graph instead saves a little per call, but Inductor cannot cache a graph that takes
# one: every process then compiles anew, which costs far more than the cache.) Each weight's packs live as
# long as the weight (keyed by the tensor object: an address and version could be reused by a later weight of the same
# shape and hand it a stale pack). Inputs are cast to the weight's dtype; outputs are channels_last in that dtype.
# `packed` False (or a device or dtype the packed path does not take) runs plain F.conv2d / F.conv_transpose2d, and so
# does every call after a weight fails to pack (one warning).
_OP_PACKS: dict[int, PackCache] = {}  # id(weight) -> its packs, dropped when the weight is freed


_PACKS_PER_WEIGHT = 8  # a weight's packs: forward and input gradient for ~4 input shapes before they are dropped


def packs_of(weight: torch.Tensor) -> PackCache:
    """The packs of this weight (for any op, geometry and input shape), shared by the custom ops and any caller that
    passes it as `cache`, so that a weight run both ways is packed once."""
    packs = _OP_PACKS.get(id(weight))
    if packs is None:
        packs = _OP_PACKS[id(weight)] = PackCache(_PACKS_PER_WEIGHT)
        weakref.finalize(weight, _OP_PACKS.pop, id(weight), None)  # before the id can name another tensor
    return packs


def _out_side(n, k: int, stride: int, pad: int):
    return (n + 2 * pad - k) // stride + 1


def _new_map(like: torch.Tensor, shape, weight: torch.Tensor) -> torch.Tensor:
    return like.new_empty(shape, dtype=weight.dtype).contiguous(memory_format=torch.channels_last)


# Defined with torch.library.Library rather than torch.library.custom_op: custom_op's Python wrapper cost a measurable
# share of a 64 px projection step's 24 convolutions (bench/RESULTS.md). Inductor's on-disk
# cache keys a compiled graph by the ops' names and arguments, not by their fake (shape) functions: an op whose output
# shape, dtype or layout changes needs a new name, or graphs cached before it will hold the old one.
_LIB = torch.library.Library("uncanny", "DEF")
_LIB.define("conv2d(Tensor x, Tensor weight, Tensor? bias, int stride, int pad, bool relu, bool packed) -> Tensor")
_LIB.define("conv2d_input_grad(Tensor grad, Tensor weight, int stride, int pad, int height, int width, bool packed)"
            " -> Tensor")
_LIB.define("conv_transpose2d(Tensor x, Tensor weight, int stride, int pad, bool packed) -> Tensor")


def packed_or_plain(packed: bool, x: torch.Tensor, weight: torch.Tensor, run_packed, plain) -> torch.Tensor:
    """run_packed() where the packed path applies (`packed` and usable(x, weight)), else plain(); and plain() from
    now on if oneDNN cannot pack here (a torch build whose oneDNN refuses a geometry): `usable()` is then False for
    every caller, and one warning says so."""
    global _PACKING_WORKS
    if not (packed and usable(x, weight)):
        return plain()
    try:
        return run_packed()
    except RuntimeError as e:
        out = plain()  # raises in turn when the trouble is not packing (memory, shapes)
        _PACKING_WORKS = False
        log.warning("oneDNN weight packing failed (%s); plain convolutions from now on",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return out


def _op(name: str):
    """Register the decorated function as uncanny::name's kernel for every device (no autograd formula: the callers
    run inside their own backward passes)."""
    def register(fn):
        _LIB.impl(name, fn, "CompositeExplicitAutograd")
        return fn
    return register


@_op("conv2d")
def conv2d_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, pad: int, relu: bool,
              packed: bool) -> torch.Tensor:
    """[relu](conv2d(x, weight, bias)): LPIPS's convolutions, and the input gradient of a transposed one (the conv
    with the same weight)."""
    x = x.to(weight.dtype)

    def plain():
        y = F.conv2d(x, weight, bias, stride=stride, padding=pad)
        return _cl(F.relu(y) if relu else y)

    return packed_or_plain(packed, x, weight,
                            lambda: conv_forward(x, weight, bias, stride, pad, relu, packs_of(weight)), plain)


@torch.library.register_fake("uncanny::conv2d", lib=_LIB)
def _(x, weight, bias, stride, pad, relu, packed):
    k = weight.shape[-1]
    return _new_map(x, (x.shape[0], weight.shape[0], _out_side(x.shape[2], k, stride, pad),
                        _out_side(x.shape[3], k, stride, pad)), weight)


@_op("conv2d_input_grad")
def conv2d_input_grad_op(grad: torch.Tensor, weight: torch.Tensor, stride: int, pad: int, height: int, width: int,
                         packed: bool) -> torch.Tensor:
    """The gradient reaching x ([N, I, height, width]) of conv2d(x, weight), given the gradient of its output."""
    in_shape = (grad.shape[0], weight.shape[1], height, width)
    grad = grad.to(weight.dtype)

    def plain():
        return _cl(torch.nn.grad.conv2d_input(in_shape, weight, grad, stride, pad))

    return packed_or_plain(packed, grad, weight,
                            lambda: conv_input_grad(grad, weight, stride, pad, in_shape, packs_of(weight)), plain)


@torch.library.register_fake("uncanny::conv2d_input_grad", lib=_LIB)
def _(grad, weight, stride, pad, height, width, packed):
    return _new_map(grad, (grad.shape[0], weight.shape[1], height, width), weight)


@_op("conv_transpose2d")
def conv_transpose2d_op(x: torch.Tensor, weight: torch.Tensor, stride: int, pad: int, packed: bool) -> torch.Tensor:
    """conv_transpose2d(x, weight [I, O, k, k]) (no bias, no output padding): the embedded DCGAN's layers."""
    x = x.to(weight.dtype)

    def plain():
        return _cl(F.conv_transpose2d(x, weight, stride=stride, padding=pad))

    return packed_or_plain(packed, x, weight,
                            lambda: conv_transpose_forward(x, weight, stride, pad, packs_of(weight)), plain)


@torch.library.register_fake("uncanny::conv_transpose2d", lib=_LIB)
def _(x, weight, stride, pad, packed):
    k = weight.shape[-1]
    return _new_map(x, (x.shape[0], weight.shape[1], (x.shape[2] - 1) * stride - 2 * pad + k,
                        (x.shape[3] - 1) * stride - 2 * pad + k), weight)


def _conv_flops(out_shape, weight_shape) -> int:
    """Multiply-adds x 2 of a convolution producing (or, for an input gradient, consuming) a map of out_shape."""
    n, o, h, w = out_shape
    return 2 * n * o * h * w * weight_shape[1] * weight_shape[2] * weight_shape[3]


@register_flop_formula(torch.ops.uncanny.conv2d)
def _(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:  # torch.utils.flop_counter sees through the op
    return _conv_flops(out_shape, w_shape)


@register_flop_formula(torch.ops.uncanny.conv2d_input_grad)
def _(grad_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return _conv_flops(grad_shape, w_shape)


@register_flop_formula(torch.ops.uncanny.conv_transpose2d)
def _(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return _conv_flops(x_shape, w_shape)  # each input pixel meets the whole [I, O, k, k] kernel


_PACKING_WORKS = _build_has_ops()  # False from a packing failure on (one warning): see _packed_or_plain
_PACKS_BF16 = _PACKING_WORKS and _packs_bf16()
