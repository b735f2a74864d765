"""A whole projection step as one function of the latent: a generator's synthesis and its written-out backward
(`Generator.synthesis_vjp`, render/kernels/dcgan.py for the embedded DCGAN) around LPIPS's value and image gradient
(render/kernels/lpips.py). On a compiled Backend the whole of it, generator and loss, is one torch.compile graph in
which only the convolutions stay calls. render/latent/project.py decides where it applies; tests/test_project.py
holds it against autograd through the generator.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from render.kernels import compiler
from render.kernels.lpips import image_value_and_grad


@compiler.kernel(dynamic=False)  # compiled: the whole step, generator and LPIPS, one graph
def synthesis_distance(latent, synthesis, generator_args, lpips_args, compiling: bool):
    """LPIPS distance [N] of the generator's image of latent [N, D] (float32) to the target, and its gradient to the
    latent [N, D]. `compiling`: whether this runs inside torch.compile (it picks the pool backward a graph wants)."""
    forward, backward = synthesis
    image, tape = forward(latent, *generator_args)
    value, image_grad = image_value_and_grad(image, *lpips_args, compiling)
    return value, backward(image_grad, tape, *generator_args)


class WholeStep(torch.autograd.Function):
    """`synthesis_distance` as one autograd node: forward computes the value and its latent gradient at once,
    backward scales that gradient by the incoming one."""

    @staticmethod
    def forward(ctx, latent, synthesis, generator_args, lpips_args, compiled: bool):
        value, grad = synthesis_distance(latent, synthesis, generator_args, lpips_args, compiled, compiled=compiled)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return g * grad[:, None], None, None, None, None
