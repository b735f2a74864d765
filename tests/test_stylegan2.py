"""StyleGAN2: parity with NVIDIA's networks (committed numbers), the generator interface, fast path = reference path,
and a few projection steps with a tiny network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from render.kernels import compiler, onednn
from render.kernels import stylegan2 as fast_half
from render.kernels.backend import Backend
from render.kernels.stylegan2 import polyphase_kernel, polyphase_up, upsample2d_fast
from render.models.loading import load_generator_file
from render.models.stylegan2 import PRESETS, StyleGAN2, StyleGAN2Arch, setup_filter, upsample2d_ref

PACKED = pytest.param(True, id="packed", marks=pytest.mark.skipif(not onednn.available(),
                                                                   reason="this torch build has no oneDNN packing"))
COMPILER = pytest.mark.skipif(not compiler.available(torch.device("cpu")), reason="no C++ compiler for torch.compile")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan2"
EXPECTED = torch.load(FIXTURES / "expected.pt", weights_only=True)  # from NVIDIA's code, see the fixture script
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(architecture: str = "skip", seed: int = 0, **kw) -> StyleGAN2:
    torch.manual_seed(seed)
    arch = StyleGAN2Arch(resolution=32, z_dim=16, w_dim=16, channel_base=256, channel_max=16, mapping_layers=2,
                         architecture=architecture, **kw)
    G = StyleGAN2(arch).freeze()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping_network.w_avg.normal_(0, 0.3)
    return G


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
@pytest.mark.parametrize("backend", [Backend.EAGER, Backend.REFERENCE], ids=["fast", "reference"])
def test_matches_nvidia(architecture, backend):
    exp = EXPECTED[architecture]
    G = load_generator_file(FIXTURES / f"tiny_{architecture}.pkl")
    G.backend = backend
    with torch.no_grad():
        ws = G.mapping(exp["z"], truncation_psi=0.7)  # [2, num_ws * w_dim]
        assert (ws.reshape(exp["ws_0.7"].shape) - exp["ws_0.7"]).abs().max() < TOL
        img = G.synthesis(ws)  # [2, 3, 32, 32]
        assert img.shape == exp["img_0.7"].shape
        assert (img - exp["img_0.7"]).abs().max() < TOL
        if "img_1.0" in exp:
            assert (G(exp["z"]) - exp["img_1.0"]).abs().max() < TOL


def assert_fast_matches_reference(G, latent, fast: Backend) -> None:
    """G on a fast backend against its reference path: same image and latent gradient."""
    grads, imgs = [], []
    for backend in (Backend.REFERENCE, fast):
        G.backend = backend
        latent.grad = None
        img = G.synthesis(latent)
        (img * torch.linspace(-1, 1, img.numel()).reshape(img.shape)).sum().backward()
        grads.append(latent.grad.clone())
        imgs.append(img.detach())
    assert (imgs[0] - imgs[1]).abs().max() < TOL
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("packed", [PACKED, pytest.param(False, id="plain")])
def test_fast_path_gradients_match_reference(architecture, batch, packed):
    """The fast path (channels last; on CPU oneDNN convs with packed frozen weights, the input modulated instead of
    the weight where the map is smaller than the weight) and, with `packed` False, its plain-conv fallback (what CUDA
    runs) give the reference path's image and gradient."""
    G = tiny(architecture, conv_clamp=2.0)
    assert_fast_matches_reference(G, G.sample(batch, seed=1).requires_grad_(True), Backend(packed=packed))


@COMPILER
def test_compiled_fast_path_matches_reference():
    """The fast path with its element-wise kernels compiled (render/kernels/stylegan2.py: the layer epilogue, its
    backward, the modulated conv's backward) gives the reference path's image and gradient, the clamp included."""
    G = tiny("resnet", conv_clamp=0.5)
    assert_fast_matches_reference(G, G.sample(2, seed=1).requires_grad_(True), Backend.COMPILED)
    kernels = (fast_half._demod_bias_act, fast_half._demod_bias_act_grads, fast_half._modulated_grads)
    assert all(k.compiled is not None and not k.failed for k in kernels)  # it really ran compiled


@COMPILER
def test_compiled_bf16_fast_path_stays_near_float32():
    """bf16 with the kernels compiled, the clamp reached in every layer (and its bound, sqrt(0.5) * 0.5 in resnet
    blocks, not a bf16 number): the latent gradient stays as close to float32's as eager bf16's (~3 %; a compiled
    clamp mask that let gradient through clamped pixels made it ~30 %)."""
    G = tiny("resnet", conv_clamp=0.5)
    latent = G.sample(2, seed=1)
    ramp = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)

    def gradient(G, backend):
        G.backend = backend
        lat = latent.clone().requires_grad_(True)
        (G.compute_copy(dtype).synthesis(lat).float() * ramp).sum().backward()
        return lat.grad

    dtype = torch.float32
    want = gradient(G, Backend.EAGER)
    dtype = torch.bfloat16
    for backend in (Backend.EAGER, Backend.COMPILED):
        assert (gradient(G, backend) - want).abs().max() < 0.08 * want.abs().max()


def test_resampling_kernels_agree():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 5, 7, 7)
    assert torch.allclose(upsample2d_fast(x, f), upsample2d_ref(x, f, (2, 1)), atol=1e-5)


@pytest.mark.skipif(not onednn.available(), reason="needs torch's oneDNN ops")
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    torch.bfloat16 not in onednn.packed_dtypes(), reason="oneDNN packs bf16 only with AVX-512 or AVX-NE-CONVERT"))])
@pytest.mark.parametrize("batch,packed", [(1, False), (3, True)])
def test_polyphase_up_is_the_transposed_conv(dtype, batch, packed):
    """The bf16 fast path's up-sampling conv: four 2x2 phase convs in one, interleaved = conv_transpose2d, stride 2
    (its kernel packed per call, or frozen and packed once)."""
    x = torch.randn(batch, 6, 7, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 4, 3, 3).to(dtype)  # [I, O, 3, 3]
    want = torch.nn.functional.conv_transpose2d(x.float(), w.float(), stride=2)  # [N, 4, 15, 11]
    kernel = polyphase_kernel(w).contiguous(memory_format=torch.channels_last)
    got = polyphase_up(x, kernel, onednn.PackCache() if packed else None)
    assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the output's rounding
    assert (got.float() - want).abs().max() <= tol * want.abs().max()


def test_generator_interface():
    G = tiny()
    assert G.layout.names == tuple(f"w{i}" for i in range(8)) and G.layout.dim == 8 * 16
    mean = G.mean_latent()  # [1, 128]
    assert torch.equal(mean.reshape(8, 16), G.mapping_network.w_avg.expand(8, 16))
    assert torch.equal(G.expand(G.mapping_network.w_avg[None]), mean)
    z = torch.randn(3, 16)
    assert torch.allclose(G.mapping(z, truncation_psi=0.0), mean.expand(3, -1))
    assert torch.equal(G.sample(2, seed=5), G.sample(2, seed=5))
    img = G.synthesis(G.sample(2, seed=5))
    assert img.shape == (2, 3, 32, 32) and torch.equal(img, G.synthesis(G.sample(2, seed=5)))  # constant noise
    assert G.regularizer(mean).abs().max() < 1e-6
    assert (G.regularizer(G.sample(4, seed=2)) > 0).all()
    assert G.describe()["latent"] == "8 x 16 (w0..w7)"


def test_presets_have_published_layouts():
    assert PRESETS["stylegan2-256"].num_ws == 14 and PRESETS["stylegan2-1024"].num_ws == 18
    assert [PRESETS["stylegan2-1024"].channels(r) for r in (4, 64, 1024)] == [512, 512, 32]
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Arch(resolution=100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_projection_lowers_the_loss(dtype):
    from render.latent.project import project

    G = tiny()
    target = G.synthesis(G.sample(1, seed=9)).clamp(-1, 1)  # [1, 3, 32, 32], reachable by construction
    result = project(G, target, steps=12, every=4, lr=0.05, initial_noise=0.0, reg_weight=0.0, mse_weight=1.0,
                     loss="alex", seed=0, dtype=dtype)
    assert G.compute_copy(dtype).weight_dtype() == dtype and G.weight_dtype() == torch.float32
    assert result.latents.shape == (4, G.layout.dim)
    assert result.losses[-3:].mean() < 0.8 * result.losses[:2].mean()
