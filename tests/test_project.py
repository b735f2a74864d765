"""render.project: the resize CUDA uses (the antialiased bilinear resampling as matrices, values and gradients), and
the loss's side and LPIPS layers."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from render.generators import load_generator
from render.lpips import load_lpips
from render.project import loss_side, prepare_target, project, resize, resize_matrix


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


def test_loss_side_and_layers_reach_the_loss():
    """The loss compares at the generator's side clamped to 64..256 (a 1024 px face at 256, as the StyleGAN2
    projector) and sums config loss_layers of LPIPS's layers, 0 = auto (3 for VGG at 64 px)."""
    G = load_generator("embedded")
    assert (loss_side(G), loss_side(G, 96)) == (64, 96)
    assert [loss_side(SimpleNamespace(resolution=r)) for r in (32, 256, 1024)] == [64, 256, 256]
    photo = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    lp = load_lpips("vgg")
    with torch.no_grad():
        start = G.synthesis(G.mean_latent())
        target = resize(prepare_target(photo, G.device, G.framing), 64)
        want = {k: lp.distance_to(start, lp.target(target, k)).item() for k in (1, 3, 5)}
    for setting, layers in ((0, 3), (1, 1), (5, 5)):
        result = project(G, photo, steps=1, every=1, initial_noise=0.0, loss_layers=setting)
        assert result.distances[0] == pytest.approx(want[layers], rel=1e-5)
    assert want[1] < want[3] < want[5]
