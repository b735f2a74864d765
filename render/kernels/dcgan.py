"""The embedded DCGAN's fast half: its synthesis and the backward of it written out as pure functions of tensors, so
that with LPIPS's value and gradient (render/kernels/lpips.py) a whole projection step is one function
(render/kernels/step.py), compiled as one graph on a compiled Backend. `EmbeddedDCGAN.synthesis_vjp` hands them out
with their arguments; tests/test_project.py holds them against autograd through `EmbeddedDCGAN.synthesis`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from render.kernels import onednn  # noqa: F401 - defines torch.ops.uncanny's convolutions

STYLE_UNIT = 0.2  # relative change of a style per latent unit: render.models.dcgan's, which imports it from here


def forward(latent, sizes, geometry, weights, scales, shifts, units, packed: bool):
    """EmbeddedDCGAN.synthesis as a pure function (see EmbeddedDCGAN.synthesis_vjp): latent [N, D] float32 -> (image [N, 3, 64, 64]
    float32, tape for backward). Convolutions in the weights' dtype, the styles' arithmetic in float32."""
    z, *blocks = torch.split(latent, list(sizes), dim=1)
    dtype = weights[0].dtype
    x, tape = z[:, :, None, None].to(dtype), []
    for i, style in enumerate(blocks):
        y = torch.ops.uncanny.conv_transpose2d(x, weights[i], *geometry[i], packed)  # before normalisation
        ds, dt = style.chunk(2, dim=1)  # [N, C_i] each
        a = scales[i] * (1 + STYLE_UNIT * ds)
        b = shifts[i] + STYLE_UNIT * units[i] * dt
        x = F.relu(y.float() * a[:, :, None, None] + b[:, :, None, None]).to(dtype)
        tape.append((y, a, x))
    image = torch.tanh(torch.ops.uncanny.conv_transpose2d(x, weights[-1], *geometry[-1], packed).float())
    return image, (tape, image)


def backward(image_grad, saved, sizes, geometry, weights, scales, shifts, units, packed: bool):
    """The gradient [N, D] float32 reaching forward's latent, given its image's (float32). Per block, back through
    the ReLU; the style gradients are the spatial sums of that gradient times the conv output (scale) and alone
    (shift); then the conv's input gradient."""
    tape, image = saved
    # the input gradient of a transposed conv is the conv with its weight
    g = torch.ops.uncanny.conv2d(image_grad * (1 - image * image), weights[-1], None, *geometry[-1], False, packed)
    style_grads = []
    for i in reversed(range(len(tape))):
        y, a, h = tape[i]
        g = torch.where(h > 0, g.float(), 0.0)  # [N, C_i, H, W]
        da = (g * y.float()).sum((2, 3)) * scales[i] * STYLE_UNIT
        db = g.sum((2, 3)) * units[i] * STYLE_UNIT
        style_grads.append(torch.cat([da, db], dim=1))
        g = torch.ops.uncanny.conv2d(g * a[:, :, None, None], weights[i], None, *geometry[i], False, packed)
    return torch.cat([g.float().flatten(1), *reversed(style_grads)], dim=1)
