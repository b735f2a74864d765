"""render/kernels/onednn.py: packed oneDNN convolutions equal F.conv2d / F.conv_transpose2d, forward and input gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from render.kernels import onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN packing ops")

# (in, out, kernel, stride, padding, side): VGG/AlexNet "same" convs, AlexNet's conv1, a strided even kernel,
# StyleGAN3's "full" conv (padding k - 1), a valid one, a 1x1
CONVS = [(8, 16, 3, 1, 1, 12), (3, 16, 11, 4, 2, 64), (16, 8, 5, 1, 2, 9), (8, 8, 4, 2, 1, 10), (8, 8, 3, 1, 2, 10),
         (8, 4, 3, 1, 0, 9), (8, 3, 1, 1, 0, 6)]
# (in, out, kernel, stride, padding, side): the embedded DCGAN's up-convolutions
CONV_TS = [(16, 32, 4, 1, 0, 1), (32, 16, 4, 2, 1, 4), (16, 3, 4, 2, 1, 8)]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}  # relative to the output's largest value
# the dtypes the packing functions are called with directly: bf16 only where this CPU's oneDNN packs it
NO_BF16_PACKS = "oneDNN packs bf16 only on CPUs with AVX-512 or AVX-NE-CONVERT"
PACKED_DTYPES = [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    torch.bfloat16 not in onednn.packed_dtypes(), reason=NO_BF16_PACKS))]


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    return a.shape == b.shape and (a.float() - b.float()).abs().max() <= TOL[dtype] * b.float().abs().max()


@pytest.mark.parametrize("dtype", PACKED_DTYPES)
@pytest.mark.parametrize("spec", CONVS)
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_forward_and_input_gradient(spec, relu, dtype):
    i, o, k, s, p, side = spec
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(o, i, k, k, generator=gen).to(dtype), torch.randn(o, generator=gen).to(dtype)
    x = torch.randn(2, i, side, side, generator=gen).to(dtype)
    cache = onednn.PackCache()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    y_ref = F.conv2d(xs[0], w, b, stride=s, padding=p)
    y_ref = F.relu(y_ref) if relu else y_ref
    y = onednn.conv2d(xs[1], w, b, stride=s, padding=p, relu=relu, cache=cache)
    assert close(y, y_ref, dtype)
    g = torch.randn(y_ref.shape, generator=gen).to(dtype)
    (gx_ref,), (gx,) = torch.autograd.grad(y_ref, xs[0], g), torch.autograd.grad(y, xs[1], g)
    assert close(gx, gx_ref, dtype)


@pytest.mark.parametrize("dtype", PACKED_DTYPES)
@pytest.mark.parametrize("spec", CONV_TS)
def test_conv_transpose2d_forward_and_input_gradient(spec, dtype):
    i, o, k, s, p, side = spec
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(i, o, k, k, generator=gen).to(dtype)
    x = torch.randn(1, i, side, side, generator=gen).to(dtype)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    y_ref = F.conv_transpose2d(xs[0], w, stride=s, padding=p)
    y = onednn.conv_transpose2d(xs[1], w, stride=s, padding=p, cache=onednn.PackCache())
    assert close(y, y_ref, dtype)
    g = torch.randn(y_ref.shape, generator=gen).to(dtype)
    (gx_ref,), (gx,) = torch.autograd.grad(y_ref, xs[0], g), torch.autograd.grad(y, xs[1], g)
    assert close(gx, gx_ref, dtype)


def test_a_changed_weight_is_packed_again():
    w = torch.randn(4, 3, 3, 3)
    x = torch.randn(1, 3, 6, 6)
    cache = onednn.PackCache()
    onednn.conv2d(x, w, None, stride=1, padding=1, relu=False, cache=cache)
    with torch.no_grad():
        w.mul_(2)  # in place: same storage, new version
    y = onednn.conv2d(x, w, None, stride=1, padding=1, relu=False, cache=cache)
    assert close(y, F.conv2d(x, w, padding=1), torch.float32)
    assert onednn.usable(x, w) and not onednn.usable(x, w.clone().requires_grad_(True))


def test_many_same_shape_weights_and_shapes_through_a_small_cache_keep_their_own_packs():
    """Several weights of one shape and alternating input sizes force the cache to clear over and over (as LPIPS-VGG's
    conv4/5 layers do when inputs of several sizes come through): every gradient must still be its own conv's."""
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(16, 16, 3, 3, generator=gen) for _ in range(3)]
    cache = onednn.PackCache(max_items=3)
    for side in (8, 6, 8, 5, 8, 6):
        for w in weights:
            x = torch.randn(1, 16, side, side, generator=gen)
            xs = [x.clone().requires_grad_(True) for _ in range(2)]
            g = torch.randn(1, 16, side, side, generator=gen)
            (ref,) = torch.autograd.grad(F.relu(F.conv2d(xs[0], w, padding=1)), xs[0], g)
            (got,) = torch.autograd.grad(onednn.conv2d(xs[1], w, None, stride=1, padding=1, relu=True, cache=cache),
                                         xs[1], g)
            assert close(got, ref, torch.float32)


def test_strided_conv_on_a_non_square_input():
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(8, 3, 11, 11, generator=gen)
    xs = [torch.randn(1, 3, 64, 66, generator=gen).requires_grad_(True)]
    xs.append(xs[0].detach().clone().requires_grad_(True))
    y_ref = F.conv2d(xs[0], w, stride=4, padding=2)
    y = onednn.conv2d(xs[1], w, None, stride=4, padding=2, relu=False, cache=onednn.PackCache())
    assert close(y, y_ref, torch.float32)
    g = torch.randn(y_ref.shape, generator=gen)
    (gx_ref,), (gx,) = torch.autograd.grad(y_ref, xs[0], g), torch.autograd.grad(y, xs[1], g)
    assert close(gx, gx_ref, torch.float32)


@pytest.mark.parametrize("dtype", PACKED_DTYPES)
def test_grouped_and_once_only_convolutions(dtype):
    """conv_forward with groups (StyleGAN2's depthwise blur), conv_unpacked and conv_transpose_unpacked (modulated
    weights, packed per call) equal F.conv2d / F.conv_transpose2d and return channels-last maps."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 9, 9, generator=gen).to(dtype)
    depthwise = torch.randn(6, 1, 4, 4, generator=gen).to(dtype)
    y = onednn.conv_forward(x, depthwise, None, 1, 1, False, onednn.PackCache(), groups=6)
    assert close(y, F.conv2d(x, depthwise, padding=1, groups=6), dtype)
    w = torch.randn(5, 6, 3, 3, generator=gen).to(dtype)
    y = onednn.conv_unpacked(x, w, 1)
    assert close(y, F.conv2d(x, w, padding=1), dtype) and y.is_contiguous(memory_format=torch.channels_last)
    wt = torch.randn(6, 5, 3, 3, generator=gen).to(dtype)
    y = onednn.conv_transpose_unpacked(x, wt, 2)
    assert close(y, F.conv_transpose2d(x, wt, stride=2), dtype) and y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("relu", [False, True])
def test_custom_ops_match_plain_convolutions_and_count_their_flops(relu):
    """uncanny::conv2d / conv2d_input_grad (what LPIPS runs, packed or not) equal [relu](F.conv2d) and autograd's
    input gradient, and torch.utils.flop_counter counts them as it counts F.conv2d and its backward; a float32 input
    to a bf16 weight is cast."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g) for s in ((1, 16, 12, 10), (8, 16, 3, 3), (8,)))
    for packed in (True, False):
        with FlopCounterMode(display=False) as ours:
            y = torch.ops.uncanny.conv2d(x, w, b, 1, 1, relu, packed)
            gx = torch.ops.uncanny.conv2d_input_grad(y, w, 1, 1, 12, 10, packed)
        xr = x.clone().requires_grad_(True)
        with FlopCounterMode(display=False) as plain:
            yr = torch.nn.functional.conv2d(xr, w, b, padding=1)
            yr = torch.relu(yr) if relu else yr
            (gr,) = torch.autograd.grad(yr, xr, yr)
        torch.testing.assert_close(y, yr.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx, gr, rtol=1e-4, atol=1e-4)
        assert ours.get_total_flops() == plain.get_total_flops() > 0
        y16 = torch.ops.uncanny.conv2d(x, w.bfloat16(), b.bfloat16(), 1, 1, relu, packed)
        assert y16.dtype == torch.bfloat16 and close(y16, yr.detach(), torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", CONV_TS)
def test_transposed_custom_op_and_its_adjoint_match_plain_convolutions(spec, dtype):
    """uncanny::conv_transpose2d (the embedded DCGAN's layers in its compiled step) equals F.conv_transpose2d, and
    uncanny::conv2d with the same weight is its input gradient; the flop counter counts the op as F.conv_transpose2d."""
    from torch.utils.flop_counter import FlopCounterMode

    i, o, k, s, p, side = spec
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(i, o, k, k, generator=gen).to(dtype)
    xr = torch.randn(1, i, side, side, generator=gen).to(dtype).requires_grad_(True)
    with FlopCounterMode(display=False) as plain:
        yr = F.conv_transpose2d(xr, w, stride=s, padding=p)
    g = torch.randn(yr.shape, generator=gen).to(dtype)
    (gr,) = torch.autograd.grad(yr, xr, g)
    for packed in (True, False):
        with FlopCounterMode(display=False) as ours:
            y = torch.ops.uncanny.conv_transpose2d(xr.detach(), w, s, p, packed)
        gx = torch.ops.uncanny.conv2d(g.float(), w, None, s, p, False, packed)
        assert close(y, yr, dtype) and close(gx, gr, dtype) and gx.dtype == dtype
        assert ours.get_total_flops() == plain.get_total_flops() > 0


def test_custom_ops_never_reuse_the_pack_of_a_freed_weight():
    """A weight freed and another of the same shape made at the same address (version 0 both) gets its own pack: the
    custom ops' packs live and die with their weight. The memory is a bytearray, rewritten between the two."""
    x, buf = torch.randn(1, 16, 8, 8), bytearray(8 * 16 * 3 * 3 * 4)
    for seed in range(3):
        np.frombuffer(buf, np.float32)[:] = np.random.default_rng(seed).standard_normal(8 * 16 * 3 * 3)
        w = torch.frombuffer(buf, dtype=torch.float32).view(8, 16, 3, 3)
        y = torch.ops.uncanny.conv2d(x, w, torch.zeros(8), 1, 1, True, True)
        torch.testing.assert_close(y, torch.relu(torch.nn.functional.conv2d(x, w, padding=1)), rtol=1e-5, atol=1e-5)
        del w, y


def test_custom_ops_fall_back_to_plain_convolutions_when_packing_fails(monkeypatch, caplog):
    """A torch build whose oneDNN refuses to pack: the custom ops still return the convolution, one warning says why,
    and every caller takes the plain path from then on."""
    def refuse(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(onednn, "_PACKING_WORKS", True)  # restored after the test
    monkeypatch.setattr(onednn, "_pack_conv", refuse)
    g = torch.Generator().manual_seed(8)
    x, w, b = torch.randn(1, 4, 9, 9, generator=g), torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, generator=g)
    with caplog.at_level("WARNING", logger="render.kernels.onednn"):
        y = torch.ops.uncanny.conv2d(x, w, b, 1, 1, True, True)
    torch.testing.assert_close(y, F.relu(F.conv2d(x, w, b, padding=1)), rtol=1e-5, atol=1e-5)
    assert "packing failed" in caplog.text and not onednn.usable(x, w)


def test_bf16_runs_plain_where_onednn_cannot_pack_it(monkeypatch):
    """On a CPU whose oneDNN refuses bf16 packs (AVX2 only) the custom ops run bf16 convolutions plain, and float32
    keeps its packs: no packing is tried, so no failure turns packing off for every dtype."""
    monkeypatch.setattr(onednn, "_PACKS_BF16", False)
    tried = []
    pack = onednn._pack_conv
    monkeypatch.setattr(onednn, "_pack_conv",
                        lambda cache, w, *a, **k: tried.append(w.dtype) or pack(cache, w, *a, **k))
    g = torch.Generator().manual_seed(9)
    x, w, b = torch.randn(1, 4, 9, 9, generator=g), torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, generator=g)
    y16 = torch.ops.uncanny.conv2d(x, w.bfloat16(), b.bfloat16(), 1, 1, True, True)
    assert y16.dtype == torch.bfloat16 and close(y16, F.relu(F.conv2d(x, w, b, padding=1)), torch.bfloat16)
    assert not onednn.usable(x.bfloat16(), w.bfloat16()) and onednn.usable(x, w) and onednn.available()
    torch.ops.uncanny.conv2d(x, w, b, 1, 1, True, True)
    assert tried == [torch.float32]
