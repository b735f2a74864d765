"""StyleGAN3 T and R: parity with NVIDIA's code (numbers in tests/fixtures/stylegan3, made by
tests/fixtures/make_stylegan3_fixtures.py), checkpoint mapping, the generator interface, and projection."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from render.kernels.backend import Backend
from render.kernels.stylegan3 import filtered_lrelu, filtered_lrelu_ref, lowpass_filter
from render.models.stylegan3 import ARCHS, StyleGAN3, StyleGAN3Arch, from_nvidia, layer_specs, nvidia_key

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan3"
TOL = 1e-4


def _fixture(cfg: str) -> dict:
    return torch.load(FIXTURES / f"{cfg}.pt", weights_only=True)


@pytest.fixture(scope="module", params=["t", "r"])
def nvidia(request):
    fx = _fixture(request.param)
    return fx, from_nvidia(fx["init_kwargs"], fx["state_dict"])


def test_mapping_and_truncation_match_nvidia(nvidia):
    fx, G = nvidia
    plain = G.mapping(fx["z"])  # [2, num_ws * w_dim]
    truncated = G.mapping(fx["z"], truncation_psi=fx["truncation_psi"])
    assert plain.shape == (2, G.num_ws * G.w_dim)
    assert (plain - fx["ws_plain"].flatten(1)).abs().max() < 1e-6
    assert (truncated - fx["ws"].flatten(1)).abs().max() < 1e-6
    assert (truncated - plain).abs().max() > 1e-2  # truncation did something


@pytest.mark.parametrize("backend", [Backend.EAGER, Backend.REFERENCE], ids=["fast", "reference"])
def test_synthesis_matches_nvidia(nvidia, backend):
    fx, G = nvidia
    G.backend = backend
    try:
        img = G.synthesis(fx["ws"].flatten(1))  # [2, 3, 32, 32]
    finally:
        G.backend = None  # the module-scoped fixture's generator goes back as it came
    assert img.shape == fx["img"].shape
    assert (img - fx["img"]).abs().max() < TOL
    assert fx["img"].abs().max() > 0.1  # the fixture is not a blank image


def test_designed_filters_match_nvidia(nvidia):
    fx, G = nvidia
    fresh = StyleGAN3(G.arch)  # filters designed by us, not loaded
    radial = 0
    for layer, spec in zip(fresh.layers, layer_specs(G.arch)):
        for kind in ("up_filter", "down_filter"):
            key = f"synthesis.{spec.name}.{kind}"
            ours = getattr(layer, kind)
            assert (ours is None) == (key not in fx["state_dict"])
            if ours is not None:
                assert ours.shape == fx["state_dict"][key].shape
                assert (ours - fx["state_dict"][key]).abs().max() < 1e-6
                radial += ours.ndim == 2
    assert (radial > 0) == G.arch.use_radial_filters


def test_from_nvidia_refuses_mismatched_checkpoints():
    fx = _fixture("t")
    state = dict(fx["state_dict"])
    key = next(k for k in state if k.endswith("affine.weight") and k.startswith("synthesis.L"))
    with pytest.raises(ValueError, match="missing tensor"):
        from_nvidia(fx["init_kwargs"], {k: v for k, v in state.items() if k != key})
    with pytest.raises(ValueError, match="shape"):
        from_nvidia(fx["init_kwargs"], {**state, key: state[key][:, :-1]})
    with pytest.raises(ValueError, match="unexpected"):
        from_nvidia(fx["init_kwargs"], {**state, "synthesis.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="class-conditional"):
        from_nvidia({**fx["init_kwargs"], "c_dim": 10}, state)
    with pytest.raises(ValueError, match="unsupported constructor argument 'foo'"):
        from_nvidia({**fx["init_kwargs"], "foo": 1}, state)


def test_nvidia_names():
    arch = ARCHS["stylegan3-t-256"]
    assert nvidia_key("mapping_net.fcs.1.weight", arch) == "mapping.fc1.weight"
    assert nvidia_key("mapping_net.w_avg", arch) == "mapping.w_avg"
    assert nvidia_key("input.affine.bias", arch) == "synthesis.input.affine.bias"
    assert nvidia_key("layers.0.weight", arch) == "synthesis.L0_36_512.weight"
    assert nvidia_key("layers.14.bias", arch) == "synthesis.L14_256_3.bias"
    assert arch.num_ws == 16


@pytest.mark.parametrize("up,radial", [(2, False), (4, False), (2, True)])
def test_fast_filtered_lrelu_matches_reference_with_gradients(up, radial):
    gen = torch.Generator().manual_seed(up + radial)
    x = torch.randn(2, 3, 14, 14, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=gen)
    fu = lowpass_filter(6 * up, 4.0, 3.0, 16.0 * up).double()
    fd = lowpass_filter(12, 4.0, 3.0, 16.0 * up, radial=radial).double()
    args = (fu, fd, b, up, 2, (7 * up, 3 * up - 1, 7 * up, 3 * up - 1))
    y_ref = filtered_lrelu_ref(x, *args, gain=math.sqrt(2), slope=0.2, clamp=1.0)
    y = filtered_lrelu(x, *args, gain=math.sqrt(2), slope=0.2, clamp=1.0)
    assert y.shape == y_ref.shape and (y - y_ref).abs().max() < 1e-12
    dy = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy)
    (g,) = torch.autograd.grad(y, x, dy)
    assert (g - g_ref).abs().max() < 1e-12 and g.abs().max() > 0


def _tiny(radial: bool = False) -> StyleGAN3:
    torch.manual_seed(0)
    arch = StyleGAN3Arch(resolution=16, z_dim=8, w_dim=8, channel_base=128, channel_max=8, num_layers=3,
                         margin_size=4, conv_kernel=1 if radial else 3, use_radial_filters=radial)
    return StyleGAN3(arch, name="tiny")


def test_interface():
    G = _tiny()
    assert G.layout.names == tuple(f"w{i}" for i in range(5)) and G.layout.dim == 40
    assert not any(p.requires_grad for p in G.parameters())
    w_avg = G.mapping_net.w_avg
    w_avg.copy_(torch.randn(8))
    mean = G.mean_latent()  # [1, 40]
    assert mean.shape == (1, 40) and torch.equal(mean.view(5, 8), w_avg.expand(5, 8))
    v = torch.randn(3, 8)
    assert torch.equal(G.expand(v).view(3, 5, 8), v[:, None].expand(3, 5, 8))
    assert torch.equal(G.mapping(torch.randn(2, 8), truncation_psi=0.0), mean.expand(2, 40))
    img = G.synthesis(G.sample(2, seed=1))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    assert torch.equal(img, G.synthesis(G.sample(2, seed=1)))  # deterministic: no noise
    assert G.regularizer(mean).abs().max() < 1e-6 and G.regularizer(G.sample(1, seed=2)).item() > 0
    assert G.describe()["architecture"] == "StyleGAN3-T"


@pytest.mark.parametrize("radial", [False, True], ids=["T", "R"])
def test_adam_steps_on_mse_lower_the_loss(radial):
    G = _tiny(radial)
    with torch.no_grad():
        target = G.synthesis(G.sample(1, seed=5))
    latent = G.mean_latent().clone().requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=0.05)
    losses = []
    for _ in range(5):
        loss = (G.synthesis(latent) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_project_lowers_the_loss(dtype):
    from render.latent.project import project

    G = _tiny()
    with torch.no_grad():
        target = G.synthesis(G.sample(1, seed=7))
    result = project(G, target, steps=4, every=2, lr=0.05, lr_rampup=0.0, initial_noise=0.0, loss="alex",
                     mse_weight=1.0, dtype=dtype)
    assert G.compute_copy(dtype).weight_dtype() == dtype and G.weight_dtype() == torch.float32
    assert result.latents.shape == (3, G.layout.dim)
    assert result.losses[-1] < result.losses[0]
