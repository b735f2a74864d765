"""render.project.resize: the matrix form CUDA uses is the antialiased bilinear resampling, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from render.project import resize_matrix


@pytest.mark.parametrize("h, w, size", [(128, 128, 48), (256, 200, 64), (32, 32, 64)])
def test_resize_matrices_equal_antialiased_interpolation(h, w, size):
    img = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    rows, cols = resize_matrix(h, size, img.device, img.dtype), resize_matrix(w, size, img.device, img.dtype)
    out = rows @ img @ cols.t()
    assert (out - ref).abs().max() < 1e-12
    v = torch.randn_like(ref)
    g_ref, = torch.autograd.grad((ref * v).sum(), img)
    g, = torch.autograd.grad((out * v).sum(), img)
    assert (g - g_ref).abs().max() < 1e-12
